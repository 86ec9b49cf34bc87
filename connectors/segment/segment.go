// Package segment is c360's Segment-compatible HTTP Tracking API: the
// /v1/identify, track, page, screen, group, alias and batch calls that every
// Segment or RudderStack SDK sends. It authenticates the write key, enforces
// Segment's limits, turns calls into canonical events and hands them to the
// one ingest path; it never writes tables itself.
package segment

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/base64"
	"encoding/json"
	"io"
	"log/slog"
	"math"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/c360dev/c360"
	"github.com/c360dev/c360/connectors/webhook"
)

// Store is what the tracking API needs from the store.
type Store interface {
	// Authenticate returns the principal of a write (or admin) key.
	Authenticate(ctx context.Context, key string) (*c360.Principal, error)
	// Ingest stores events in one transaction.
	Ingest(ctx context.Context, workspaceID int64, events []*c360.Event) ([]c360.IngestResult, error)
	// Validate reports, per event, whether Ingest would accept it.
	Validate(ctx context.Context, workspaceID int64, events []*c360.Event) ([]error, error)
	// FindCustomerByIdentity tells whether an alias's previousId is a known user id.
	FindCustomerByIdentity(ctx context.Context, workspaceID int64, id c360.Identity) (*c360.Customer, error)
}

// Config wires the handler.
type Config struct {
	Store Store
	// Now stamps receivedAt; tests fix it.
	Now c360.Clock
	// StatusOf maps a domain error to its HTTP status (server.StatusOf, the
	// one table); nil answers 500 for every error.
	StatusOf func(error) int
	Logger   *slog.Logger
	// Limit takes a token from the bucket of the write key r presented,
	// once it is checked (server.AllowWriteKey, which also marks r as
	// verified: requests that are not, a missing, unknown or refused key,
	// are limited per client address); nil: no limit.
	Limit func(r *http.Request, keyID int64) (bool, time.Duration)
}

// Handler serves the tracking API.
type Handler struct {
	cfg Config
	// unreadTimes counts the time fields ignored because they do not
	// parse, by field, of the calls inserted (ingest): the calls are then
	// dated when received, which an SDK, never reading the answer's
	// warnings, would not report.
	unreadTimes *prometheus.CounterVec
}

// Mounter is where the handler's routes are mounted (server.Server).
type Mounter interface {
	Handle(pattern string, h http.Handler)
	// HandleVerifying mounts a handler whose requests that never
	// authenticate (Limit is not called for them) are limited per client
	// address; refuse answers an address over that limit.
	HandleVerifying(pattern string, h http.Handler, refuse func(http.ResponseWriter, error))
	// Registry is where the handler's metrics are registered.
	Registry() *prometheus.Registry
}

// New returns a handler for cfg.
func New(cfg Config) *Handler {
	if cfg.Now == nil {
		panic("segment: Config.Now is nil")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.StatusOf == nil {
		cfg.StatusOf = func(error) int { return http.StatusInternalServerError }
	}
	return &Handler{cfg: cfg, unreadTimes: prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "c360_segment_unread_times_total",
		Help: "Time fields of the Segment calls stored that were ignored because they do not parse, by field; a call stored again (a retry) is not counted.",
	}, []string{"field"})}
}

// Register declares the API's routes on m: Segment's paths, /v1/import (an
// alias of batch, as in Segment), the one-letter paths of Segment's browser
// library, RudderStack's beacon path (Beacon), and CORS preflights, since
// browsers send from any origin. Each path is also served with a trailing
// slash, as analytics-java posts to /v1/import/ (its default path); a
// longer path is not ({$}). A
// request refused by m's limit of requests without a valid write key gets
// Segment's answer, as every other refusal: SDKs parse it.
func (h *Handler) Register(m Mounter) {
	post := func(path string, hd http.Handler) {
		m.HandleVerifying("POST "+path, hd, h.refuse)
		m.HandleVerifying("POST "+path+"/{$}", hd, h.refuse)
	}
	options := func(path string) {
		m.Handle("OPTIONS "+path, http.HandlerFunc(preflight))
		m.Handle("OPTIONS "+path+"/{$}", http.HandlerFunc(preflight))
	}
	for _, p := range []struct{ long, short, typ string }{
		{"identify", "i", c360.EventIdentify},
		{"track", "t", c360.EventTrack},
		{"page", "p", c360.EventPage},
		{"screen", "s", c360.EventScreen},
		{"group", "g", c360.EventGroup},
		{"alias", "a", c360.EventAlias},
	} {
		post("/v1/"+p.long, h.Call(p.typ))
		post("/v1/"+p.short, h.Call(p.typ))
	}
	post("/v1/batch", h.Batch())
	post("/v1/import", h.Batch())
	post("/v1/b", h.Batch())
	post("/beacon/v1/batch", h.Beacon())
	options("/v1/{call}")
	options("/beacon/v1/batch")
	m.Registry().MustRegister(h.unreadTimes)
}

// refuse answers a request refused before serve runs, as serve answers.
func (h *Handler) refuse(w http.ResponseWriter, err error) {
	w.Header().Set("Access-Control-Allow-Origin", "*")
	h.fail(w, err, nil)
}

// Call returns the handler of a single call of type typ (an event type).
func (h *Handler) Call(typ string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.serve(w, r, typ)
	})
}

// Batch returns the handler of /v1/batch.
func (h *Handler) Batch() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.serve(w, r, "")
	})
}

// Beacon returns the handler of /beacon/v1/batch, where RudderStack's
// JavaScript SDK posts batches with navigator.sendBeacon (its useBeacon
// option). A beacon cannot carry headers, so the write key comes in the
// writeKey query parameter; it is then read as HTTP Basic credentials
// would be, as RudderStack's own gateway does. A Basic header, which a
// beacon never has, still wins. The body is a batch, sent as text/plain.
func (h *Handler) Beacon() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if key := r.URL.Query().Get("writeKey"); key != "" && r.Header.Get("Authorization") == "" {
			r = r.Clone(r.Context())
			r.SetBasicAuth(key, "")
		}
		h.serve(w, r, "")
	})
}

var bufPool = sync.Pool{New: func() any { return new(bytes.Buffer) }}

// serve handles a single call of type typ, or a batch when typ is "".
func (h *Handler) serve(w http.ResponseWriter, r *http.Request, typ string) {
	w.Header().Set("Access-Control-Allow-Origin", "*")
	ctx := r.Context()
	limit := int64(MaxCallBytes)
	if typ == "" {
		limit = MaxBatchBytes
	}
	buf := bufPool.Get().(*bytes.Buffer)
	defer func() {
		if buf.Cap() <= 2*MaxBatchBytes {
			buf.Reset()
			bufPool.Put(buf)
		}
	}()
	if err := readBody(r, buf, limit); err != nil {
		h.fail(w, err, nil)
		return
	}
	receivedAt := h.cfg.Now()

	// Credentials come from the Authorization header or, as Segment allows,
	// from the body's writeKey; with a header, nothing is decoded before
	// the key is checked. A checked key takes its token at once: a body
	// that then does not parse is its key's work.
	var p *c360.Principal
	if key, ok := basicUser(r.Header.Get("Authorization")); ok {
		var err error
		if p, err = h.authenticate(ctx, key); err != nil {
			h.fail(w, err, nil)
			return
		}
		if !h.allow(w, r, p) {
			return
		}
	}
	var (
		results     []Result
		bodyKey     string
		parseErr    error
		batchSentAt bool // the batch's sentAt was not read
	)
	if typ == "" {
		b, err := ParseBatch(buf.Bytes())
		if err != nil {
			parseErr = err
		} else {
			bodyKey, batchSentAt = b.WriteKey, b.SentAtUnread
			results = b.Events(receivedAt)
		}
	} else {
		m, err := ParseCall(buf.Bytes())
		bodyKey = m.WriteKey
		if err != nil {
			parseErr = err
		} else {
			ev, err := m.Canonical(typ, receivedAt, time.Time{})
			results = []Result{{MessageID: string(m.MessageID), Event: ev, Err: err, UnreadTimes: m.UnreadTimes()}}
		}
	}
	if parseErr != nil {
		// Shown even to a caller without credentials: it reveals nothing
		// but the shape of the body the caller sent.
		h.fail(w, parseErr, nil)
		return
	}
	if p == nil {
		var err error
		if p, err = h.authenticate(ctx, bodyKey); err != nil {
			h.fail(w, err, nil)
			return
		}
		if !h.allow(w, r, p) {
			return
		}
	}
	markClientCalls(p, results)

	if err := h.ingest(ctx, p.WorkspaceID, results, batchSentAt); err != nil {
		h.fail(w, err, nil)
		return
	}
	var rejected []rejection
	for i := range results {
		if results[i].Err != nil {
			rejected = append(rejected, rejection{Index: results[i].Index, MessageID: results[i].MessageID,
				Error: c360.ErrorMessage(results[i].Err)})
		}
	}
	warnings, omitted := unreadTimeWarnings(results, typ == "", batchSentAt)
	switch {
	case len(rejected) == 0 && len(warnings) == 0:
		w.Header().Set("Content-Type", "application/json")
		w.Write(successBody)
	case len(rejected) > 0 && len(rejected) == len(results):
		// Nothing was stored: the client must not believe otherwise.
		if typ != "" {
			h.fail(w, results[0].Err, nil)
			return
		}
		h.fail(w, c360.Errorf(c360.EINVALID, "every call of the batch was refused; see rejected"), rejected)
	default:
		writeJSON(w, http.StatusOK, answer{Success: true, Rejected: rejected, Warnings: warnings, WarningsOmitted: omitted})
	}
}

var successBody = []byte(`{"success":true}` + "\n")

// answer is the body of every response.
type answer struct {
	Success  bool        `json:"success"`
	Code     string      `json:"code,omitempty"`
	Message  string      `json:"message,omitempty"`
	Rejected []rejection `json:"rejected,omitempty"`
	// Warnings name what was stored otherwise than sent: time fields
	// ignored because they do not parse; the first maxWarnings of them,
	// WarningsOmitted counting the others.
	Warnings        []warning `json:"warnings,omitempty"`
	WarningsOmitted int       `json:"warningsOmitted,omitempty"`
}

// rejection names a refused call of a batch.
type rejection struct {
	Index     int    `json:"index"`
	MessageID string `json:"messageId,omitempty"`
	Error     string `json:"error"`
}

// errBodyTimeout refuses a body that did not arrive within the server's
// read deadline (C360_BODY_READ_TIMEOUT): 408.
var errBodyTimeout = c360.Errorf(c360.EINVALID, "the request body did not arrive within the read timeout: send it whole at once")

// readBody reads the request body, gunzipped if need be, into buf; a body
// longer than limit is refused with EINVALID, Segment's 400.
func readBody(r *http.Request, buf *bytes.Buffer, limit int64) error {
	var body io.Reader = r.Body
	switch enc := strings.ToLower(strings.TrimSpace(r.Header.Get("Content-Encoding"))); enc {
	case "", "identity":
	case "gzip":
		zr, err := gzip.NewReader(io.LimitReader(r.Body, limit+1))
		if err != nil {
			if webhook.TimedOut(err) {
				return errBodyTimeout // the header's bytes did not arrive in time
			}
			return c360.Errorf(c360.EINVALID, "the body is not valid gzip")
		}
		defer zr.Close()
		body = zr
	default:
		return c360.Errorf(c360.EINVALID, "unsupported Content-Encoding %q: send gzip or no encoding", truncate(enc, 20))
	}
	if _, err := buf.ReadFrom(io.LimitReader(body, limit+1)); err != nil {
		if webhook.TimedOut(err) {
			return errBodyTimeout
		}
		return c360.Errorf(c360.EINVALID, "unreadable body")
	}
	if int64(buf.Len()) > limit {
		return c360.Errorf(c360.EINVALID, "the request is larger than %d KB", limit>>10)
	}
	return nil
}

// allow takes a token from the bucket of p's key, which r presented (see
// Config.Limit). False means the request was answered with 429 and
// Retry-After.
func (h *Handler) allow(w http.ResponseWriter, r *http.Request, p *c360.Principal) bool {
	if h.cfg.Limit == nil {
		return true
	}
	ok, retry := h.cfg.Limit(r, p.KeyID)
	if !ok {
		w.Header().Set("Retry-After", strconv.Itoa(max(1, int(math.Ceil(retry.Seconds())))))
		h.fail(w, c360.Errorf(c360.ERATELIMITED, "rate limit of this write key exceeded: retry later"), nil)
	}
	return ok
}

// authenticate checks a write key; write, client and admin keys may send
// calls.
func (h *Handler) authenticate(ctx context.Context, key string) (*c360.Principal, error) {
	if key == "" {
		return nil, c360.Errorf(c360.EUNAUTHENTICATED, "missing write key: send HTTP Basic auth with the write key as user name and an empty password")
	}
	p, err := h.cfg.Store.Authenticate(ctx, key)
	if err != nil {
		return nil, err
	}
	if p.Role != c360.RoleWrite && p.Role != c360.RoleClient && p.Role != c360.RoleAdmin {
		return nil, c360.Errorf(c360.EFORBIDDEN, "keys with role %s cannot send tracking calls: use a write or client key", p.Role)
	}
	return p, nil
}

// basicUser returns the user name of HTTP Basic credentials. Segment also
// accepts a write key encoded without the colon, so that is allowed too.
func basicUser(h string) (string, bool) {
	scheme, enc, ok := strings.Cut(strings.TrimSpace(h), " ")
	if !ok || !strings.EqualFold(scheme, "Basic") {
		return "", false
	}
	raw, err := base64.StdEncoding.DecodeString(strings.TrimSpace(enc))
	if err != nil {
		if raw, err = base64.RawStdEncoding.DecodeString(strings.TrimSpace(enc)); err != nil {
			return "", false
		}
	}
	user, _, _ := strings.Cut(string(raw), ":")
	return user, user != ""
}

// resolveAliases decides the identity type of each alias's previousId that
// is not the call's own anonymousId: user_id when the workspace knows that
// user id, anonymous_id otherwise. Under the default rules a customer
// holds one user_id, so a previousId guessed to be a user id would compete
// with userId for that one slot instead of linking the anonymous history.
//
// It is called for each part of a batch just before the part is stored,
// and a part ends before an alias whose previousId an earlier call of the
// part has as its userId (partLen): only calls stored count, so an alias
// resolves alike whether its batch's calls arrive as separate requests or
// together (an SDK flushes identify(userId: old) and alias(previousId:
// old) in one batch), and a call that ingest refuses counts for neither.
func (h *Handler) resolveAliases(ctx context.Context, ws int64, results []Result) error {
	for i := range results {
		ev := results[i].Event
		if results[i].Err != nil || ev == nil || ev.PreviousID == nil || ev.PreviousID.Type != aliasUnresolved {
			continue
		}
		prev := ev.PreviousID
		_, err := h.cfg.Store.FindCustomerByIdentity(ctx, ws, c360.Identity{Type: "user_id", Value: prev.Value})
		switch c360.ErrorCode(err) {
		case "":
			prev.Type = "user_id"
		case c360.ENOTFOUND, c360.EINVALID:
			// Unknown as a user id (or not a valid one: ingest says why).
			prev.Type = "anonymous_id"
		default:
			return err
		}
	}
	return nil
}

// partLen returns how many of results, at most ingestCalls, are the next
// part to store: the part ends before an alias whose previousId an
// earlier call of the part has as its userId, so that the alias is
// resolved once that call is stored, or refused (resolveAliases). A batch
// without such an alias is cut by ingestCalls alone.
func partLen(results []Result) int {
	n := min(len(results), ingestCalls)
	var userIDs map[string]struct{} // of the part's calls so far, once an alias needs them
	for i := range n {
		ev := results[i].Event
		if results[i].Err != nil || ev == nil {
			continue
		}
		if prev := ev.PreviousID; prev != nil && prev.Type == aliasUnresolved && i > 0 {
			if userIDs == nil {
				userIDs = map[string]struct{}{}
				for j := range i {
					addUserIDs(userIDs, &results[j])
				}
			}
			// Compared trimmed, as ingest normalizes user ids.
			if _, ok := userIDs[strings.TrimSpace(prev.Value)]; ok {
				return i
			}
		}
		if userIDs != nil {
			addUserIDs(userIDs, &results[i])
		}
	}
	return n
}

// addUserIDs adds the user ids of r's event, if it has one, to ids.
func addUserIDs(ids map[string]struct{}, r *Result) {
	if r.Err != nil || r.Event == nil {
		return
	}
	for _, id := range r.Event.Identities {
		if id.Type == "user_id" {
			ids[strings.TrimSpace(id.Value)] = struct{}{}
		}
	}
}

// ingestCalls bounds the calls of one Ingest call, about one ingest group
// (postgres.IngestConfig.MaxGroupEvents, 512 by default). A group whose
// event merges customers is applied event by event, at about a millisecond
// each: a whole batch of thousands of calls would then outlast the group's
// timeout and be answered 503 on every retry.
const ingestCalls = 500

// ingest stores the acceptable events of results, in parts of at most
// ingestCalls calls (partLen), one after the other so that a part takes
// effect after the one before. Within a part, Ingest keeps the order of
// calls that share an identifier only: calls routed to different ingest
// workers (one person named by disjoint identifiers) commit in either
// order (docs/connectors.md, Batches). A failure that is not about the events (503) stops
// it: the parts stored are found stored by the client's retry.
//
// A part's aliases are resolved, and its events given their batch's
// context, just before the part is stored; its events are let go once it
// is: only one part's copies of the context are alive at a time.
//
// The time fields ignored (Result.UnreadTimes, and the batch's sentAt
// when sentAtUnread) are counted as each part is stored, for the calls
// inserted only: a retried batch, or one refused whole, counts nothing.
func (h *Handler) ingest(ctx context.Context, ws int64, results []Result, sentAtUnread bool) error {
	for len(results) > 0 {
		part := results[:partLen(results)]
		if err := h.resolveAliases(ctx, ws, part); err != nil {
			return err
		}
		for i := range part {
			part[i].applyBatchContext()
		}
		if err := h.ingestPart(ctx, ws, part); err != nil {
			return err
		}
		for i := range part {
			r := &part[i]
			r.Event = nil
			if !r.inserted {
				continue
			}
			for _, f := range r.UnreadTimes {
				h.unreadTimes.WithLabelValues(f).Inc()
			}
			if sentAtUnread {
				h.unreadTimes.WithLabelValues("sentAt").Inc()
				sentAtUnread = false
			}
		}
		results = results[len(part):]
	}
	return nil
}

// ingestPart stores the acceptable events of results in one transaction. When
// Ingest refuses the set, the events it would refuse are found without
// writing, marked, and the rest stored; an event that passes validation but
// fails inside the transaction (a constraint, a NUL PostgreSQL refuses) is
// isolated by bisection (isolate). Only errors that are not about the
// events themselves (database unavailable, ...) are returned.
func (h *Handler) ingestPart(ctx context.Context, ws int64, results []Result) error {
	idx := make([]int, 0, len(results))
	evs := make([]*c360.Event, 0, len(results))
	for i := range results {
		if results[i].Err == nil {
			idx, evs = append(idx, i), append(evs, results[i].Event)
		}
	}
	if len(evs) == 0 {
		return nil
	}
	// The whole set and the validated subset keep no dead letters: their
	// good events are stored below. A call that fails alone is kept.
	whole := c360.WithoutDeadLetters(ctx)
	stored, err := h.cfg.Store.Ingest(whole, ws, evs)
	if !c360.EventFault(err) {
		markInserted(results, idx, stored)
		return err
	}
	errs, err := h.cfg.Store.Validate(ctx, ws, evs)
	if err != nil {
		return err
	}
	keepIdx, keep := idx[:0:0], evs[:0:0]
	for j, e := range errs {
		if e != nil {
			results[idx[j]].Err = e
			continue
		}
		keepIdx, keep = append(keepIdx, idx[j]), append(keep, evs[j])
	}
	if len(keep) == 0 {
		return nil
	}
	if len(keep) < len(evs) {
		stored, err = h.cfg.Store.Ingest(whole, ws, keep)
		if !c360.EventFault(err) {
			markInserted(results, keepIdx, stored)
			return err
		}
	}
	return h.isolate(ctx, ws, results, keepIdx, keep)
}

// isolate stores evs, whose set Ingest has just refused for an event's
// own fault, by bisection: each half is tried in one transaction, the
// first before the second so that the calls take effect in their order, a
// half that succeeds is stored whole and one that fails is split again.
// An event alone is stored with the caller's ctx, so that one that fails
// is kept as a dead letter and marked with its error, as if it had come
// alone. k bad events of n cost about 2k·log2(n/k) transactions, where
// storing the events one by one cost n: a 500 KB batch with a bad call in
// each part of 500 is stored within an SDK's 10 s timeout.
func (h *Handler) isolate(ctx context.Context, ws int64, results []Result, idx []int, evs []*c360.Event) error {
	if len(evs) == 1 {
		stored, err := h.cfg.Store.Ingest(ctx, ws, evs)
		if c360.EventFault(err) {
			results[idx[0]].Err = err
			return nil
		}
		markInserted(results, idx, stored)
		return err
	}
	mid := len(evs) / 2
	for _, half := range [][2]int{{0, mid}, {mid, len(evs)}} {
		hIdx, hEvs := idx[half[0]:half[1]], evs[half[0]:half[1]]
		if len(hEvs) > 1 {
			stored, err := h.cfg.Store.Ingest(c360.WithoutDeadLetters(ctx), ws, hEvs)
			if !c360.EventFault(err) {
				if err != nil {
					return err
				}
				markInserted(results, hIdx, stored)
				continue
			}
		}
		if err := h.isolate(ctx, ws, results, hIdx, hEvs); err != nil {
			return err
		}
	}
	return nil
}

// markInserted records which calls of results, at idx, were inserted by
// Ingest's answer stored (nil when it failed) rather than found stored
// already (a retry).
func markInserted(results []Result, idx []int, stored []c360.IngestResult) {
	for j := range stored {
		results[idx[j]].inserted = !stored[j].Duplicate
	}
}

// fail answers err with its status and a JSON body; internal errors are
// logged and answered with a generic message.
func (h *Handler) fail(w http.ResponseWriter, err error, rejected []rejection) {
	code := c360.ErrorCode(err)
	status := h.cfg.StatusOf(err)
	if err == errBodyTimeout {
		status = http.StatusRequestTimeout
	}
	if code == c360.EINTERNAL {
		h.cfg.Logger.Error("segment: tracking call", "error", err)
	}
	switch status {
	case http.StatusUnauthorized:
		w.Header().Set("WWW-Authenticate", `Basic realm="c360"`)
	case http.StatusServiceUnavailable, http.StatusTooManyRequests:
		if w.Header().Get("Retry-After") == "" {
			w.Header().Set("Retry-After", "1")
		}
	}
	writeJSON(w, status, answer{Code: code, Message: c360.ErrorMessage(err), Rejected: rejected})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

// allowedHeaders are the request headers a browser may send to the
// tracking paths: a fixed list, not an echo of what a preflight asks for.
// RudderStack's JavaScript SDK (its default XHR transport) sends
// Authorization, Content-Type application/json, Accept and AnonymousId
// (the call's anonymousId in base64, which c360 ignores); Segment's
// analytics.js sends Content-Type text/plain, which needs no preflight;
// a client may gzip (Content-Encoding).
const allowedHeaders = "Authorization, Content-Type, Content-Encoding, Accept, AnonymousId"

// preflight answers browsers' CORS preflight for the tracking paths.
func preflight(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Access-Control-Allow-Origin", "*")
	h.Set("Access-Control-Allow-Methods", "POST")
	h.Set("Access-Control-Allow-Headers", allowedHeaders)
	h.Set("Access-Control-Max-Age", "86400")
	w.WriteHeader(http.StatusNoContent)
}
