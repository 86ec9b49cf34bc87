// Package whatsapp connects Meta's WhatsApp Cloud API webhooks to c360: the
// verify-token handshake, and signed notifications of inbound messages,
// message statuses and number changes.
//
// The webhook only verifies, parses and hands canonical events to the one
// ingest path, and answers 200 only after ingest committed.
package whatsapp

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/c360dev/c360"
	"github.com/c360dev/c360/connectors/webhook"
)

// DefaultMaxBodyBytes bounds a notification body. Meta batches updates, so
// the bound is looser than for Twilio's one-message forms.
const DefaultMaxBodyBytes = 1 << 20

// WorkspaceFinder finds the workspace a webhook is addressed to.
type WorkspaceFinder interface {
	FindWorkspaceBySlug(ctx context.Context, slug string) (*c360.Workspace, error)
	// RereadWorkspace returns the workspace's row as it is now, read past
	// the cache (at most one forced read a second per workspace, waiting
	// for the next: postgres.DB.RereadWorkspace).
	RereadWorkspace(ctx context.Context, seen *c360.Workspace) (*c360.Workspace, error)
}

// Mounter is what routes are mounted on: *server.Server or *http.ServeMux.
type Mounter interface {
	Handle(pattern string, h http.Handler)
}

// Handler serves the WhatsApp Cloud API webhook for every workspace.
type Handler struct {
	Workspaces WorkspaceFinder
	Ingester   c360.Ingester
	// StatusOf maps a domain error to an HTTP status (server.StatusOf).
	StatusOf func(error) int
	Logger   *slog.Logger
	// Now is the clock; nil means time.Now.
	Now c360.Clock
	// MaxBodyBytes bounds a request body; 0 means DefaultMaxBodyBytes.
	MaxBodyBytes int64
	// Limit charges a verified request (handshake or notification) to its
	// workspace's rate limit (server.LimitWebhook); nil: no limit.
	Limit webhook.Limit
}

// Register mounts the webhook's handshake (GET) and notifications (POST) on m.
func (h *Handler) Register(m Mounter) {
	m.Handle("GET /webhooks/whatsapp/{workspace}", http.HandlerFunc(h.serveHandshake))
	m.Handle("POST /webhooks/whatsapp/{workspace}", http.HandlerFunc(h.serveNotification))
}

// serveHandshake answers Meta's subscription check: hub.mode=subscribe with
// the workspace's verify token is answered with hub.challenge.
func (h *Handler) serveHandshake(w http.ResponseWriter, r *http.Request) {
	ws, err := h.Workspaces.FindWorkspaceBySlug(r.Context(), r.PathValue("workspace"))
	if err != nil {
		h.refuse(w, r, err)
		return
	}
	q := r.URL.Query()
	token := q.Get("hub.verify_token")
	if q.Get("hub.mode") != "subscribe" || ws.WhatsAppVerifyToken == "" ||
		subtle.ConstantTimeCompare([]byte(token), []byte(ws.WhatsAppVerifyToken)) != 1 {
		h.logger().Info("whatsapp handshake refused", "workspace", ws.Slug)
		http.Error(w, "verification failed", http.StatusForbidden)
		return
	}
	if !h.Limit.Allow(w, r, ws.ID) {
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(http.StatusOK)
	io.WriteString(w, q.Get("hub.challenge"))
}

// serveNotification verifies X-Hub-Signature-256 over the raw body, parses
// the notification and ingests its events one by one.
//
// Each event is its own transaction. An event that fails inside ingest,
// and one ingest refuses as invalid (a number that is not a phone number,
// a message naming no sender, an item ParsePayload could not read), is
// kept as a dead letter for an admin to replay, and the others go on:
// Meta would retry it for days, in vain, and shows a refusal to nobody,
// while a 200 must not lose what it acknowledges. Only an invalid event
// that cannot be kept (its wamid cannot key a dead letter) is logged and
// skipped. Any other error answers non-2xx so Meta retries, and the events
// already stored are then recognized by their wamid and stored once.
func (h *Handler) serveNotification(w http.ResponseWriter, r *http.Request) {
	limit := h.MaxBodyBytes
	if limit <= 0 {
		limit = DefaultMaxBodyBytes
	}
	body, status, err := webhook.ReadBody(w, r, limit)
	if err != nil {
		http.Error(w, err.Error(), status)
		return
	}
	ws, err := h.Workspaces.FindWorkspaceBySlug(r.Context(), r.PathValue("workspace"))
	if err != nil {
		h.refuse(w, r, err)
		return
	}
	sig := r.Header.Get("X-Hub-Signature-256")
	if sig == "" {
		http.Error(w, "missing X-Hub-Signature-256", http.StatusForbidden)
		return
	}
	if ws.WhatsAppAppSecret == "" {
		h.logger().Warn("whatsapp webhook for a workspace without an app secret; set one with c360 workspace update --whatsapp-app-secret",
			"workspace", ws.Slug)
		// Say so: "invalid signature" would send whoever sets up Meta's
		// webhook looking for a wrong secret instead of a missing one.
		http.Error(w, "this workspace has no WhatsApp app secret configured, so no signature can be verified", http.StatusForbidden)
		return
	}
	ws, valid, err := webhook.Verify(r.Context(), h.Workspaces.RereadWorkspace, ws, func(w *c360.Workspace) bool {
		return w.WhatsAppAppSecret != "" && ValidSignature(w.WhatsAppAppSecret, body, sig)
	})
	if err != nil {
		if r.Context().Err() == nil { // else the client left: nobody to answer
			h.refuse(w, r, err)
		}
		return
	}
	if !valid {
		h.logger().Info("whatsapp webhook with an invalid signature", "workspace", ws.Slug)
		http.Error(w, "invalid X-Hub-Signature-256", http.StatusForbidden)
		return
	}
	if !h.Limit.Allow(w, r, ws.ID) {
		return
	}
	events, skipped, err := ParsePayload(body, h.now())
	if err != nil {
		h.refuse(w, r, err)
		return
	}
	// An item with no id to key a dead letter by is acknowledged with the
	// rest: Meta's retries could not make it readable. It is logged, by
	// its place and a reason that holds no value of it.
	for _, s := range skipped {
		h.logger().Warn("whatsapp notification item skipped", "workspace", ws.Slug, "item", s.Item, "reason", s.Reason)
	}
	ctx := c360.WithInvalidAsDeadLetters(r.Context())
	for _, ev := range events {
		_, err := h.Ingester.Ingest(ctx, ws.ID, []*c360.Event{ev})
		var kept *c360.DeadLetteredError
		if errors.As(err, &kept) {
			// Durably kept for an admin to replay; Meta's retries could only fail the same way.
			if c360.ErrorCode(err) == c360.EINVALID { // the reason names the value: masked, as for any refusal
				h.logger().Warn("whatsapp event refused as invalid, kept as a dead letter", "workspace", ws.Slug, "wamid", ev.DedupeKey,
					"deadLetters", kept.IDs, "reason", webhook.LogReason(err))
				continue
			}
			h.logger().Warn("whatsapp event kept as a dead letter", "workspace", ws.Slug, "wamid", ev.DedupeKey,
				"deadLetters", kept.IDs, "error", err)
			continue
		}
		if c360.ErrorCode(err) == c360.EINVALID {
			h.logger().Info("whatsapp event skipped", "workspace", ws.Slug, "wamid", ev.DedupeKey, "reason", webhook.LogReason(err))
			continue
		}
		if err != nil {
			h.refuse(w, r, err)
			return
		}
	}
	w.WriteHeader(http.StatusOK)
}

// ValidSignature reports whether header is "sha256=" followed by the hex
// HMAC-SHA256 of body under the app secret, compared in constant time.
func ValidSignature(appSecret string, body []byte, header string) bool {
	hexSig, ok := strings.CutPrefix(strings.TrimSpace(header), "sha256=")
	if !ok {
		return false
	}
	got, err := hex.DecodeString(hexSig)
	if err != nil {
		return false
	}
	mac := hmac.New(sha256.New, []byte(appSecret))
	mac.Write(body)
	return hmac.Equal(got, mac.Sum(nil))
}

// refuse answers a request that could not be stored, with the status of the
// error's code. Unavailability gets Retry-After; internal errors are logged
// and answered without detail.
func (h *Handler) refuse(w http.ResponseWriter, r *http.Request, err error) {
	status := http.StatusInternalServerError
	if h.StatusOf != nil {
		status = h.StatusOf(err)
	}
	slug := r.PathValue("workspace")
	switch c360.ErrorCode(err) {
	case c360.EINTERNAL:
		h.logger().Error("whatsapp webhook", "workspace", slug, "error", err)
	case c360.EUNAVAILABLE:
		h.logger().Warn("whatsapp webhook: store unavailable", "workspace", slug, "error", err)
		w.Header().Set("Retry-After", "1")
	case c360.EINVALID:
		h.logger().Info("whatsapp webhook refused", "workspace", slug, "reason", webhook.LogReason(err))
	}
	http.Error(w, c360.ErrorMessage(err), status)
}

func (h *Handler) now() time.Time {
	if h.Now != nil {
		return h.Now()
	}
	return time.Now().UTC()
}

func (h *Handler) logger() *slog.Logger {
	if h.Logger != nil {
		return h.Logger
	}
	return slog.Default()
}
