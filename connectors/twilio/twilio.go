// Package twilio connects Twilio Programmable Messaging (SMS and WhatsApp) to
// c360: the inbound message webhook, the message status callback, and the
// outbound sender behind the sendMessage mutation.
//
// The webhooks only verify, parse and hand canonical events to the one
// ingest path; they answer 2xx only after ingest committed, so a delivery
// Twilio retries is either stored or refused, never lost.
package twilio

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	twclient "github.com/twilio/twilio-go/client"

	"github.com/c360dev/c360"
	"github.com/c360dev/c360/connectors/webhook"
)

// DefaultMaxBodyBytes bounds a webhook body. Twilio's form posts are a few
// kilobytes: 1600 characters of body and up to ten media URLs.
const DefaultMaxBodyBytes = 64 << 10

// emptyTwiML answers an inbound message without replying to it.
const emptyTwiML = `<?xml version="1.0" encoding="UTF-8"?><Response/>`

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

// Handler serves Twilio's webhooks for every workspace.
type Handler struct {
	Workspaces WorkspaceFinder
	Ingester   c360.Ingester
	// PublicURL is the external base URL Twilio calls (C360_PUBLIC_URL). Twilio
	// signs the URL it called, so verification rebuilds it from this base and
	// the request's path and query.
	PublicURL string
	// StatusOf maps a domain error to an HTTP status (server.StatusOf).
	StatusOf func(error) int
	Logger   *slog.Logger
	// Now is the clock; nil means time.Now.
	Now c360.Clock
	// MaxBodyBytes bounds a request body; 0 means DefaultMaxBodyBytes.
	MaxBodyBytes int64
	// Limit charges a verified request to its workspace's rate limit
	// (server.LimitWebhook); nil: no limit.
	Limit webhook.Limit
}

// Register mounts the inbound and status webhooks on m.
func (h *Handler) Register(m Mounter) {
	m.Handle("POST /webhooks/twilio/{workspace}", http.HandlerFunc(h.serveInbound))
	m.Handle("POST /webhooks/twilio/{workspace}/status", http.HandlerFunc(h.serveStatus))
}

// serveInbound records an inbound SMS or WhatsApp message and answers empty TwiML.
func (h *Handler) serveInbound(w http.ResponseWriter, r *http.Request) {
	ws, form, ok := h.verify(w, r)
	if !ok {
		return
	}
	ev, err := ParseInbound(form, h.now())
	if err == nil {
		err = checkRecut(r.URL.RawQuery, form)
	}
	if err != nil {
		h.refuse(w, r, err)
		return
	}
	if _, err := h.Ingester.Ingest(r.Context(), ws.ID, []*c360.Event{ev}); err != nil && !h.deadLettered(ws, ev, err) {
		h.refuse(w, r, err)
		return
	}
	w.Header().Set("Content-Type", "text/xml; charset=utf-8")
	w.WriteHeader(http.StatusOK)
	io.WriteString(w, emptyTwiML)
}

// serveStatus moves an outbound message's status forward.
func (h *Handler) serveStatus(w http.ResponseWriter, r *http.Request) {
	ws, form, ok := h.verify(w, r)
	if !ok {
		return
	}
	ev, err := ParseStatus(form, h.now())
	if err == nil {
		// The signature covers the URL's query before the parameters.
		err = checkRecut(r.URL.RawQuery, form)
	}
	if err != nil {
		h.refuse(w, r, err)
		return
	}
	// The message c360 recorded before sending, as the StatusCallback URL
	// (StatusCallbackURL) names it; the signature covered the query.
	if v := r.URL.Query().Get(statusMessageParam); v != "" {
		id, err := strconv.ParseInt(v, 10, 64)
		if err != nil || id <= 0 {
			http.Error(w, "the status callback URL's message parameter is not a message id", http.StatusBadRequest)
			return
		}
		ev.Message.OutboundID = id
	}
	res, err := h.Ingester.Ingest(r.Context(), ws.ID, []*c360.Event{ev})
	if err != nil && !h.deadLettered(ws, ev, err) {
		h.refuse(w, r, err)
		return
	}
	if len(res) == 1 && res[0].NoMessage {
		// Kept as an event: a message recorded with this SID later (one
		// sent before c360 named messages in the callback URL) starts from
		// this status. Twilio gets 200 so it does not retry.
		h.logger().Info("twilio status callback for an unknown message",
			"workspace", ws.Slug, "messageSid", ev.Message.ProviderID, "status", ev.Message.Status)
	}
	w.WriteHeader(http.StatusOK)
}

// verify reads and authenticates a webhook request. It answers and returns
// ok=false for an oversized body (413), an unknown workspace (404), a body
// that is not a form (400) and a missing or wrong signature or a workspace
// without a Twilio auth token (403), and a verified request over its
// workspace's rate limit (429); nothing has been written to the store then.
func (h *Handler) verify(w http.ResponseWriter, r *http.Request) (*c360.Workspace, url.Values, bool) {
	limit := h.MaxBodyBytes
	if limit <= 0 {
		limit = DefaultMaxBodyBytes
	}
	body, status, err := webhook.ReadBody(w, r, limit)
	if err != nil {
		http.Error(w, err.Error(), status)
		return nil, nil, false
	}
	slug := r.PathValue("workspace")
	ws, err := h.Workspaces.FindWorkspaceBySlug(r.Context(), slug)
	if err != nil {
		h.refuse(w, r, err)
		return nil, nil, false
	}
	form, err := url.ParseQuery(string(body))
	if err != nil {
		http.Error(w, "the body is not a valid form", http.StatusBadRequest)
		return nil, nil, false
	}
	signature := r.Header.Get("X-Twilio-Signature")
	if signature == "" {
		http.Error(w, "missing X-Twilio-Signature", http.StatusForbidden)
		return nil, nil, false
	}
	if ws.TwilioAuthToken == "" {
		h.logger().Warn("twilio webhook for a workspace without a Twilio auth token; set one with c360 workspace update --twilio-auth-token",
			"workspace", ws.Slug)
		// Say so: "invalid signature" would send whoever sets up Twilio's
		// webhook looking for a wrong token instead of a missing one.
		http.Error(w, "this workspace has no Twilio auth token configured, so no signature can be verified", http.StatusForbidden)
		return nil, nil, false
	}
	fullURL := strings.TrimRight(h.PublicURL, "/") + r.URL.RequestURI()
	ws, valid, err := webhook.Verify(r.Context(), h.Workspaces.RereadWorkspace, ws, func(w *c360.Workspace) bool {
		return w.TwilioAuthToken != "" && ValidSignature(w.TwilioAuthToken, fullURL, form, signature)
	})
	if err != nil {
		if r.Context().Err() == nil { // else the client left: nobody to answer
			h.refuse(w, r, err)
		}
		return nil, nil, false
	}
	if !valid {
		h.logger().Info("twilio webhook with an invalid signature", "workspace", ws.Slug, "path", r.URL.Path)
		http.Error(w, "invalid X-Twilio-Signature", http.StatusForbidden)
		return nil, nil, false
	}
	if !h.Limit.Allow(w, r, ws.ID) {
		return nil, nil, false
	}
	return ws, form, true
}

// ValidSignature reports whether signature is Twilio's signature of a POST
// to fullURL with the form's parameters, signed with authToken. It uses
// twilio-go's RequestValidator, which takes one value per parameter
// (map[string]string) and has no API for a parameter sent more than once.
// Twilio signs every value of such a parameter: the sorted names, each
// followed by its value, once per value, the values sorted (twilio-python
// and twilio-node also drop repeated values). twilio-go's Validate appends
// name+value for each sorted name, so a name's values joined with the
// name ("v1" + name + "v2") give it exactly that string: only the joining
// is ours, the signing, comparison and port handling stay twilio-go's.
func ValidSignature(authToken, fullURL string, form url.Values, signature string) bool {
	v := twclient.NewRequestValidator(authToken)
	params := make(map[string]string, len(form))
	repeated := false
	for k, vs := range form {
		if len(vs) > 0 {
			params[k] = vs[0]
		}
		repeated = repeated || len(vs) > 1
	}
	if !repeated {
		return v.Validate(fullURL, params, signature)
	}
	// Every value counts: a signature of the first values alone (what
	// twilio-go's ValidateBody checks) would let values be added to a
	// signed request. Sorted, without and with repeats of one value: the
	// SDKs drop repeats, Twilio's documentation does not say.
	// When no value repeats, the two strings are one: it is signed once.
	for _, distinct := range []bool{true, false} {
		repeats := false
		for k, vs := range form {
			if len(vs) > 1 {
				joined := sortedValues(vs, distinct)
				params[k] = strings.Join(joined, k)
				repeats = repeats || len(joined) < len(vs)
			}
		}
		if v.Validate(fullURL, params, signature) {
			return true
		}
		if distinct && !repeats {
			return false
		}
	}
	return false
}

// sortedValues returns a copy of vs, sorted, without repeated values when
// distinct.
func sortedValues(vs []string, distinct bool) []string {
	out := slices.Sorted(slices.Values(vs))
	if distinct {
		out = slices.Compact(out)
	}
	return out
}

// deadLettered reports whether ingest kept the event as a dead letter. It
// is then durably stored for an admin to replay, and Twilio is answered 200:
// its retries could only fail the same way.
func (h *Handler) deadLettered(ws *c360.Workspace, ev *c360.Event, err error) bool {
	var kept *c360.DeadLetteredError
	if !errors.As(err, &kept) {
		return false
	}
	h.logger().Warn("twilio event kept as a dead letter", "workspace", ws.Slug, "messageSid", ev.DedupeKey,
		"deadLetters", kept.IDs, "error", err)
	return true
}

// refuse answers a request that could not be stored, with the status of the
// error's code. Unavailability gets Retry-After, so Twilio tries again;
// internal errors are logged and answered without detail.
func (h *Handler) refuse(w http.ResponseWriter, r *http.Request, err error) {
	status := http.StatusInternalServerError
	if h.StatusOf != nil {
		status = h.StatusOf(err)
	}
	slug := r.PathValue("workspace")
	switch c360.ErrorCode(err) {
	case c360.EINTERNAL:
		h.logger().Error("twilio webhook", "workspace", slug, "path", r.URL.Path, "error", err)
	case c360.EUNAVAILABLE:
		h.logger().Warn("twilio webhook: store unavailable", "workspace", slug, "error", err)
		w.Header().Set("Retry-After", "1")
	case c360.EINVALID:
		h.logger().Info("twilio webhook refused", "workspace", slug, "path", r.URL.Path, "reason", webhook.LogReason(err))
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
