package server

import (
	"context"
	"math"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/99designs/gqlgen/graphql"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"

	"github.com/c360dev/c360"
	"github.com/c360dev/c360/resolver"
)

// Rate is a token bucket: RPS tokens a second, up to Burst at once (at
// least 1). An RPS at or below zero turns the limit off; the environment
// asks for that with -1 (LimitsFromEnv refuses 0). The zero Rate{} in
// Limits is not off: like every zero limit, it takes the default.
type Rate struct {
	RPS   float64
	Burst int
}

// maxBuckets bounds the buckets a limiter keeps. Past it, buckets idle long
// enough to have refilled are evicted; if none has, all are.
const maxBuckets = 100_000

// limiter keeps one token bucket per key (an API key, a workspace). A bucket
// that has been idle long enough to refill completely is the same as a new
// one, so such buckets are evicted without changing any answer; the map is
// swept at most once per refill period, on the request path, without a
// goroutine of its own.
type limiter[K comparable] struct {
	rate Rate
	// refused, when set, counts the tokens refused.
	refused prometheus.Counter
	now     func() time.Time
	mu      sync.Mutex
	m       map[K]*bucket
	swept   time.Time
}

type bucket struct {
	lim  *rate.Limiter
	last time.Time
}

func newLimiter[K comparable](r Rate, refused prometheus.Counter) *limiter[K] {
	return &limiter[K]{rate: r, refused: refused, now: time.Now, m: map[K]*bucket{}}
}

// refill is how long an idle bucket takes to fill up again.
func (l *limiter[K]) refill() time.Duration {
	return time.Duration(float64(l.rate.Burst)/l.rate.RPS*float64(time.Second)) + time.Second
}

// allow takes a token for key. When there is none it counts the refusal
// and reports how long until there is one.
func (l *limiter[K]) allow(key K) (bool, time.Duration) {
	ok, retry := l.take(key)
	if !ok && l.refused != nil {
		l.refused.Inc()
	}
	return ok, retry
}

// check reports whether key's bucket holds a token, without taking it;
// when it does not, it counts the refusal and reports how long until it
// does. A key without a bucket has a full one, so check adds none.
func (l *limiter[K]) check(key K) (bool, time.Duration) {
	if l == nil || l.rate.RPS <= 0 {
		return true, 0
	}
	now := l.now()
	l.mu.Lock()
	b := l.m[key]
	var tokens float64
	if b != nil {
		tokens = b.lim.TokensAt(now)
	}
	l.mu.Unlock()
	if b == nil || tokens >= 1 {
		return true, 0
	}
	if l.refused != nil {
		l.refused.Inc()
	}
	return false, time.Duration((1 - tokens) / l.rate.RPS * float64(time.Second))
}

// take is allow without the count.
func (l *limiter[K]) take(key K) (bool, time.Duration) {
	if l == nil || l.rate.RPS <= 0 {
		return true, 0
	}
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.m[key]
	if b == nil {
		l.sweep(now)
		burst := l.rate.Burst
		if burst < 1 {
			burst = 1
		}
		b = &bucket{lim: rate.NewLimiter(rate.Limit(l.rate.RPS), burst)}
		l.m[key] = b
	}
	b.last = now
	r := b.lim.ReserveN(now, 1)
	if !r.OK() {
		return false, time.Second
	}
	if d := r.DelayFrom(now); d > 0 {
		r.CancelAt(now)
		return false, d
	}
	return true, 0
}

// sweep evicts idle buckets; called with l.mu held, before adding one.
func (l *limiter[K]) sweep(now time.Time) {
	if len(l.m) < maxBuckets && now.Sub(l.swept) < l.refill() {
		return
	}
	l.swept = now
	idle := l.refill()
	for k, b := range l.m {
		if now.Sub(b.last) > idle {
			delete(l.m, k)
		}
	}
	if len(l.m) >= maxBuckets {
		// Every bucket is busy (keys sprayed faster than they refill):
		// start over. Every key gets a full bucket again, which errs toward
		// serving; memory stays bounded.
		clear(l.m)
	}
}

// len returns how many buckets the limiter holds.
func (l *limiter[K]) len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.m)
}

// rateLimited sets Retry-After in h (whole seconds, at least 1; nil: no
// header, a websocket's refusal) and returns the coded error that says what
// is over its limit, for the caller to answer in its route's shape.
func rateLimited(h http.Header, retry time.Duration, what string) error {
	secs := int(math.Ceil(retry.Seconds()))
	if secs < 1 {
		secs = 1
	}
	if h != nil {
		h.Set("Retry-After", strconv.Itoa(secs))
	}
	return c360.Errorf(c360.ERATELIMITED, "rate limit of %s exceeded: retry after %d s", what, secs)
}

// writeRateLimited answers 429 with Retry-After and a coded GraphQL-shaped
// body.
func writeRateLimited(w http.ResponseWriter, retry time.Duration, what string) {
	writeGraphQLRateLimited(w, rateLimited(w.Header(), retry, what))
}

// writeGraphQLRateLimited answers err, an ERATELIMITED error, with 429 and a
// GraphQL-shaped body.
func writeGraphQLRateLimited(w http.ResponseWriter, err error) {
	writeGraphQLError(w, http.StatusTooManyRequests, err)
}

// LimitWebhook takes a token from the bucket of the workspace a provider
// webhook (Twilio, WhatsApp, chatbot) is addressed to. Connectors call it
// once the request is verified (its signature or verify token checked), as
// the Segment API calls AllowWriteKey once the write key is checked: a
// request anyone can send, knowing only the slug in the webhook's URL,
// never spends the provider's tokens. Calling it also marks the request as
// verified for limitUnverified. False means the request was answered with
// 429 and Retry-After.
func (s *Server) LimitWebhook(w http.ResponseWriter, r *http.Request, workspaceID int64) bool {
	markVerified(r)
	ok, retry := s.webhookLimit.allow("ws:" + strconv.FormatInt(workspaceID, 10))
	if !ok {
		writeRateLimited(w, retry, "this workspace's webhooks")
	}
	return ok
}

// verifiedKey is the context key of a request's mark: set by LimitWebhook
// or AllowWriteKey once the connector has verified the request.
type verifiedKey struct{}

// markVerified marks r, a request limitUnverified passed on, as verified.
func markVerified(r *http.Request) {
	if v, _ := r.Context().Value(verifiedKey{}).(*atomic.Bool); v != nil {
		v.Store(true)
	}
}

// limitUnverified bounds, per client address, the requests to h that are
// never verified: for the provider webhooks (Handle, patterns with
// {workspace}) an unknown workspace, a body over the limit, a missing or
// wrong signature; for the Segment API (HandleVerifying) a body refused
// before its write key is checked, a missing, unknown or refused key. Each
// costs a body read and a lookup (a workspace and an HMAC, a key), and none
// spends a workspace's or a write key's tokens (LimitWebhook,
// AllowWriteKey), so without this a flood of them would cost unbounded
// work. A request that is not verified takes a token from its address's
// bucket once answered; an address whose bucket is empty is answered 429
// before anything runs, by refuse (given the ERATELIMITED error, with
// Retry-After set), naming what. A verified request takes none, so a
// client's own requests are refused only when they come from an address
// that also sent that many unverified ones (behind a proxy that hides
// clients' addresses, every client's). Concurrent requests from one
// address may overshoot its burst by as many as are in flight when it
// empties.
func (s *Server) limitUnverified(h http.Handler, what string, refuse func(http.ResponseWriter, error)) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodOptions {
			h.ServeHTTP(w, r)
			return
		}
		client := s.clientOf(r)
		if ok, retry := s.unverifiedLimit.check(client); !ok {
			refuse(w, rateLimited(w.Header(), retry, what))
			return
		}
		verified := new(atomic.Bool)
		h.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), verifiedKey{}, verified)))
		if !verified.Load() {
			s.unverifiedLimit.take(client)
		}
	})
}

// failedAuthentications names the limit of API keys that fail to
// authenticate, per client address.
const failedAuthentications = "failed authentications from this address"

// authenticateKey authenticates an API key the client at remoteAddr
// presented (to /graphql over HTTP or a websocket's connection_init).
// Failed authentications are limited per client address, in the bucket of
// unverified webhooks: a well-formed key costs a database lookup unless it
// authenticated lately (only such keys are cached), so an address that
// keeps presenting keys that fail is refused before the lookup once its
// bucket is empty, with ERATELIMITED (and Retry-After in h, when not nil).
// A key that fails (EUNAUTHENTICATED) takes a token once checked; a key
// that authenticates takes none, nor does a store that cannot tell (the key
// may be good). client is the bucket key of the client (clientOf); without
// one, the address is not limited.
func (s *Server) authenticateKey(ctx context.Context, h http.Header, client, key string) (*c360.Principal, error) {
	if client == "" {
		return s.auth.Authenticate(ctx, key)
	}
	if ok, retry := s.unverifiedLimit.check(client); !ok {
		return nil, rateLimited(h, retry, failedAuthentications)
	}
	p, err := s.auth.Authenticate(ctx, key)
	if c360.ErrorCode(err) == c360.EUNAUTHENTICATED {
		s.unverifiedLimit.take(client)
	}
	return p, err
}

// AuthenticateRequest authenticates the API key r presented, as /graphql
// does (authenticateKey): an address that keeps presenting keys that fail
// is refused before the lookup with ERATELIMITED, Retry-After set on w, for
// the caller to answer (/mcp).
func (s *Server) AuthenticateRequest(w http.ResponseWriter, r *http.Request, key string) (*c360.Principal, error) {
	return s.authenticateKey(r.Context(), w.Header(), s.clientOf(r), key)
}

// clientAddress is the bucket key of a client's address (host, or
// host:port): the host, and for IPv6 its /64, which a single host commonly
// holds whole. clientOf finds the client's address of a request.
func clientAddress(remoteAddr string) string {
	host, _, err := net.SplitHostPort(remoteAddr)
	if err != nil {
		host = remoteAddr
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return host
	}
	ip = ip.Unmap().WithZone("")
	if ip.Is4() {
		return ip.String()
	}
	return netip.PrefixFrom(ip, 64).Masked().String()
}

// AllowWriteKey takes a token from the bucket of an authenticated write key
// (the webhook rate, C360_RATE_WEBHOOK_*), which r presented; when there is
// none it reports how long until there is. The Segment API calls it once
// the key is checked, so an unknown key never gets a bucket of its own.
// Calling it also marks r as verified for the per-address limit of the
// requests that are not (HandleVerifying).
func (s *Server) AllowWriteKey(r *http.Request, keyID int64) (bool, time.Duration) {
	markVerified(r)
	return s.webhookLimit.allow("wk:" + strconv.FormatInt(keyID, 10))
}

// limitKey takes a token from the bucket of p's API key; false means the
// request was answered with 429.
func (s *Server) limitKey(w http.ResponseWriter, p *c360.Principal) bool {
	ok, retry := s.keyLimit.allow(p.KeyID)
	if !ok {
		writeRateLimited(w, retry, "this API key")
	}
	return ok
}

// lookups names the limit of lookups by identity and searches.
const lookups = "lookups by identity and searches of this API key"

// limitLookups gives each operation of a key that reads personal data
// masked its key's bucket of lookups (LookupRate, C360_RATE_LOOKUP_*): the
// resolvers take a token for each lookup by identity or search, an alias
// counting as one, and refuse one past the bucket with RATE_LIMITED, the
// rest of the operation answered (resolver.WithLookupLimit). Operations of
// other keys, which read personal data unmasked anyway, pass untouched.
func (s *Server) limitLookups(ctx context.Context, next graphql.OperationHandler) graphql.ResponseHandler {
	if p := c360.PrincipalFromContext(ctx); p == nil || p.SeesPII() || s.lookupLimit == nil || s.lookupLimit.rate.RPS <= 0 {
		return next(ctx)
	}
	return next(resolver.WithLookupLimit(ctx, s.allowLookup))
}

// allowLookup takes a token from the lookup bucket of p's key.
func (s *Server) allowLookup(p *c360.Principal) error {
	if ok, retry := s.lookupLimit.allow(p.KeyID); !ok {
		return rateLimited(nil, retry, lookups)
	}
	return nil
}
