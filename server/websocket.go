package server

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
	"unicode/utf8"

	"github.com/99designs/gqlgen/graphql"
	"github.com/99designs/gqlgen/graphql/handler/transport"
	"github.com/gorilla/websocket"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/c360dev/c360"
	"github.com/c360dev/c360/resolver"
)

// Close codes of GraphQL websocket connections. The 44xx codes are those of
// the graphql-transport-ws protocol; 1001 and 1013 are RFC 6455's, which
// the graphql-ws client retries.
const (
	CloseNormal                   = 1000
	CloseGoingAway                = 1001 // the server is shutting down: reconnect and resume
	CloseBadRequest               = 4400 // a message that is not JSON or not of the protocol
	CloseUnauthorized             = 4401 // subscribe before connection_init
	CloseForbidden                = 4403 // missing or bad API key in connection_init
	CloseSubprotocolNotAcceptable = 4406 // none of the offered subprotocols is served
	CloseInitTimeout              = 4408 // no connection_init within the init timeout
	CloseSubscriberExists         = 4409 // subscribe with the id of an active subscription
	CloseTooManyInit              = 4429 // a second connection_init
	CloseTooSlow                  = 1013 // try again later: a subscriber fell behind; reconnect and resume with after
	CloseUnavailable              = 1013 // try again later: the database did not answer a subscription's reads (reconnect and resume with after), or connection_init's key lookup
	CloseTryAgainLater            = 1013 // connection_init from an address over its limit of failed authentications
	CloseInternal                 = 4500 // the server could not verify the key, for another reason than an unavailable database
)

// Subprotocols served on /graphql, in order of preference.
const (
	protocolTransportWS = "graphql-transport-ws"
	protocolGraphQLWS   = "graphql-ws" // legacy subscriptions-transport-ws
)

// WebsocketConfig configures GraphQL over WebSocket.
type WebsocketConfig struct {
	// AllowedOrigins are the browser origins (scheme://host[:port]) allowed
	// to open a websocket; "*" allows any. Empty allows requests without an
	// Origin header (non-browser clients) and same-origin pages only.
	AllowedOrigins []string
	// InitTimeout is how long a connection may go without connection_init
	// before it is closed with 4408 (default 10s).
	InitTimeout time.Duration
	// PingInterval is how often the server pings; a peer silent for two
	// intervals is disconnected (default 25s).
	PingInterval time.Duration
	// ReadLimit bounds one client message (default 64 KiB).
	ReadLimit int64
	// WriteTimeout bounds one write to a client (default 10s).
	WriteTimeout time.Duration
	// MaxSubscriptions bounds the active subscriptions of one connection
	// (default 100); more are refused with an error message.
	MaxSubscriptions int
}

func (c *WebsocketConfig) defaults() {
	if c.InitTimeout <= 0 {
		c.InitTimeout = 10 * time.Second
	}
	if c.PingInterval <= 0 {
		c.PingInterval = 25 * time.Second
	}
	if c.ReadLimit <= 0 {
		c.ReadLimit = 64 << 10
	}
	if c.WriteTimeout <= 0 {
		c.WriteTimeout = 10 * time.Second
	}
	if c.MaxSubscriptions <= 0 {
		c.MaxSubscriptions = 100
	}
}

// ParseOrigins splits C360_ALLOWED_ORIGINS (comma-separated) into origins,
// as a browser's Origin header writes them: scheme://host[:port], lowercase,
// without a path and without a port that is the scheme's default (a browser
// sends https://a.example, never https://a.example:443, so the latter is
// normalized to the former). An entry that is not such an origin (no
// scheme, a path, a query) would never match a browser's Origin, and is
// refused. "*" allows every origin.
func ParseOrigins(s string) ([]string, error) {
	var out []string
	for _, o := range strings.Split(s, ",") {
		o = strings.TrimSpace(o)
		if o == "" {
			continue
		}
		if o == "*" {
			out = append(out, o)
			continue
		}
		c, ok := canonicalOrigin(o)
		if !ok {
			return nil, fmt.Errorf("%q is not an origin: want scheme://host[:port], such as https://console.example.com", strings.ToLower(strings.TrimRight(o, "/")))
		}
		out = append(out, c)
	}
	return out, nil
}

// canonicalOrigin writes origin o as ParseOrigins keeps it: lowercase,
// without a trailing slash or the scheme's default port. It is false when o
// is not scheme://host[:port]. Both the allowed origins and a request's
// Origin header go through it, so that https://a.example:443 and
// https://a.example match whichever side writes the port.
func canonicalOrigin(o string) (string, bool) {
	o = strings.ToLower(strings.TrimRight(o, "/"))
	u, err := url.Parse(o)
	if err != nil || u.Scheme == "" || u.Host == "" || u.Opaque != "" || u.User != nil ||
		u.Path != "" || u.RawQuery != "" || u.Fragment != "" || strings.HasSuffix(o, "?") || strings.HasSuffix(o, "#") {
		return "", false
	}
	host := u.Host
	if port := u.Port(); (u.Scheme == "https" && port == "443") || (u.Scheme == "http" && port == "80") {
		host = strings.TrimSuffix(host, ":"+port)
	}
	return u.Scheme + "://" + host, true
}

// Buffer sizes of a GraphQL websocket connection: its own read buffer, and
// the write buffers it borrows from a pool for the time of one message (a
// longer message goes out in more than one frame). The read buffer is the
// smallest allocation size above 256 bytes: gorilla reads through the
// reader the upgrade hijacked when it is larger than that (see
// upgradeWriter.Hijack).
const (
	wsReadBufferSize  = 288
	wsWriteBufferSize = 4096
)

// websockets accepts GraphQL websocket connections with gorilla/websocket
// for gqlgen's transport, and corrects the transport where it departs from
// the graphql-transport-ws protocol (see wsConn).
type websockets struct {
	cfg      WebsocketConfig
	log      *slog.Logger
	upgrader websocket.Upgrader
	// transport serves each connection, running operations on exec.
	transport transport.Websocket
	exec      graphql.GraphExecutor
	// clientOf is the bucket key of a handshake's client (Server.clientOf):
	// connection_init's failed keys are limited per client address.
	clientOf func(*http.Request) string

	mu    sync.Mutex
	conns map[*wsConn]struct{}

	open   prometheus.Gauge
	closes *prometheus.CounterVec
}

var _ transport.WebsocketImplementation = (*websockets)(nil)

func newWebsockets(cfg WebsocketConfig, log *slog.Logger, reg *prometheus.Registry) *websockets {
	cfg.defaults()
	ws := &websockets{cfg: cfg, log: log, conns: map[*wsConn]struct{}{},
		open: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "c360_websocket_connections", Help: "Open GraphQL websocket connections.",
		}),
		closes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "c360_websocket_closes_total", Help: "GraphQL websocket connections closed by the server, by close code.",
		}, []string{"code"}),
	}
	reg.MustRegister(ws.open, ws.closes)
	ws.upgrader = websocket.Upgrader{
		HandshakeTimeout: 10 * time.Second,
		// An idle connection should hold as few bytes as possible. With
		// zero sizes and no pool, gorilla would keep net/http's 4 KiB
		// reader and writer for the life of the connection. Instead it
		// reads through a small buffer (client messages are small and
		// rare; a larger one is read straight from the socket) and
		// borrows a write buffer from a pool only while it writes a
		// message. net/http's buffers are garbage once its handler returns
		// (see serve). The read buffer is the one upgradeWriter.Hijack
		// hands over, which gorilla adopts when ReadBufferSize is zero: the
		// connection can then tell when gorilla holds nothing unread (see
		// wsConn.NextReader).
		ReadBufferSize:  0,
		WriteBufferSize: wsWriteBufferSize,
		WriteBufferPool: &sync.Pool{},
		Subprotocols:    []string{protocolTransportWS, protocolGraphQLWS},
		// serve checks the origin before gqlgen runs; the upgrade comes
		// only through it.
		CheckOrigin: func(*http.Request) bool { return true },
		Error: func(w http.ResponseWriter, r *http.Request, status int, reason error) {
			writeGraphQLError(w, status, c360.Errorf(c360.EINVALID, "websocket handshake: %s", reason.Error()))
			if uw, ok := w.(*upgradeWriter); ok {
				// gqlgen answers a failed upgrade once more, without a code:
				// the client gets this answer alone.
				uw.answered = true
			}
		},
	}
	return ws
}

// originAllowed admits requests without Origin (non-browser clients), from
// the server's own origin, and from the configured origins.
func (ws *websockets) originAllowed(r *http.Request) bool {
	origin := r.Header.Get("Origin")
	if origin == "" {
		return true
	}
	u, err := url.Parse(origin)
	if err != nil || u.Host == "" {
		return false
	}
	if strings.EqualFold(u.Host, r.Host) {
		return true
	}
	o, ok := canonicalOrigin(origin)
	for _, a := range ws.cfg.AllowedOrigins {
		if a == "*" || ok && a == o {
			return true
		}
	}
	return false
}

// wsState carries a connection from the request that opened it (by way of
// its upgradeWriter) to Accept, and to the subscriptions that may need to
// close it. It is also the connection's context (see serve), which is
// never cancelled and holds few values: the request's http.ServerContextKey
// and http.LocalAddrContextKey, and itself under wsStateKey.
type wsState struct {
	context.Context // context.Background()
	srv, laddr      any

	mu   sync.Mutex
	conn *wsConn
	// handoff receives once net/http's handler may return: the connection
	// was hijacked, or gqlgen is done with the request. The handler drops
	// it once it returns.
	handoff chan struct{}
}

func newWSState(r *http.Request) *wsState {
	ctx := r.Context()
	return &wsState{Context: context.Background(), handoff: make(chan struct{}, 1),
		srv: ctx.Value(http.ServerContextKey), laddr: ctx.Value(http.LocalAddrContextKey)}
}

// Value implements context.Context.
func (st *wsState) Value(key any) any {
	switch key {
	case wsStateKey{}:
		return st
	case http.ServerContextKey:
		return st.srv
	case http.LocalAddrContextKey:
		return st.laddr
	}
	return nil
}

func (st *wsState) String() string { return "graphql websocket connection" }

func (st *wsState) handOff() {
	st.mu.Lock()
	handoff := st.handoff
	st.mu.Unlock()
	select {
	case handoff <- struct{}{}:
	default: // nil once the handler returned
	}
}

type wsStateKey struct{}

func (st *wsState) get() *wsConn {
	if st == nil {
		return nil
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	return st.conn
}

// serve is the entry for websocket upgrades of /graphql: it checks the
// origin, then hands the request to gqlgen's transport t, which calls Accept
// and runs operations on exec. It makes sure the connection is closed when
// gqlgen is done with it.
//
// The transport runs on the executor directly, not under gqlgen's
// handler.Server, whose ServeHTTP would only pick the transport and recover
// panics (finish does), and add 440 bytes of frames to every idle
// connection's read loop (see wsConn.NextReader) and a copy of the request
// that its deferred recover keeps alive.
//
// gqlgen's transport reads the connection until it ends, on the goroutine
// that calls it. That is not the HTTP handler's: net/http's goroutine for
// the connection keeps its 4 KiB reader and writer, its request and its
// response alive for as long as the handler runs, none of which a hijacked
// connection needs. So gqlgen runs on a goroutine of its own, and the
// handler returns as soon as the connection is hijacked (or gqlgen is done,
// when the upgrade failed), letting net/http's state go. The connection's
// context is therefore not the request's, which net/http cancels when the
// handler returns; nor is it derived from it, which would keep net/http's
// per-connection contexts (and the map of their children) alive as long as
// the socket. It keeps two of the request's values, those net/http sets
// (middleware here sets none), and it is never cancelled: the connection
// ends when its socket does (closeAll closes them all at shutdown), and
// gqlgen then ends its subscriptions, whose contexts are its own (a
// context to cancel here would cost every connection a cancelCtx, and the
// map of its children).
func (ws *websockets) serve(t transport.Websocket, exec graphql.GraphExecutor) http.Handler {
	ws.transport, ws.exec = t, exec
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !ws.originAllowed(r) {
			writeGraphQLError(w, http.StatusForbidden, c360.Errorf(c360.EFORBIDDEN, "origin %q is not allowed: see C360_ALLOWED_ORIGINS", r.Header.Get("Origin")))
			return
		}
		st := newWSState(r)
		ctx := resolver.WithResumeHandler(st, func(err error) {
			c := st.get()
			switch {
			case c == nil:
			case c360.ErrorCode(err) == c360.ERATELIMITED:
				c.fail(CloseTooSlow, "Subscriber too slow: resume with after")
			case errors.Is(err, resolver.ErrReadNotRecorded):
				c.fail(CloseUnavailable, "Audit log unavailable: resume with after")
			default:
				c.fail(CloseUnavailable, "Database unavailable: resume with after")
			}
		})
		// gqlgen serves the connection on this goroutine until it ends,
		// reading it beneath the goroutine's first frame for as long as it
		// lives: every byte of frame above the read counts (see
		// wsConn.NextReader), so this is the only one of ours. It keeps
		// no reference to the request: gqlgen keeps what it needs.
		uw, r := &upgradeWriter{ResponseWriter: w, st: st}, r.WithContext(ctx)
		go func() {
			defer ws.finish(st)
			ws.transport.Do(uw, r, ws.exec)
		}()
		<-st.handoff
		st.mu.Lock()
		st.handoff = nil
		st.mu.Unlock()
	})
}

// finish ends a connection once gqlgen is done with it, or panicked (a
// panic does not end the process, as gqlgen's handler would not let it):
// it closes the connection and lets net/http's handler return if it has
// not.
func (ws *websockets) finish(st *wsState) {
	if v := recover(); v != nil {
		ws.log.Error("panic in graphql websocket", "panic", v)
	}
	if c := st.get(); c != nil {
		c.fail(CloseNormal, "")
	}
	st.handOff()
}

// Accept implements transport.WebsocketImplementation with gorilla/websocket.
func (ws *websockets) Accept(w http.ResponseWriter, r *http.Request, opts transport.WebsocketAcceptOptions) (transport.WebsocketConn, error) {
	conn, err := ws.upgrader.Upgrade(w, r, opts.ResponseHeader)
	if err != nil {
		return nil, fmt.Errorf("websocket upgrade: %w", err)
	}
	offered := websocket.Subprotocols(r)
	// The client's address is read before the headers go: behind a trusted
	// proxy it is in X-Forwarded-For.
	client := ws.clientOf(r)
	// gqlgen keeps the request's headers for the life of the connection and
	// hands them to every operation, which ours do not read: the handshake
	// was their last use.
	r.Header = nil
	c := &wsConn{ws: ws, conn: conn, legacy: conn.Subprotocol() != protocolTransportWS, client: client}
	ws.mu.Lock()
	ws.conns[c] = struct{}{}
	ws.mu.Unlock()
	ws.open.Inc()
	if uw, ok := w.(*upgradeWriter); ok {
		c.br, c.raw = uw.br, uw.raw
		uw.br, uw.raw = nil, nil
		st := uw.st
		st.mu.Lock()
		st.conn = c
		st.mu.Unlock()
		st.handOff() // net/http's handler may return: the connection is ours
	}
	// The read limit is gqlgen's to set (PayloadReadLimit, server.go),
	// through SetReadLimit below, before it reads anything.
	conn.SetReadDeadline(time.Now().Add(ws.cfg.InitTimeout + 2*ws.cfg.PingInterval))
	conn.SetPongHandler(func(string) error {
		return conn.SetReadDeadline(time.Now().Add(2 * ws.cfg.PingInterval))
	})
	if len(offered) > 0 && conn.Subprotocol() == "" {
		c.fail(CloseSubprotocolNotAcceptable, "Subprotocol not acceptable")
		return c, nil
	}
	c.mu.Lock()
	c.initTimer = time.AfterFunc(ws.cfg.InitTimeout, func() {
		c.mu.Lock()
		seen := c.initSeen
		c.mu.Unlock()
		if !seen {
			c.fail(CloseInitTimeout, "Connection initialisation timeout")
		}
	})
	c.pingTimer = time.AfterFunc(ws.cfg.PingInterval, c.ping)
	c.mu.Unlock()
	return c, nil
}

// closeAll closes every connection with 1001: clients reconnect (to another
// replica) and resume.
func (ws *websockets) closeAll() {
	ws.mu.Lock()
	conns := make([]*wsConn, 0, len(ws.conns))
	for c := range ws.conns {
		conns = append(conns, c)
	}
	ws.mu.Unlock()
	// At once: a client that does not read holds its close frame's write
	// for up to the write timeout, which must not hold up the others.
	var wg sync.WaitGroup
	for _, c := range conns {
		wg.Go(func() { c.fail(CloseGoingAway, "Server shutting down: reconnect") })
	}
	wg.Wait()
}

// upgradeWriter is the response writer gqlgen gets for a websocket upgrade.
// It lets gorilla hijack through writers that wrap the server's (the
// metrics middleware's) by way of http.ResponseController, and it writes
// nothing once the connection is hijacked: by then net/http's handler may
// have returned (see serve), and a response writer must not be used after
// that. It also lets go of net/http's writer then: gqlgen keeps the writer
// it was given for as long as the connection lives.
//
// It also gives gorilla the reader it reads the connection through: a
// small one of its own in place of net/http's, so that the connection knows
// whether gorilla holds bytes it has not read yet (see wsConn.NextReader).
type upgradeWriter struct {
	http.ResponseWriter
	hijacked bool
	// answered is set once a refused handshake was answered: whatever is
	// written after is dropped.
	answered bool
	st       *wsState
	// br is the reader handed to gorilla; raw is the socket, when it can
	// be waited on for data without reading it. Accept takes both.
	br  *bufio.Reader
	raw syscall.RawConn
}

func (w *upgradeWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	conn, brw, err := http.NewResponseController(w.ResponseWriter).Hijack()
	if err != nil {
		return conn, brw, err
	}
	w.hijacked, w.ResponseWriter = true, nil
	// A reader holding bytes already is left alone: gorilla refuses the
	// upgrade then (the client sent data before the handshake was done).
	if brw.Reader.Buffered() == 0 {
		w.br = bufio.NewReaderSize(conn, wsReadBufferSize)
		brw = bufio.NewReadWriter(w.br, brw.Writer)
		w.raw = rawConn(conn)
	}
	return conn, brw, nil
}

func (w *upgradeWriter) Header() http.Header {
	if w.hijacked {
		return http.Header{}
	}
	return w.ResponseWriter.Header()
}

func (w *upgradeWriter) WriteHeader(code int) {
	if !w.hijacked && !w.answered {
		w.ResponseWriter.WriteHeader(code)
	}
}

func (w *upgradeWriter) Write(b []byte) (int, error) {
	if w.hijacked {
		return 0, http.ErrHijacked
	}
	if w.answered {
		return len(b), nil
	}
	return w.ResponseWriter.Write(b)
}

// errProtocol ends gqlgen's read loop after the connection was closed for a
// protocol violation; gqlgen treats it as a peer close and stays quiet.
var errProtocol = fmt.Errorf("graphql websocket protocol violation: %w", transport.ErrWebsocketClosed)

// wsConn is one GraphQL websocket connection: gqlgen's transport reads and
// writes through it. It holds the protocol state gqlgen does not check:
//   - a subscribe before connection_init closes with 4401 (gqlgen: 1002);
//   - a second connection_init closes with 4429 (gqlgen: 1002);
//   - a subscribe with the id of an active subscription closes with 4409
//     (gqlgen replaces the running subscription);
//   - a message that is not JSON, not of the protocol, or a subscribe
//     without id closes with 4400 (gqlgen: 1000 or no close at all);
//   - no connection_init within the init timeout closes with 4408 (gqlgen:
//     1002);
//   - nothing more is sent for a subscription the client completed (gqlgen
//     sends complete back); on the legacy protocol, only the complete that
//     answers its stop;
//   - a connection holds at most MaxSubscriptions active subscriptions;
//   - gqlgen sees each subscription under an id of its own (the client's
//     id and a sequence number), so that a client reusing an id right after
//     completing it starts a new subscription, never one that the ending
//     one's cleanup in gqlgen unregisters and leaves running unseen.
//
// Writes are framed here from gqlgen's message fields, without marshaling
// the payload again.
type wsConn struct {
	ws     *websockets
	conn   *websocket.Conn
	legacy bool
	client string // the handshake's client address (websockets.clientOf)
	// br is the reader gorilla reads the socket through, and raw the
	// socket; raw is nil when it cannot be waited on (see NextReader).
	br  *bufio.Reader
	raw syscall.RawConn

	wmu sync.Mutex // one writer at a time (gorilla allows one)

	mu       sync.Mutex
	initSeen bool
	// subs holds every subscription gqlgen runs, until gqlgen ends it
	// (one the client completed may still be winding down). A slice: a
	// connection holds one or a few, and a map of one entry costs ten
	// times as much.
	subs      []wsSub
	seq       uint64
	closing   bool // a close frame was sent
	closed    bool // the network connection was closed
	initTimer *time.Timer
	pingTimer *time.Timer

	// initPayload is connection_init's payload, until websocketInit takes it.
	initPayload json.RawMessage
	// principal is who connection_init authenticated; its key is checked
	// again on every subscribe and every ping, so that a revoked key stops
	// an open connection too (close 4403).
	principal *c360.Principal
	auth      c360.APIKeyService
	// allow takes a token of the key's rate limit for each operation the
	// connection starts, as each HTTP request takes one.
	allow func() bool
}

// takeInitPayload returns connection_init's payload (nil without one) and
// forgets it: the bytes are zeroed once decoded.
func (c *wsConn) takeInitPayload() transport.InitPayload {
	c.mu.Lock()
	raw := c.initPayload
	c.initPayload = nil
	c.mu.Unlock()
	if raw == nil {
		return nil
	}
	var p transport.InitPayload
	json.Unmarshal(raw, &p) // an object or null: checkLocked made sure
	clear(raw)
	return p
}

// keyRevoked closes the connection with 4403 when the key it was opened
// with no longer stands. A database that cannot answer now is no reason to
// close it: the next check asks again.
func (c *wsConn) keyRevoked() error {
	c.mu.Lock()
	p, auth := c.principal, c.auth
	c.mu.Unlock()
	if p == nil || auth == nil {
		return nil
	}
	if err := auth.KeyActive(context.Background(), p); c360.ErrorCode(err) == c360.EUNAUTHENTICATED {
		return c.fail(CloseForbidden, "Forbidden")
	}
	return nil
}

// wsSub is a subscription gqlgen runs: the client's id for it, the id
// gqlgen knows it by, and whether the client completed it (nothing more is
// sent for it then). The client has it running until then.
type wsSub struct {
	id, internal string
	completed    bool
}

// activeLocked returns the subscription the client has running under id.
func (c *wsConn) activeLocked(id string) *wsSub {
	for i := range c.subs {
		if s := &c.subs[i]; s.id == id && !s.completed {
			return s
		}
	}
	return nil
}

// runningLocked returns the subscription gqlgen runs under internal.
func (c *wsConn) runningLocked(internal string) (int, *wsSub) {
	for i := range c.subs {
		if s := &c.subs[i]; s.internal == internal {
			return i, s
		}
	}
	return -1, nil
}

var (
	_ transport.WebsocketConn        = (*wsConn)(nil)
	_ transport.WebsocketReadLimiter = (*wsConn)(nil)
)

// NextReader returns the next client message that passes the protocol
// checks; a violation closes the connection with its code.
//
// gqlgen's read loop spends a connection's idle life here, and the depth at
// which it idles sets what the runtime gives every new goroutine: it starts
// them with the average stack in use it saw at the last GC, rounded up to
// a power of two (2 KiB when that average, plus 928 bytes of guard, is at
// most 2 KiB). Idle connections are most of the goroutines of a server
// holding subscriptions, three each, and one of the three, gqlgen's
// closeOnCancel, never needs more than 2 KiB nor gives back what it was
// started with. Blocked in gorilla's read, the loop would idle 3.2 KiB deep
// (a dozen frames below gqlgen's); it waits for the socket to have data
// here instead, a few small frames below gqlgen's, when gorilla holds no
// unread bytes, and reads once there is something to read: 2 KiB deep.
//
// The loop's own stack stays at the 8 KiB that decoding a message in
// gqlgen grows it to: the runtime halves a stack at GC only when less than
// a quarter of it is in use, counting 800 bytes of guard, and gqlgen's
// frames alone take 1.3 KiB.
func (c *wsConn) NextReader() (int, io.Reader, error) {
	for {
		if c.raw != nil && c.br.Buffered() == 0 {
			waitReadable(c.raw)
		}
		typ, r, skip, err := c.readMessage()
		if !skip {
			return typ, r, err
		}
	}
}

// waitReadable blocks until the socket has data to read, is at its end, or
// fails: closed, or past its read deadline. Reading comes after, and reports
// the failure.
func waitReadable(raw syscall.RawConn) {
	raw.Read(peekReadable)
}

// readMessage reads the next client message and checks it. It reports skip
// for a message gqlgen does not see.
func (c *wsConn) readMessage() (typ int, r io.Reader, skip bool, err error) {
	typ, data, err := c.conn.ReadMessage()
	if err != nil {
		if websocket.IsCloseError(err, websocket.CloseNormalClosure, websocket.CloseNoStatusReceived, websocket.CloseGoingAway) {
			return 0, nil, false, transport.ErrWebsocketClosed
		}
		c.mu.Lock()
		closing := c.closing
		c.mu.Unlock()
		if closing {
			return 0, nil, false, errProtocol
		}
		return 0, nil, false, fmt.Errorf("read websocket: %w", err)
	}
	c.conn.SetReadDeadline(time.Now().Add(2 * c.ws.cfg.PingInterval))
	if typ != websocket.TextMessage {
		return 0, nil, false, c.fail(CloseBadRequest, "Invalid message received: want text")
	}
	m, detail, ok := decodeEnvelope(data)
	if !ok {
		return 0, nil, false, c.fail(CloseBadRequest, "Invalid message received"+detail)
	}
	skip, internal, err := c.check(m.Type, m.ID, m.Payload)
	if err != nil {
		return 0, nil, false, err
	}
	if skip {
		return 0, nil, true, nil
	}
	if m.Type == "connection_init" && len(m.Payload) > 0 {
		// The payload goes to websocketInit from here, not through
		// gqlgen, which would keep it (an empty map once read) and add it
		// to the context of every subscription.
		c.mu.Lock()
		c.initPayload = m.Payload
		c.mu.Unlock()
		return typ, strings.NewReader(`{"type":"connection_init"}`), false, nil
	}
	if internal != m.ID {
		data, _ = json.Marshal(struct {
			Type    string          `json:"type"`
			ID      string          `json:"id"`
			Payload json.RawMessage `json:"payload,omitempty"`
		}{m.Type, internal, m.Payload})
	}
	return typ, bytes.NewReader(data), false, nil
}

// envelope is a client message of the protocol: its type, id and payload.
type envelope struct {
	Type    string
	ID      string
	Payload json.RawMessage
}

// envelopeKeys are the keys of a client message.
var envelopeKeys = []string{"type", "id", "payload"}

// decodeEnvelope decodes a client message by strictObject's rules, as a
// POST body is read: encoding/json, and gqlgen after it, would take the
// last copy of a key given twice, or a key in another case ("Payload"),
// where a proxy that reads the first copy sees another message. A refusal
// is told as a detail to follow "Invalid message received".
func decodeEnvelope(data []byte) (m envelope, detail string, ok bool) {
	err := strictObject(data, objectRules{noun: "message", keys: envelopeKeys,
		shape: `{"type": ..., "id": ..., "payload": {...}}`}, func(i int) (any, string) {
		switch i {
		case 0:
			return &m.Type, "a string"
		case 1:
			return &m.ID, "a string"
		}
		return &m.Payload, "JSON"
	})
	if err != nil {
		return m, ": " + c360.ErrorMessage(err), false
	}
	return m, "", true
}

// check applies the protocol rules to one client message. It reports
// whether gqlgen should not see the message, and the id gqlgen knows it by.
func (c *wsConn) check(typ, id string, payload json.RawMessage) (skip bool, internal string, err error) {
	skip, err = c.checkLocked(typ, id, payload)
	internal = id
	if err == nil && !skip && (typ == "subscribe" || typ == "start") {
		if err = c.keyRevoked(); err == nil {
			c.mu.Lock()
			allow := c.allow
			c.mu.Unlock()
			if allow != nil && !allow() {
				c.refuse(id, "too many requests for this API key: retry later")
				return true, id, nil
			}
		}
	}
	if err == nil && !skip {
		c.mu.Lock()
		internal = c.internalLocked(typ, id)
		c.mu.Unlock()
	}
	return skip, internal, err
}

// internalLocked maps a passed client message to the id gqlgen knows: a
// subscribe registers a new one, a complete retires its subscription's.
func (c *wsConn) internalLocked(typ, id string) string {
	subscribe, complete := "subscribe", "complete"
	if c.legacy {
		subscribe, complete = "start", "stop"
	}
	switch typ {
	case subscribe:
		c.seq++
		internal := id + "#" + strconv.FormatUint(c.seq, 36)
		c.subs = append(c.subs, wsSub{id: id, internal: internal})
		return internal
	case complete:
		if sub := c.activeLocked(id); sub != nil {
			sub.completed = true
			return sub.internal
		}
	}
	return id
}

func (c *wsConn) checkLocked(typ, id string, payload json.RawMessage) (bool, error) {
	subscribe, complete := "subscribe", "complete"
	if c.legacy {
		subscribe, complete = "start", "stop"
	}
	c.mu.Lock()
	switch typ {
	case "connection_init":
		if c.initSeen {
			c.mu.Unlock()
			return false, c.fail(CloseTooManyInit, "Too many initialisation requests")
		}
		if p := strings.TrimSpace(string(payload)); p != "" && p != "null" &&
			(!strings.HasPrefix(p, "{") || json.Unmarshal(payload, new(map[string]any)) != nil) {
			c.mu.Unlock()
			return false, c.fail(CloseBadRequest, "Invalid message received: payload must be an object")
		}
		c.initSeen = true
		if c.initTimer != nil {
			c.initTimer.Stop()
			c.initTimer = nil
		}
	case subscribe:
		switch {
		case !c.initSeen:
			c.mu.Unlock()
			return false, c.fail(CloseUnauthorized, "Unauthorized")
		case id == "":
			c.mu.Unlock()
			return false, c.fail(CloseBadRequest, "Invalid message received: subscribe without id")
		case !operationPayload(payload):
			c.mu.Unlock()
			return false, c.fail(CloseBadRequest, "Invalid message received: payload must be an object with a query")
		}
		// The payload's keys are held to the rules of a POST's body: a
		// key given twice, or in another case, is refused, where
		// encoding/json (and so gqlgen) would run the last copy while a
		// proxy reading the first sees another operation.
		if _, err := decodeParamsOf(payload, "payload"); err != nil {
			c.mu.Unlock()
			return false, c.fail(CloseBadRequest, "Invalid message received: "+c360.ErrorMessage(err))
		}
		if c.activeLocked(id) != nil {
			c.mu.Unlock()
			return false, c.fail(CloseSubscriberExists, "Subscriber for "+truncate(id, 60)+" already exists")
		}
		if len(c.subs) >= c.ws.cfg.MaxSubscriptions {
			c.mu.Unlock()
			c.refuse(id, fmt.Sprintf("too many subscriptions on one connection (at most %d)", c.ws.cfg.MaxSubscriptions))
			return true, nil
		}
	case complete:
		if !c.initSeen {
			// Allowed at any time, as graphql-ws's own server takes it: it
			// ends nothing, no subscription having started. gqlgen would
			// take it for a failed init and close with 1002, which
			// graphql-ws clients treat as fatal.
			c.mu.Unlock()
			return true, nil
		}
	case "ping", "pong":
		if c.legacy {
			c.mu.Unlock()
			return false, c.fail(CloseBadRequest, "Invalid message received")
		}
		if !c.initSeen {
			// Allowed at any time; gqlgen would take it for a failed
			// init. A ping is answered here, a pong needs nothing.
			c.mu.Unlock()
			if typ == "ping" {
				c.write("pong", "", nil)
			}
			return true, nil
		}
	case "connection_terminate":
		if !c.legacy {
			c.mu.Unlock()
			return false, c.fail(CloseBadRequest, "Invalid message received")
		}
	default:
		c.mu.Unlock()
		return false, c.fail(CloseBadRequest, "Invalid message received")
	}
	c.mu.Unlock()
	return false, nil
}

// operationPayload reports whether a subscribe (or legacy start) payload is
// an operation: a JSON object that decodes as gqlgen decodes it, with a
// string query or, in its place, the hash of a persisted query
// (extensions.persistedQuery; the server serves automatic persisted
// queries). gqlgen answers a missing or malformed payload with an error
// message without a code ("invalid json") and keeps the connection; the
// protocol closes it with 4400.
func operationPayload(payload json.RawMessage) bool {
	if p := bytes.TrimSpace(payload); len(p) == 0 || p[0] != '{' {
		return false
	}
	var op struct {
		Query         *string        `json:"query"`
		OperationName string         `json:"operationName"`
		Variables     map[string]any `json:"variables"`
		Extensions    map[string]any `json:"extensions"`
	}
	dec := json.NewDecoder(bytes.NewReader(payload))
	dec.UseNumber()
	if dec.Decode(&op) != nil {
		return false
	}
	_, persisted := op.Extensions["persistedQuery"].(map[string]any)
	return op.Query != nil || persisted
}

// refuse answers a subscribe with an error message and no subscription.
func (c *wsConn) refuse(id, msg string) {
	payload, _ := json.Marshal([]map[string]any{{"message": msg, "extensions": map[string]any{"code": c360.ERATELIMITED}}})
	c.write("error", id, payload)
}

// WriteJSON writes one of gqlgen's protocol messages.
func (c *wsConn) WriteJSON(v any) error {
	typ, id, payload, ok := messageFields(v)
	if !ok {
		b, err := json.Marshal(v)
		if err != nil {
			return fmt.Errorf("encode websocket message: %w", err)
		}
		return c.writeRaw(b)
	}
	// A subscription the server ends frees its slot on both protocols, and
	// nothing but the legacy protocol's answering complete follows a
	// client's complete (or stop).
	next := "next"
	if c.legacy {
		next = "data"
	}
	c.mu.Lock()
	switch typ {
	case next, "error", "complete":
		i, sub := c.runningLocked(id)
		if sub == nil {
			// Ended already (gqlgen's complete after its error): on
			// graphql-transport-ws nothing follows an error; the legacy
			// protocol gets its complete, under the client's id.
			if !c.legacy {
				c.mu.Unlock()
				return nil
			}
			if i := strings.LastIndexByte(id, '#'); i >= 0 {
				id = id[:i]
			}
			break
		}
		completed := sub.completed
		id = sub.id
		if typ != next {
			// Ended: its slot is free, and so is its id if the client
			// had it running.
			c.subs = slices.Delete(c.subs, i, i+1)
			if len(c.subs) == 0 {
				c.subs = nil
			}
		}
		if completed && (!c.legacy || typ != "complete") {
			// The client completed it: it wants nothing more. The legacy
			// protocol still gets the complete that answers its stop; a
			// late result (a stop while the subscription started ends it
			// with an error) would otherwise reach a subscription the
			// client started again under the same id.
			c.mu.Unlock()
			return nil
		}
	}
	c.mu.Unlock()
	return c.write(typ, id, payload)
}

// write frames a message without re-encoding its payload, which gqlgen has
// just encoded.
func (c *wsConn) write(typ, id string, payload []byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.conn.SetWriteDeadline(time.Now().Add(c.ws.cfg.WriteTimeout))
	w, err := c.conn.NextWriter(websocket.TextMessage)
	if err != nil {
		return fmt.Errorf("write websocket: %w", err)
	}
	buf := make([]byte, 0, 64)
	buf = append(buf, `{"type":`...)
	buf = strconv.AppendQuote(buf, typ)
	if id != "" {
		b, _ := json.Marshal(id)
		buf = append(buf, `,"id":`...)
		buf = append(buf, b...)
	}
	if len(payload) > 0 {
		buf = append(buf, `,"payload":`...)
	}
	w.Write(buf)
	if len(payload) > 0 {
		w.Write(payload)
	}
	w.Write([]byte{'}'})
	if err := w.Close(); err != nil {
		return fmt.Errorf("write websocket: %w", err)
	}
	return nil
}

func (c *wsConn) writeRaw(b []byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.conn.SetWriteDeadline(time.Now().Add(c.ws.cfg.WriteTimeout))
	if err := c.conn.WriteMessage(websocket.TextMessage, b); err != nil {
		return fmt.Errorf("write websocket: %w", err)
	}
	return nil
}

// messageFields reads the type, id and payload of gqlgen's unexported
// message structs, whose fields are exported.
func messageFields(v any) (typ, id string, payload []byte, ok bool) {
	rv := reflect.ValueOf(v)
	if rv.Kind() == reflect.Pointer {
		rv = rv.Elem()
	}
	if rv.Kind() != reflect.Struct {
		return "", "", nil, false
	}
	f, ok := fieldsOf(rv.Type())
	if !ok {
		return "", "", nil, false
	}
	return rv.Field(f.typ).String(), rv.Field(f.id).String(), rv.Field(f.payload).Bytes(), true
}

type msgFields struct{ typ, id, payload int }

var fieldCache sync.Map // reflect.Type -> msgFields, or false

func fieldsOf(t reflect.Type) (msgFields, bool) {
	if v, ok := fieldCache.Load(t); ok {
		f, ok := v.(msgFields)
		return f, ok
	}
	var f msgFields
	ok := true
	for name, idx := range map[string]*int{"Type": &f.typ, "ID": &f.id, "Payload": &f.payload} {
		sf, found := t.FieldByName(name)
		if !found || len(sf.Index) != 1 {
			ok = false
			break
		}
		*idx = sf.Index[0]
		kind := sf.Type.Kind()
		if (name == "Payload" && (kind != reflect.Slice || sf.Type.Elem().Kind() != reflect.Uint8)) || (name != "Payload" && kind != reflect.String) {
			ok = false
			break
		}
	}
	if !ok {
		fieldCache.Store(t, false)
		return f, false
	}
	fieldCache.Store(t, f)
	return f, true
}

// WriteClose sends a close frame; only the first close of a connection is sent.
func (c *wsConn) WriteClose(code int, reason string) error {
	c.mu.Lock()
	if c.closing {
		c.mu.Unlock()
		return nil
	}
	c.closing = true
	c.stopTimersLocked()
	c.mu.Unlock()
	c.ws.closes.WithLabelValues(strconv.Itoa(code)).Inc()
	err := c.conn.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(code, truncate(reason, 120)), time.Now().Add(time.Second))
	if err != nil && !errors.Is(err, websocket.ErrCloseSent) && !errors.Is(err, net.ErrClosed) {
		return fmt.Errorf("write websocket close: %w", err)
	}
	return nil
}

// Close closes the network connection.
func (c *wsConn) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	c.stopTimersLocked()
	c.mu.Unlock()
	c.ws.mu.Lock()
	delete(c.ws.conns, c)
	c.ws.mu.Unlock()
	c.ws.open.Dec()
	return c.conn.Close()
}

func (c *wsConn) stopTimersLocked() {
	if c.initTimer != nil {
		c.initTimer.Stop()
	}
	if c.pingTimer != nil {
		c.pingTimer.Stop()
	}
}

// fail closes the connection with code and returns errProtocol for the read
// loop.
func (c *wsConn) fail(code int, reason string) error {
	c.WriteClose(code, reason)
	c.Close()
	return errProtocol
}

// ping sends a websocket ping and schedules the next one. Pings go out on a
// timer, so an idle connection has no goroutine of its own for them.
func (c *wsConn) ping() {
	if err := c.conn.WriteControl(websocket.PingMessage, nil, time.Now().Add(c.ws.cfg.WriteTimeout)); err != nil {
		c.fail(CloseGoingAway, "")
		return
	}
	if c.keyRevoked() != nil {
		return
	}
	c.mu.Lock()
	if !c.closing && !c.closed {
		c.pingTimer.Reset(c.ws.cfg.PingInterval)
	}
	c.mu.Unlock()
}

// Subprotocol implements transport.WebsocketConn.
func (c *wsConn) Subprotocol() string { return c.conn.Subprotocol() }

// SetReadLimit implements transport.WebsocketReadLimiter.
func (c *wsConn) SetReadLimit(limit int64) { c.conn.SetReadLimit(limit) }

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	// On a rune boundary: a close reason must be valid UTF-8.
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

// websocketInit authenticates a connection from its connection_init payload
// {"authorization": "Bearer <key>"}; a missing or bad key closes it with 4403.
func (s *Server) websocketInit(ctx context.Context, payload transport.InitPayload) (context.Context, *transport.InitPayload, error) {
	st, _ := ctx.Value(wsStateKey{}).(*wsState)
	if c := st.get(); c != nil && payload == nil {
		payload = c.takeInitPayload()
	}
	key, ok := bearer(payload.Authorization())
	if !ok {
		return transport.AppendCloseReason(transport.WithWebsocketCloseCode(ctx, CloseForbidden), "Forbidden"),
			nil, errors.New(`missing API key: send {"authorization": "Bearer <key>"} in connection_init`)
	}
	// The key is not to stay in memory for the life of the connection.
	clear(payload)
	var client string
	if c := st.get(); c != nil {
		client = c.client
	}
	p, err := s.authenticateKey(ctx, nil, client, key)
	if err != nil {
		switch c360.ErrorCode(err) {
		case c360.EUNAUTHENTICATED, c360.EFORBIDDEN:
			return transport.AppendCloseReason(transport.WithWebsocketCloseCode(ctx, CloseForbidden), "Forbidden"),
				nil, errors.New(c360.ErrorMessage(err))
		case c360.ERATELIMITED:
			// Connections opened before their address ran out of
			// failed authentications, each kept for its init.
			return transport.AppendCloseReason(transport.WithWebsocketCloseCode(ctx, CloseTryAgainLater), "Try again later"),
				nil, errors.New(c360.ErrorMessage(err))
		case c360.EUNAVAILABLE:
			// The database did not answer the key's lookup: try again
			// later, as every other outage closes a websocket. graphql-ws
			// retries 1013; it takes 4500 for fatal and never would.
			s.cfg.Logger.Warn("authenticate websocket: database unavailable", "error", err)
			return transport.AppendCloseReason(transport.WithWebsocketCloseCode(ctx, CloseUnavailable), "Database unavailable: try again later"),
				nil, errors.New(c360.ErrorMessage(err))
		}
		s.cfg.Logger.Error("authenticate websocket", "error", err)
		return transport.AppendCloseReason(transport.WithWebsocketCloseCode(ctx, CloseInternal), "Internal server error"),
			nil, errors.New(c360.ErrorMessage(err))
	}
	if st != nil {
		if c := st.get(); c != nil {
			c.mu.Lock()
			c.principal, c.auth = p, s.auth
			c.allow = func() bool {
				ok, _ := s.keyLimit.allow(p.KeyID)
				return ok
			}
			c.mu.Unlock()
		}
	}
	return c360.NewContextWithPrincipal(ctx, p), nil, nil
}
