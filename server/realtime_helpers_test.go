package server_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/c360dev/c360"
	"github.com/c360dev/c360/hub"
	"github.com/c360dev/c360/internal/pgtest"
	"github.com/c360dev/c360/postgres"
	"github.com/c360dev/c360/resolver"
	"github.com/c360dev/c360/server"
)

// postSSE posts a subscription to baseURL's /graphql asking for an SSE
// stream, with key as bearer token (none when empty), and returns the
// answer, whose body the test's end closes.
func postSSE(t *testing.T, ctx context.Context, baseURL, key, query string, vars map[string]any) *http.Response {
	t.Helper()
	body, _ := json.Marshal(map[string]any{"query": query, "variables": vars})
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, baseURL+"/graphql", bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "text/event-stream")
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return resp
}

// sseReader reads the data of an SSE stream's events.
type sseReader struct{ sc *bufio.Scanner }

func newSSEReader(r io.Reader) *sseReader {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	return &sseReader{sc: sc}
}

// next returns the next event's data; false once the stream has ended,
// and err then says how.
func (s *sseReader) next() (string, bool) {
	for s.sc.Scan() {
		if data, ok := strings.CutPrefix(s.sc.Text(), "data: "); ok {
			return data, true
		}
	}
	return "", false
}

func (s *sseReader) err() error { return s.sc.Err() }

// rtEnv is a server with the real-time path wired as `c360 serve` wires it:
// a running hub woken after every commit.
type rtEnv struct {
	db  *postgres.DB
	hub *hub.Hub
	s   *server.Server
	srv *httptest.Server
	ws  int64
	key string
	// audit is the audit log's writer, with rtOptions.audit.
	audit *postgres.AuditWriter
}

type rtOptions struct {
	queue int
	// tls serves over TLS (wss://).
	tls bool
	cfg server.Config
	// auth, when set, stands for the store as the API key service.
	auth func(*postgres.DB) c360.APIKeyService
	// audit writes reads to the audit log (rtEnv.audit); auditLinger,
	// when set, is its writer's linger, and readAudit whose reads it
	// records before their answer.
	audit       bool
	auditLinger time.Duration
	readAudit   resolver.ReadAudit
	// feed, when set, stands for the store as the hub's feed.
	feed func(*postgres.DB) hub.Feed
	// readRetry is the hub's Options.ReadRetry.
	readRetry time.Duration
	// realtime, when set, stands for the store as the resolver's
	// RealtimeStore (the messages and conversations subscriptions read).
	realtime func(*postgres.DB) resolver.RealtimeStore
}

func newRTEnv(t *testing.T, o rtOptions) *rtEnv {
	t.Helper()
	db := pgtest.Open(t)
	ws, _, key := pgtest.Workspace(t, db)
	var feed hub.Feed = db
	if o.feed != nil {
		feed = o.feed(db)
	}
	h := hub.New(feed, hub.Options{QueueSize: o.queue, ReadRetry: o.readRetry, Logger: slog.New(slog.DiscardHandler)})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		h.Run(ctx)
	}()
	db.OnCommit = h.Wake
	res := newResolver(db)
	res.Hub, res.Realtime = h, db
	if o.realtime != nil {
		res.Realtime = o.realtime(db)
	}
	var audit *postgres.AuditWriter
	if o.audit {
		audit = postgres.NewAuditWriter(db, postgres.AuditWriterConfig{Linger: o.auditLinger, Logger: slog.New(slog.DiscardHandler)})
		res.Audit, res.ReadAudit = audit, o.readAudit
	}
	if o.cfg.Logger == nil {
		o.cfg.Logger = slog.New(slog.DiscardHandler)
	}
	var auth c360.APIKeyService = db
	if o.auth != nil {
		auth = o.auth(db)
	}
	s := server.New(o.cfg, auth, res, db)
	srv := httptest.NewUnstartedServer(s)
	if o.tls {
		srv.StartTLS()
	} else {
		srv.Start()
	}
	t.Cleanup(func() {
		s.CloseWebsockets()
		srv.Close()
		cancel()
		<-done
		if audit != nil {
			audit.Close()
		}
	})
	return &rtEnv{db: db, hub: h, s: s, srv: srv, ws: ws, key: key, audit: audit}
}

// ingest stores one event for the customer with the identity and returns
// the customer's id.
func ingest(t *testing.T, db *postgres.DB, ws int64, ids []c360.Identity, traits map[string]any) int64 {
	t.Helper()
	now := time.Now().UTC()
	res, err := db.Ingest(context.Background(), ws, []*c360.Event{{
		Type: c360.EventIdentify, Identities: ids, Traits: traits, Source: "test",
		DedupeKey: randomID(), OccurredAt: now, ReceivedAt: now,
	}})
	if err != nil {
		t.Fatalf("ingest: %v", err)
	}
	return res[0].CustomerID
}

func email(s string) []c360.Identity { return []c360.Identity{{Type: "email", Value: s}} }

func randomID() string {
	b := make([]byte, 8)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// wsClient is a real websocket client speaking one GraphQL subprotocol.
type wsClient struct {
	t *testing.T
	c *websocket.Conn
}

func wsURL(srv *httptest.Server) string {
	return "ws" + strings.TrimPrefix(srv.URL, "http") + "/graphql"
}

func dialWS(t *testing.T, url, protocol string, hdr http.Header) *wsClient {
	t.Helper()
	return dialWSWith(t, websocket.Dialer{HandshakeTimeout: 5 * time.Second}, url, protocol, hdr)
}

// dialWSS dials a TLS test server (wss://), trusting its certificate.
func dialWSS(t *testing.T, srv *httptest.Server, protocol string) *wsClient {
	t.Helper()
	d := websocket.Dialer{HandshakeTimeout: 5 * time.Second,
		TLSClientConfig: srv.Client().Transport.(*http.Transport).TLSClientConfig}
	return dialWSWith(t, d, "wss"+strings.TrimPrefix(srv.URL, "https")+"/graphql", protocol, nil)
}

func dialWSWith(t *testing.T, d websocket.Dialer, url, protocol string, hdr http.Header) *wsClient {
	t.Helper()
	if protocol != "" {
		d.Subprotocols = []string{protocol}
	}
	c, resp, err := d.Dial(url, hdr)
	if err != nil {
		status := 0
		if resp != nil {
			status = resp.StatusCode
		}
		t.Fatalf("dial %s: %v (status %d)", url, err, status)
	}
	t.Cleanup(func() { c.Close() })
	return &wsClient{t: t, c: c}
}

// dialSlowWS dials with a tiny receive buffer, so that a client that stops
// reading backs the server up quickly.
func dialSlowWS(t *testing.T, url string) *wsClient {
	t.Helper()
	nd := &net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		rc.Control(func(fd uintptr) { serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096) })
		return serr
	}}
	d := websocket.Dialer{HandshakeTimeout: 5 * time.Second, Subprotocols: []string{"graphql-transport-ws"}, NetDialContext: nd.DialContext}
	c, _, err := d.Dial(url, nil)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return &wsClient{t: t, c: c}
}

type wsMsg struct {
	Type    string          `json:"type"`
	ID      string          `json:"id,omitempty"`
	Payload json.RawMessage `json:"payload,omitempty"`
}

func (c *wsClient) send(typ, id string, payload any) {
	c.t.Helper()
	m := map[string]any{"type": typ}
	if id != "" {
		m["id"] = id
	}
	if payload != nil {
		m["payload"] = payload
	}
	if err := c.c.WriteJSON(m); err != nil {
		c.t.Fatalf("send %s: %v", typ, err)
	}
}

// read returns the next message, skipping pings and keep-alives.
func (c *wsClient) read() wsMsg {
	c.t.Helper()
	for {
		c.c.SetReadDeadline(time.Now().Add(10 * time.Second))
		var m wsMsg
		if err := c.c.ReadJSON(&m); err != nil {
			c.t.Fatalf("read: %v", err)
		}
		if m.Type == "ping" || m.Type == "pong" || m.Type == "ka" {
			continue
		}
		return m
	}
}

// closeCode reads until the server closes and returns its close code.
func (c *wsClient) closeCode() int {
	c.t.Helper()
	for {
		c.c.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, _, err := c.c.ReadMessage(); err != nil {
			var ce *websocket.CloseError
			if errors.As(err, &ce) {
				return ce.Code
			}
			c.t.Fatalf("want a close frame, got %v", err)
		}
	}
}

func (c *wsClient) init(key string) {
	c.t.Helper()
	c.send("connection_init", "", map[string]any{"authorization": "Bearer " + key})
	if m := c.read(); m.Type != "connection_ack" {
		c.t.Fatalf("init: got %s %s, want connection_ack", m.Type, m.Payload)
	}
}

func (c *wsClient) subscribe(id, query string, vars map[string]any) {
	c.t.Helper()
	c.send("subscribe", id, map[string]any{"query": query, "variables": vars})
}

// change is a CustomerChange as the tests select it.
type change struct {
	Cursor     string         `json:"cursor"`
	Kind       string         `json:"kind"`
	Version    int64          `json:"version"`
	CustomerID string         `json:"customerId"`
	Diff       map[string]any `json:"diff"`
	Customer   *struct {
		ID     string         `json:"id"`
		Traits map[string]any `json:"traits"`
	} `json:"customer"`
}

const changeFields = `cursor kind version customerId diff customer { id traits }`

// next reads the next data message of subscription id and decodes the
// field's value into v.
func (c *wsClient) next(id, field string, v any) {
	c.t.Helper()
	m := c.read()
	if m.Type != "next" || m.ID != id {
		c.t.Fatalf("got %s %q %s, want next for %q", m.Type, m.ID, m.Payload, id)
	}
	var p struct {
		Data   map[string]json.RawMessage `json:"data"`
		Errors []struct {
			Message    string         `json:"message"`
			Extensions map[string]any `json:"extensions"`
		} `json:"errors"`
	}
	if err := json.Unmarshal(m.Payload, &p); err != nil {
		c.t.Fatalf("decode %s: %v", m.Payload, err)
	}
	if len(p.Errors) > 0 {
		c.t.Fatalf("errors: %+v", p.Errors)
	}
	if err := json.Unmarshal(p.Data[field], v); err != nil {
		c.t.Fatalf("decode %s: %v", p.Data[field], err)
	}
}

func (c *wsClient) nextChange(id string) change {
	c.t.Helper()
	var ch change
	c.next(id, "customerChanged", &ch)
	return ch
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
