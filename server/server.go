// Package server is c360's HTTP layer: every route in one place, API-key
// authentication, the GraphQL handler and its transports, health, readiness
// and metrics. It mounts the connectors and resolvers that cmd/c360 wires.
package server

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/99designs/gqlgen/graphql"
	"github.com/99designs/gqlgen/graphql/executor"
	"github.com/99designs/gqlgen/graphql/handler"
	"github.com/99designs/gqlgen/graphql/handler/extension"
	"github.com/99designs/gqlgen/graphql/handler/lru"
	"github.com/99designs/gqlgen/graphql/handler/transport"
	"github.com/99designs/gqlgen/graphql/playground"
	"github.com/gorilla/websocket"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/vektah/gqlparser/v2/ast"
	"github.com/vektah/gqlparser/v2/gqlerror"

	"github.com/c360dev/c360"
	"github.com/c360dev/c360/graph"
	"github.com/c360dev/c360/resolver"
)

// Config is what the server needs from the environment and the wiring.
type Config struct {
	// Dev enables introspection and GraphiQL's schema docs (make run).
	Dev bool
	// MaxBodyBytes bounds any request body; larger ones get 413.
	MaxBodyBytes int64
	Logger       *slog.Logger
	// Limits bound the cost of requests (limits.go); zero fields take the defaults.
	Limits Limits
	// Websocket configures subscriptions over WebSocket (websocket.go).
	Websocket WebsocketConfig
	// BodyReadTimeout bounds how long a request's body may take to arrive
	// (C360_BODY_READ_TIMEOUT; 0 takes DefaultBodyReadTimeout): a client
	// that trickles its body is answered 408 and its connection closed,
	// instead of holding a goroutine, a descriptor and a buffer for as
	// long as it likes. It is a read deadline on the connection while the
	// body is read, cleared once the body is read whole, so a stream (SSE)
	// answering the request is not cut by it; websockets have no body.
	BodyReadTimeout time.Duration
	// MetricsElsewhere leaves GET /metrics off this handler (404): the
	// caller serves MetricsHandler on a listener of its own
	// (C360_METRICS_ADDR), which the public cannot reach.
	MetricsElsewhere bool
}

// Readiness reports whether the server can serve: database reachable and
// migrations current.
type Readiness interface {
	Ready(ctx context.Context) error
}

// Server holds the HTTP handler and what it serves.
type Server struct {
	cfg      Config
	auth     c360.APIKeyService
	resolver *resolver.Resolver
	ready    Readiness
	mux      *http.ServeMux
	registry *prometheus.Registry
	metrics  *metrics
	// Rate limits (ratelimit.go): per API key; per workspace (or write key)
	// for connectors, once verified; per client address for webhook and
	// Segment API requests that are not, and API keys that fail; per API
	// key for the lookups of keys that read personal data masked.
	keyLimit        *limiter[int64]
	webhookLimit    *limiter[string]
	unverifiedLimit *limiter[string]
	lookupLimit     *limiter[int64]
	secMetrics      *securityMetrics
	ws              *websockets
	shared          *resolver.SharedSubscriptions
	// persisted holds the persisted queries (APQ) of both transports.
	persisted workspaceQueries
}

// New builds the server and its routes.
func New(cfg Config, auth c360.APIKeyService, r *resolver.Resolver, ready Readiness) *Server {
	if cfg.MaxBodyBytes == 0 {
		cfg.MaxBodyBytes = 1 << 20
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.BodyReadTimeout <= 0 {
		cfg.BodyReadTimeout = DefaultBodyReadTimeout
	}
	s := &Server{cfg: cfg, auth: auth, resolver: r, ready: ready, mux: http.NewServeMux(),
		registry: prometheus.NewRegistry()}
	s.metrics = newMetrics(s.registry)
	s.cfg.Limits = cfg.Limits.withDefaults()
	s.secMetrics = newSecurityMetrics(s.registry)
	s.keyLimit = newLimiter[int64](s.cfg.Limits.KeyRate, s.secMetrics.rateLimited.WithLabelValues("key"))
	s.webhookLimit = newLimiter[string](s.cfg.Limits.WebhookRate, s.secMetrics.rateLimited.WithLabelValues("webhook"))
	s.unverifiedLimit = newLimiter[string](s.cfg.Limits.WebhookUnverifiedRate,
		s.secMetrics.rateLimited.WithLabelValues("webhook_unverified"))
	s.lookupLimit = newLimiter[int64](s.cfg.Limits.LookupRate, s.secMetrics.rateLimited.WithLabelValues("lookup"))
	s.ws = newWebsockets(cfg.Websocket, cfg.Logger, s.registry)
	s.ws.clientOf = s.clientOf
	s.shared = &resolver.SharedSubscriptions{KeyActive: auth.KeyActive}
	s.routes()
	return s
}

// Handle mounts an extra handler (a connector) on the server's mux. A
// provider webhook's (a pattern with {workspace}) requests that are never
// verified are limited per client address (limitUnverified), and refused
// in the GraphQL shape of the server's other refusals.
func (s *Server) Handle(pattern string, h http.Handler) {
	if strings.Contains(pattern, "{workspace}") {
		h = s.limitUnverified(h, "unverified webhook requests from this address", writeGraphQLRateLimited)
	}
	s.mux.Handle(pattern, s.instrument(pattern, h))
}

// HandleVerifying mounts h, a connector that checks its callers' credentials
// itself (the Segment API, its write keys), at pattern. Its requests that
// are never verified (h never calls AllowWriteKey for them) are limited per
// client address (limitUnverified); refuse answers the request of an
// address over that limit in h's own shape, given the ERATELIMITED error,
// Retry-After already set.
func (s *Server) HandleVerifying(pattern string, h http.Handler, refuse func(http.ResponseWriter, error)) {
	s.mux.Handle(pattern, s.instrument(pattern,
		s.limitUnverified(h, "unauthenticated requests from this address", refuse)))
}

// Registry is the Prometheus registry /metrics serves; connectors add to it.
func (s *Server) Registry() *prometheus.Registry { return s.registry }

// MetricsHandler serves the registry in Prometheus's text format: what
// GET /metrics answers, unless Config.MetricsElsewhere.
func (s *Server) MetricsHandler() http.Handler {
	return promhttp.HandlerFor(s.registry, promhttp.HandlerOpts{})
}

// CloseWebsockets closes every GraphQL websocket connection with 1001 (going
// away). http.Server.Shutdown does not wait for hijacked connections: call it
// from RegisterOnShutdown so clients reconnect elsewhere and resume.
func (s *Server) CloseWebsockets() { s.ws.closeAll() }

// SubscriptionRenders is how many times a subscription payload was executed
// and marshaled (once per change and distinct operation, shared by every
// subscriber of that operation).
func (s *Server) SubscriptionRenders() int64 { return s.shared.Renders() }

// ServeHTTP implements http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	securityHeaders(w.Header())
	if r.Body != nil && r.Body != http.NoBody {
		// The handlers get a shallow copy carrying the timed body: the
		// original request keeps net/http's own body, which net/http looks
		// at when it writes the answer (a body never read of a client
		// waiting on Expect: 100-continue closes the connection at once
		// instead of waiting for the body; a body closed early is seen).
		body := deadlineBody(w, r.Body, s.cfg.BodyReadTimeout)
		if body != r.Body {
			r = r.WithContext(r.Context())
			r.Body = body
		}
	}
	s.mux.ServeHTTP(w, r)
}

// DefaultBodyReadTimeout is Config.BodyReadTimeout's default: a megabyte
// takes well under a second on any link a provider or client uses.
const DefaultBodyReadTimeout = 30 * time.Second

// deadlineBody sets the connection's read deadline to timeout from now and
// returns body, which clears it once read to its end (net/http clears it
// then too, as it starts its background read) or failed: every handler
// that reads a body (GraphQL, the Segment API, the webhooks) reads it under
// the deadline, and what comes after (an SSE stream, whose request's
// context net/http cancels when a read of the connection fails) runs
// without one. A handler that never reads its body
// leaves the deadline set, harmlessly: the connection is not read again
// until the next request, whose headers set the deadline anew. A read cut
// by the deadline fails with os.ErrDeadlineExceeded, which the readers
// answer with 408, and the connection is closed after that answer: the
// rest of the body would otherwise be read as the next request.
func deadlineBody(w http.ResponseWriter, body io.ReadCloser, timeout time.Duration) io.ReadCloser {
	rc := http.NewResponseController(w)
	if rc.SetReadDeadline(time.Now().Add(timeout)) != nil {
		return body // not a connection (a test's recorder): nothing to bound
	}
	return &timedBody{ReadCloser: body, w: w, rc: rc}
}

type timedBody struct {
	io.ReadCloser
	w    http.ResponseWriter
	rc   *http.ResponseController
	done bool
}

func (b *timedBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if err != nil && !b.done {
		b.done = true
		if errors.Is(err, os.ErrDeadlineExceeded) {
			b.w.Header().Set("Connection", "close")
		} else {
			b.rc.SetReadDeadline(time.Time{})
		}
	}
	return n, err
}

// routes declares every route of the core server; connectors add theirs with Handle.
func (s *Server) routes() {
	gql, wsExec := s.graphQLHandler()
	// WebSocket connections authenticate in connection_init, not with a header.
	overHTTP, overWS := s.authenticate(s.resolver.Middleware(gql)), s.ws.serve(s.websocketTransport(), wsExec)
	s.mux.Handle("/graphql", s.instrument("/graphql", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if websocket.IsWebSocketUpgrade(r) {
			// An address over its limit of failed authentications
			// (authenticateKey) is refused before its handshake.
			if ok, retry := s.unverifiedLimit.check(s.clientOf(r)); !ok {
				writeRateLimited(w, retry, failedAuthentications)
				return
			}
			overWS.ServeHTTP(w, r)
			return
		}
		if upgrade := r.Header.Get("Upgrade"); upgrade != "" {
			// A websocket asked for without the rest of its handshake (a
			// proxy that drops Connection: Upgrade) is refused, saying so:
			// answered as a plain GET, the client would only see its
			// handshake fail.
			if strings.Contains(strings.ToLower(upgrade), "websocket") {
				writeGraphQLError(w, http.StatusBadRequest, c360.Errorf(c360.EINVALID,
					"websocket handshake: Upgrade: websocket needs Connection: Upgrade (a proxy may have dropped it)"))
				return
			}
			// An upgrade this server does not speak (h2c, which curl
			// --http2 asks for) is ignored, as HTTP lets a server ignore
			// it; gqlgen's transports would refuse the request for it,
			// without a code.
			r = r.Clone(r.Context())
			r.Header.Del("Upgrade")
		}
		if (transport.SSE{}).Supports(r) {
			var done context.CancelFunc
			w, r, done = s.sseWriter(w, r)
			defer done()
		}
		overHTTP.ServeHTTP(w, r)
	})))
	s.mux.Handle("GET /{$}", playground.Handler("c360", "/graphql"))
	s.mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		w.Write([]byte("ok\n"))
	})
	s.mux.HandleFunc("GET /readyz", s.handleReady)
	// Metrics hold no customer data and no per-workspace labels, but say
	// how busy the service is and what fails: served here, unauthenticated,
	// unless the operator moves them to a listener of their own
	// (docs/operations.md).
	if !s.cfg.MetricsElsewhere {
		s.mux.Handle("GET /metrics", s.MetricsHandler())
	}
}

func (s *Server) handleReady(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	w.Header().Set("Content-Type", "text/plain")
	if err := s.ready.Ready(ctx); err != nil {
		w.WriteHeader(http.StatusServiceUnavailable)
		w.Write([]byte("not ready: " + c360.ErrorMessage(err) + "\n"))
		return
	}
	w.Write([]byte("ready\n"))
}

// graphQLHandler returns the GraphQL handler of HTTP requests, and the
// executor of websocket connections: both run operations alike (one
// configuration, executorConfig), but gqlgen's websocket transport runs
// straight on the executor (see websockets.serve).
func (s *Server) graphQLHandler() (http.Handler, *executor.Executor) {
	es := graph.NewExecutableSchema(graph.Config{Resolvers: s.resolver,
		Directives: s.resolver.Directives(), Complexity: complexity()})
	h := handler.New(es)
	h.AddTransport(transport.Options{})
	h.AddTransport(getTransport{})
	// SSE before POST: it claims POSTs that accept text/event-stream.
	h.AddTransport(transport.SSE{})
	h.AddTransport(postTransport{})
	// One cache of parsed queries and one of persisted queries serve both:
	// a query persisted over HTTP is known over websockets too. Persisted
	// queries are kept per workspace (workspaceQueries).
	queries := lru.New[*ast.QueryDocument](1000)
	s.persisted = workspaceQueries{lru.New[string](100)}
	s.configureExecutor(h, es.Schema(), queries, s.persisted)
	h.SetValidationRulesFn(validationRules(s.cfg.Limits.MaxFields))
	ws := executor.New(es)
	s.configureExecutor(ws, es.Schema(), queries, s.persisted)
	ws.SetDefaultRulesFn(validationRules(s.cfg.Limits.MaxFields))
	return h, ws
}

// workspaceQueries keeps persisted queries (APQ) per workspace: a hash sent
// alone runs only a text that a client of the caller's own workspace sent.
// Shared, a hash-only request would learn from PersistedQueryNotFound
// whether any client of any workspace had sent a text it guessed (a lookup
// with a literal address in it). Every request that reaches it has a
// principal (authenticate, websocketInit); one without is never served.
type workspaceQueries struct{ cache graphql.Cache[string] }

func (q workspaceQueries) key(ctx context.Context, hash string) (string, bool) {
	p := c360.PrincipalFromContext(ctx)
	if p == nil {
		return "", false
	}
	return strconv.FormatInt(p.WorkspaceID, 10) + ":" + hash, true
}

// Get implements graphql.Cache.
func (q workspaceQueries) Get(ctx context.Context, hash string) (string, bool) {
	key, ok := q.key(ctx, hash)
	if !ok {
		return "", false
	}
	return q.cache.Get(ctx, key)
}

// Add implements graphql.Cache.
func (q workspaceQueries) Add(ctx context.Context, hash, query string) {
	if key, ok := q.key(ctx, hash); ok {
		q.cache.Add(ctx, key, query)
	}
}

// websocketTransport is gqlgen's GraphQL over WebSocket, on gorilla (see
// websocket.go).
func (s *Server) websocketTransport() transport.Websocket {
	readLimit := s.ws.cfg.ReadLimit
	return transport.Websocket{
		Implementation: s.ws,
		InitFunc:       s.websocketInit,
		// The legacy graphql-ws protocol's "ka" messages; both protocols
		// also get websocket pings (websocket.go).
		KeepAlivePingInterval: s.ws.cfg.PingInterval,
		PayloadReadLimit:      &readLimit,
		ErrorFunc: func(ctx context.Context, err error) {
			s.cfg.Logger.Debug("graphql websocket", "error", err)
		},
	}
}

// executorConfig is what *handler.Server and *executor.Executor share.
type executorConfig interface {
	SetQueryCache(graphql.Cache[*ast.QueryDocument])
	SetParserTokenLimit(int)
	SetDisableSuggestion(bool)
	Use(graphql.HandlerExtension)
	AroundRootFields(graphql.RootFieldMiddleware)
	AroundOperations(graphql.OperationMiddleware)
	SetErrorPresenter(graphql.ErrorPresenterFunc)
	SetRecoverFunc(graphql.RecoverFunc)
}

// configureExecutor sets how operations run, whatever their transport; the
// validation rules are set apart (the two types name that setter apart).
func (s *Server) configureExecutor(h executorConfig, schema *ast.Schema, queries graphql.Cache[*ast.QueryDocument], persisted graphql.Cache[string]) {
	h.SetQueryCache(queries)
	lim := s.cfg.Limits
	h.SetParserTokenLimit(lim.MaxTokens)
	// "Did you mean ...?" would map the schema for a caller that cannot
	// introspect it.
	h.SetDisableSuggestion(!s.cfg.Dev)
	if s.cfg.Dev {
		h.Use(extension.Introspection{})
	} else {
		h.AroundRootFields(hideTypes)
	}
	h.Use(extension.AutomaticPersistedQuery{Cache: persisted})
	h.Use(queryLimits{maxDepth: lim.MaxDepth, maxAliases: lim.MaxAliases})
	h.Use(extension.FixedComplexityLimit(lim.MaxComplexity))
	// After the limits, which bound its walk of the selection.
	h.Use(mutationChecks{schema: schema})
	h.AroundOperations(s.resolver.AuditReads)
	h.AroundOperations(s.limitLookups)
	h.Use(s.shared)
	h.SetErrorPresenter(s.presentError)
	h.SetRecoverFunc(func(ctx context.Context, v any) error {
		s.cfg.Logger.Error("panic in resolver", "panic", v, "path", graphql.GetPath(ctx).String())
		return &c360.Error{Code: c360.EINTERNAL, Message: "internal error"}
	})
}

// presentError maps every resolver error to a GraphQL error with
// extensions.code. Internal errors are logged and answered with a generic
// message: their text never reaches the client.
func (s *Server) presentError(ctx context.Context, err error) *gqlerror.Error {
	var gqlErr *gqlerror.Error
	if errors.As(err, &gqlErr) && gqlErr.Err != nil && gqlErr.Err.Error() == "introspection disabled" && !s.cfg.Dev {
		// gqlgen refuses introspection with a plain error, its only signal;
		// a field middleware could catch it earlier, but would run on every
		// field of every query.
		return &gqlerror.Error{Message: "introspection is disabled on this server", Path: gqlErr.Path,
			Extensions: map[string]any{"code": c360.EFORBIDDEN}}
	}
	if errors.As(err, &gqlErr) && gqlErr.Err == nil {
		// Parse and validation errors from gqlparser keep their message and
		// locations; their code joins the contract's set.
		if gqlErr.Extensions == nil {
			gqlErr.Extensions = map[string]any{}
		}
		if c, ok := gqlErr.Extensions["code"]; ok && c != c360.EINVALID {
			gqlErr.Extensions["reason"] = c
		}
		gqlErr.Extensions["code"] = c360.EINVALID
		return gqlErr
	}
	code := c360.ErrorCode(err)
	if code == c360.EINTERNAL {
		var domainErr *c360.Error
		// A field whose request or subscription the client ended (a
		// subscription stopped while it started) failed for that alone:
		// nothing is wrong, and no one is there to answer.
		ended := ctx.Err() != nil && errors.Is(err, context.Canceled)
		if !errors.As(err, &domainErr) && !ended {
			s.cfg.Logger.Error("graphql resolver", "error", err, "path", graphql.GetPath(ctx).String())
		}
	} else if code == "" {
		code = c360.EINTERNAL
	}
	out := &gqlerror.Error{
		Message:    c360.ErrorMessage(err),
		Path:       graphql.GetPath(ctx),
		Extensions: map[string]any{"code": code},
	}
	if errors.As(err, &gqlErr) && len(out.Path) == 0 {
		// Refused before execution (mutationChecks): the field it names
		// is on the error, not in the context.
		out.Path, out.Locations = gqlErr.Path, gqlErr.Locations
	}
	return out
}

// authenticate resolves the Bearer API key to a principal. A missing or bad
// key is refused before any resolver runs; an address that keeps presenting
// bad keys, before the key is looked up (authenticateKey).
func (s *Server) authenticate(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodOptions {
			next.ServeHTTP(w, r)
			return
		}
		if err := s.readBody(w, r); err != nil {
			writeGraphQLError(w, StatusOf(err), err)
			return
		}
		if err := checkBatch(r); err != nil {
			writeGraphQLError(w, http.StatusBadRequest, err)
			return
		}
		if err := checkTransport(r); err != nil {
			writeGraphQLError(w, statusForTransport(r, err), err)
			return
		}
		key, ok := bearer(r.Header.Get("Authorization"))
		if !ok {
			writeGraphQLError(w, http.StatusUnauthorized, c360.Errorf(c360.EUNAUTHENTICATED, "missing API key: send Authorization: Bearer <key>"))
			return
		}
		p, err := s.authenticateKey(r.Context(), w.Header(), s.clientOf(r), key)
		if err != nil {
			if c360.ErrorCode(err) == c360.EINTERNAL {
				s.cfg.Logger.Error("authenticate", "error", err)
			}
			writeGraphQLError(w, StatusOf(err), err)
			return
		}
		if !s.limitKey(w, p) {
			return
		}
		ctx := c360.NewContextWithPrincipal(r.Context(), p)
		// Decoded only for a caller who may run it, and once: postTransport
		// runs what it decoded.
		if body, ok := postBody(r); ok {
			params, err := decodeParams(body)
			if err != nil {
				writeGraphQLError(w, http.StatusBadRequest, err)
				return
			}
			ctx = withParams(ctx, params)
		}
		next.ServeHTTP(w, r.WithContext(ctx))
	})
}

func bearer(h string) (string, bool) {
	scheme, token, ok := strings.Cut(h, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") || strings.TrimSpace(token) == "" {
		return "", false
	}
	return strings.TrimSpace(token), true
}

// errTooLarge marks a body over the limit; it maps to 413.
type errTooLarge struct{ err *c360.Error }

func (e errTooLarge) Error() string { return e.err.Error() }
func (e errTooLarge) Unwrap() error { return e.err }

// errBodyTimeout marks a body that did not arrive within
// Config.BodyReadTimeout; it maps to 408.
type errBodyTimeout struct{ err *c360.Error }

func (e errBodyTimeout) Error() string { return e.err.Error() }
func (e errBodyTimeout) Unwrap() error { return e.err }

// readBody reads the whole body, bounded by MaxBodyBytes, so an oversized
// request is refused with 413 before anything parses it.
func (s *Server) readBody(w http.ResponseWriter, r *http.Request) error {
	if r.Body == nil || r.Method == http.MethodGet {
		return nil
	}
	tooLarge := c360.Errorf(c360.EINVALID, "request body larger than %d bytes", s.cfg.MaxBodyBytes)
	if r.ContentLength > s.cfg.MaxBodyBytes {
		return errTooLarge{tooLarge}
	}
	b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, s.cfg.MaxBodyBytes))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return errTooLarge{tooLarge}
		}
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return errBodyTimeout{c360.Errorf(c360.EINVALID, "the request body did not arrive within %s: send it whole at once", s.cfg.BodyReadTimeout)}
		}
		return c360.Errorf(c360.EINVALID, "could not read the request body")
	}
	r.Body = &bufferedBody{Reader: bytes.NewReader(b), b: b}
	return nil
}

// graphQLMethods are the methods /graphql serves (OPTIONS answers with
// them), which a 405 names in its Allow header.
const graphQLMethods = "OPTIONS, GET, POST"

// errMethod marks a request refused for its method: 405, with the methods
// that would serve it in Allow (RFC 9110 requires the header).
type errMethod struct {
	err   *c360.Error
	allow string
}

func (e errMethod) Error() string { return e.err.Error() }
func (e errMethod) Unwrap() error { return e.err }

// checkTransport refuses, with a coded GraphQL error, the requests gqlgen's
// transports would answer without extensions.code, before the key is
// checked: other methods, bodies that are not JSON, query strings that do
// not parse. A mutation over GET is getTransport's to refuse, once its
// operation is known.
func checkTransport(r *http.Request) error {
	switch r.Method {
	case http.MethodPost:
		mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
		if mt != "application/json" {
			return c360.Errorf(c360.EINVALID, "POST /graphql takes Content-Type: application/json")
		}
	case http.MethodGet:
		// gqlgen's GET transport answers these without extensions.code.
		params, err := url.ParseQuery(r.URL.RawQuery)
		if err != nil {
			return c360.Errorf(c360.EINVALID, "the URL's query string is not valid: it has a malformed %%-escape or a ';'")
		}
		for _, key := range []string{"variables", "extensions"} {
			// Blank counts as given, as gqlgen's GET transport takes it.
			if v := params.Get(key); v != "" && !objectOrNull(strings.TrimSpace(v)) {
				return c360.Errorf(c360.EINVALID, "%s must be a JSON object", key)
			}
		}
	default:
		return errMethod{c360.Errorf(c360.EINVALID, "/graphql takes GET and POST, not %s", r.Method), graphQLMethods}
	}
	return nil
}

// objectOrNull reports whether s, trimmed, is a JSON object or null.
func objectOrNull(s string) bool {
	return (strings.HasPrefix(s, "{") || s == "null") && json.Valid([]byte(s))
}

// statusForTransport is the status of a request checkTransport refused.
func statusForTransport(r *http.Request, err error) int {
	if r.Method == http.MethodPost {
		return http.StatusUnsupportedMediaType
	}
	return StatusOf(err)
}

// sseWriter bounds each write of an SSE stream by the websocket write
// timeout: a client that stops reading would otherwise hold its stream, and
// the goroutine writing to it, for as long as its TCP window lasts open.
// A write that fails ends the request's context, and with it the stream.
func (s *Server) sseWriter(w http.ResponseWriter, r *http.Request) (http.ResponseWriter, *http.Request, context.CancelFunc) {
	ctx, cancel := context.WithCancel(r.Context())
	return &deadlineWriter{ResponseWriter: w, rc: http.NewResponseController(w), timeout: s.ws.cfg.WriteTimeout, cancel: cancel},
		r.WithContext(ctx), cancel
}

type deadlineWriter struct {
	http.ResponseWriter
	rc      *http.ResponseController
	timeout time.Duration
	cancel  context.CancelFunc
}

func (w *deadlineWriter) Write(b []byte) (int, error) {
	w.rc.SetWriteDeadline(time.Now().Add(w.timeout))
	n, err := w.ResponseWriter.Write(b)
	if err != nil {
		w.cancel()
	}
	return n, err
}

func (w *deadlineWriter) Flush() {
	w.rc.SetWriteDeadline(time.Now().Add(w.timeout))
	if err := w.rc.Flush(); err != nil {
		w.cancel()
	}
}

func (w *deadlineWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
