// Package chatbot is c360's chatbot webhook: a bot posts the turns of a
// session, signed with the workspace's webhook secret, and they become chat
// messages on the person's profile, with intents and observations as
// events. The handler only verifies, parses and hands canonical events to
// the one ingest path, and answers only after commit.
package chatbot

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/c360dev/c360"
	"github.com/c360dev/c360/connectors/webhook"
)

// DefaultMaxBodyBytes bounds a webhook body; larger ones get 413.
const DefaultMaxBodyBytes = 256 << 10

// Store is what the webhook needs from the store.
type Store interface {
	FindWorkspaceBySlug(ctx context.Context, slug string) (*c360.Workspace, error)
	// RereadWorkspace returns the workspace's row as it is now, read past
	// the cache (at most one forced read a second per workspace, waiting
	// for the next: postgres.DB.RereadWorkspace).
	RereadWorkspace(ctx context.Context, seen *c360.Workspace) (*c360.Workspace, error)
	Ingest(ctx context.Context, workspaceID int64, events []*c360.Event) ([]c360.IngestResult, error)
}

// Config wires the handler.
type Config struct {
	Store Store
	// Now is the clock signatures are checked against; tests fix it.
	Now c360.Clock
	// StatusOf maps a domain error to its HTTP status (server.StatusOf, the
	// one table); nil answers 500 for every error.
	StatusOf func(error) int
	Logger   *slog.Logger
	// Tolerance is how far a signature's timestamp may be from Now; 0
	// means DefaultTolerance.
	Tolerance time.Duration
	// MaxBodyBytes bounds a body; 0 means DefaultMaxBodyBytes.
	MaxBodyBytes int64
	// Limit charges a verified request to its workspace's rate limit
	// (server.LimitWebhook); nil: no limit.
	Limit webhook.Limit
}

// Handler serves POST /webhooks/chatbot/{workspace}.
type Handler struct {
	cfg Config
}

// Mounter is where the handler's route is mounted (server.Server).
type Mounter interface {
	Handle(pattern string, h http.Handler)
}

// New returns a handler for cfg.
func New(cfg Config) *Handler {
	if cfg.Now == nil {
		panic("chatbot: Config.Now is nil")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.StatusOf == nil {
		cfg.StatusOf = func(error) int { return http.StatusInternalServerError }
	}
	if cfg.Tolerance == 0 {
		cfg.Tolerance = DefaultTolerance
	}
	if cfg.MaxBodyBytes == 0 {
		cfg.MaxBodyBytes = DefaultMaxBodyBytes
	}
	return &Handler{cfg: cfg}
}

// Register mounts the webhook on m.
func (h *Handler) Register(m Mounter) {
	m.Handle("POST /webhooks/chatbot/{workspace}", h)
}

// ServeHTTP answers 404 for an unknown workspace, 413 for a body over the
// limit, 408 for a body that did not arrive within the server's read
// deadline (server.Config.BodyReadTimeout), 401 for a missing, malformed, expired or wrong signature (one made
// with the workspace's current secret, or with its previous one during a
// rotation's grace period, passes; a signature the cached workspace row
// refuses is checked again against the row read anew, which another
// process may have rotated, at most once a second per workspace), 429 for a
// signed request over the workspace's rate limit, 400 for
// a payload that is not valid, 409 for a sessionId another person's
// events were stored under, and 200 {"accepted": n} once every event is
// committed. Nothing is written unless the whole payload is accepted; events
// that fail inside ingest are kept as dead letters and answered 200 with
// {"deadLettered": n}.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	ws, err := h.cfg.Store.FindWorkspaceBySlug(ctx, r.PathValue("workspace"))
	if err != nil {
		h.fail(w, err)
		return
	}
	body, status, err := webhook.ReadBody(w, r, h.cfg.MaxBodyBytes)
	switch {
	case status == http.StatusRequestEntityTooLarge:
		h.tooLarge(w)
		return
	case status == http.StatusRequestTimeout:
		// The body missed the server's read deadline: the bot may send it
		// again, whole; the connection is closed after this answer.
		writeJSON(w, http.StatusRequestTimeout, errorBody{Code: c360.EINVALID, Message: err.Error()})
		return
	case err != nil:
		h.fail(w, c360.Errorf(c360.EINVALID, "unreadable body"))
		return
	}
	now := h.cfg.Now()
	sig := r.Header.Get(SignatureHeader)
	// Only a signature that does not match is checked again with the row
	// read anew; a malformed or stale one is refused at once.
	ws, _, rerr := webhook.Verify(ctx, h.cfg.Store.RereadWorkspace, ws, func(w *c360.Workspace) bool {
		err = VerifyWorkspaceSignature(w, sig, body, now, h.cfg.Tolerance)
		return err != errNoMatch
	})
	if rerr != nil {
		if ctx.Err() == nil { // else the client left: nobody to answer
			h.fail(w, rerr)
		}
		return
	}
	if err != nil {
		h.fail(w, err)
		return
	}
	if !h.cfg.Limit.Allow(w, r, ws.ID) {
		return
	}
	p, err := ParsePayload(body)
	if err != nil {
		h.fail(w, err)
		return
	}
	events, labels := p.Events(now)
	res, err := h.cfg.Store.Ingest(ctx, ws.ID, events)
	var kept *c360.DeadLetteredError
	if errors.As(err, &kept) {
		// Durably kept for an admin to replay: the bot's retries could only
		// fail the same way, so the request is acknowledged and says so.
		h.cfg.Logger.Warn("chatbot events kept as dead letters", "workspace", ws.Slug, "deadLetters", kept.IDs, "error", err)
		writeJSON(w, http.StatusOK, map[string]int{"accepted": len(events), "duplicates": 0, "deadLettered": len(kept.IDs)})
		return
	}
	var reused *c360.KeyReusedError
	if errors.As(err, &reused) {
		h.fail(w, keyReused(p, reused, events))
		return
	}
	if err != nil {
		h.fail(w, relabel(err, labels))
		return
	}
	dups := 0
	for _, r := range res {
		if r.Duplicate {
			dups++
		}
	}
	writeJSON(w, http.StatusOK, map[string]int{"accepted": len(events), "duplicates": dups})
}

// keyReused is the answer to a request one of whose events has the key of
// an event stored for someone else: the bot gave two people's
// conversations one sessionId. Ingest wrote nothing.
func keyReused(p *Payload, reused *c360.KeyReusedError, events []*c360.Event) error {
	const advice = "; give each person's conversation a sessionId of its own (unique in the workspace)"
	for _, ev := range events {
		if ev.DedupeKey != reused.DedupeKey {
			continue
		}
		if turn, ok := ev.Properties["turnId"].(string); ok {
			return c360.Errorf(c360.ECONFLICT, "sessionId %q and turn id %q were already used by another person in this workspace%s",
				p.SessionID, turn, advice)
		}
	}
	return c360.Errorf(c360.ECONFLICT, "sessionId %q was already used by another person in this workspace%s", p.SessionID, advice)
}

// relabel replaces the "events[i]" of an ingest error with the payload part
// the event came from.
func relabel(err error, labels []string) error {
	if c360.ErrorCode(err) != c360.EINVALID {
		return err
	}
	msg := c360.ErrorMessage(err)
	rest, ok := strings.CutPrefix(msg, "events[")
	if !ok {
		return err
	}
	n, after, ok := strings.Cut(rest, "]: ")
	i, convErr := strconv.Atoi(n)
	if !ok || convErr != nil || i < 0 || i >= len(labels) {
		return err
	}
	return c360.Errorf(c360.EINVALID, "%s: %s", labels[i], after)
}

func (h *Handler) tooLarge(w http.ResponseWriter) {
	writeJSON(w, http.StatusRequestEntityTooLarge, errorBody{Code: c360.EINVALID,
		Message: "the body is larger than " + strconv.FormatInt(h.cfg.MaxBodyBytes>>10, 10) + " KiB"})
}

// errorBody is the body of every refusal.
type errorBody struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// fail answers err with its status; internal errors are logged and answered
// with a generic message.
func (h *Handler) fail(w http.ResponseWriter, err error) {
	code := c360.ErrorCode(err)
	if code == c360.EINTERNAL {
		h.cfg.Logger.Error("chatbot webhook", "error", err)
	}
	status := h.cfg.StatusOf(err)
	if status == http.StatusServiceUnavailable || status == http.StatusTooManyRequests {
		w.Header().Set("Retry-After", "1")
	}
	writeJSON(w, status, errorBody{Code: code, Message: c360.ErrorMessage(err)})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}
