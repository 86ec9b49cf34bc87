package server_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/c360dev/c360"
	"github.com/c360dev/c360/hub"
	"github.com/c360dev/c360/internal/logbuf"
	"github.com/c360dev/c360/postgres"
	"github.com/c360dev/c360/server"
)

func hubCursor(customer, version int64) string {
	return hub.Cursor{CustomerID: customer, Version: version}.Encode()
}

func closeCodeOf(err error) int {
	var ce *websocket.CloseError
	if errors.As(err, &ce) {
		return ce.Code
	}
	return 0
}

// Every close code of the graphql-transport-ws protocol that the server
// owes, where gqlgen's own transport answers differently.
func TestWebsocketCloseCodes(t *testing.T) {
	e := newRTEnv(t, rtOptions{cfg: server.Config{Websocket: server.WebsocketConfig{InitTimeout: 300 * time.Millisecond}}})
	url := wsURL(e.srv)
	const q = `subscription { customerChanges { version } }`
	tests := []struct {
		name string
		run  func(c *wsClient)
		want int
	}{
		{"bad key", func(c *wsClient) {
			c.send("connection_init", "", map[string]any{"authorization": "Bearer c360_nope"})
		}, server.CloseForbidden},
		{"no key", func(c *wsClient) { c.send("connection_init", "", nil) }, server.CloseForbidden},
		{"subscribe before init", func(c *wsClient) { c.subscribe("s", q, nil) }, server.CloseUnauthorized},
		{"init timeout", func(c *wsClient) {}, server.CloseInitTimeout},
		{"duplicate id", func(c *wsClient) {
			c.init(e.key)
			c.subscribe("s", q, nil)
			c.subscribe("s", q, nil)
		}, server.CloseSubscriberExists},
		// The close reason quotes the id, cut short on a character: a
		// reason cut inside one is not UTF-8, which clients refuse.
		{"duplicate long non-ASCII id", func(c *wsClient) {
			c.init(e.key)
			id := "x" + strings.Repeat("é", 80) // cut at 60 bytes, inside an é
			c.subscribe(id, q, nil)
			c.subscribe(id, q, nil)
		}, server.CloseSubscriberExists},
		{"second init", func(c *wsClient) {
			c.init(e.key)
			c.send("connection_init", "", map[string]any{"authorization": "Bearer " + e.key})
		}, server.CloseTooManyInit},
		{"not JSON", func(c *wsClient) { c.c.WriteMessage(websocket.TextMessage, []byte("{nope")) }, server.CloseBadRequest},
		{"unknown type", func(c *wsClient) { c.send("bogus", "", nil) }, server.CloseBadRequest},
		{"subscribe without id", func(c *wsClient) {
			c.init(e.key)
			c.subscribe("", q, nil)
		}, server.CloseBadRequest},
		{"init payload not an object", func(c *wsClient) { c.send("connection_init", "", "Bearer x") }, server.CloseBadRequest},
		// gqlgen answered these with an error message without a code
		// ("invalid json") and kept the connection.
		{"subscribe without payload", func(c *wsClient) {
			c.init(e.key)
			c.c.WriteMessage(websocket.TextMessage, []byte(`{"type":"subscribe","id":"1"}`))
		}, server.CloseBadRequest},
		{"subscribe payload not an object", func(c *wsClient) {
			c.init(e.key)
			c.send("subscribe", "1", "x")
		}, server.CloseBadRequest},
		{"subscribe payload without query", func(c *wsClient) {
			c.init(e.key)
			c.send("subscribe", "1", map[string]any{"variables": map[string]any{}})
		}, server.CloseBadRequest},
		{"subscribe variables not an object", func(c *wsClient) {
			c.init(e.key)
			c.send("subscribe", "1", map[string]any{"query": q, "variables": "x"})
		}, server.CloseBadRequest},
		// A subscribe payload's keys follow a POST body's rules
		// (decodeParams): encoding/json, and so gqlgen, would run the last
		// copy of a key given twice, or a key in another case, where a
		// proxy reading the first copy sees a harmless query.
		{"subscribe payload with query twice", func(c *wsClient) {
			c.init(e.key)
			c.c.WriteMessage(websocket.TextMessage, []byte(`{"type":"subscribe","id":"1","payload":{"query":"{ __typename }","query":"mutation { identify(input: {identities: [{type: \"email\", value: \"twice@ws.example\"}]}) { id } }"}}`))
		}, server.CloseBadRequest},
		{"subscribe payload with a key in another case", func(c *wsClient) {
			c.init(e.key)
			c.c.WriteMessage(websocket.TextMessage, []byte(`{"type":"subscribe","id":"1","payload":{"Query":"mutation { identify(input: {identities: [{type: \"email\", value: \"case@ws.example\"}]}) { id } }","query":"{ __typename }"}}`))
		}, server.CloseBadRequest},
		// So do the message's own keys: gqlgen would take the last
		// payload, or "Payload" for "payload".
		{"subscribe message with payload twice", func(c *wsClient) {
			c.init(e.key)
			c.c.WriteMessage(websocket.TextMessage, []byte(`{"type":"subscribe","id":"1","payload":{"query":"{ __typename }"},"payload":{"query":"mutation { identify(input: {identities: [{type: \"email\", value: \"twice@ws.example\"}]}) { id } }"}}`))
		}, server.CloseBadRequest},
		{"subscribe message with a key in another case", func(c *wsClient) {
			c.init(e.key)
			c.c.WriteMessage(websocket.TextMessage, []byte(`{"type":"subscribe","id":"1","payload":{"query":"{ __typename }"},"Payload":{"query":"mutation { identify(input: {identities: [{type: \"email\", value: \"case@ws.example\"}]}) { id } }"}}`))
		}, server.CloseBadRequest},
		{"message with data after its object", func(c *wsClient) {
			c.init(e.key)
			c.c.WriteMessage(websocket.TextMessage, []byte(`{"type":"ping"} {"type":"subscribe"}`))
		}, server.CloseBadRequest},
		{"message with type twice", func(c *wsClient) {
			c.init(e.key)
			c.c.WriteMessage(websocket.TextMessage, []byte(`{"type":"ping","type":"subscribe","id":"1","payload":{"query":"{ __typename }"}}`))
		}, server.CloseBadRequest},
		{"init payload an object that does not decode", func(c *wsClient) {
			c.c.WriteMessage(websocket.TextMessage, []byte(`{"type":"connection_init","payload":{"n":1e999}}`))
		}, server.CloseBadRequest},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := dialWS(t, url, "graphql-transport-ws", nil)
			c.t = t
			tt.run(c)
			if got := c.closeCode(); got != tt.want {
				t.Fatalf("close code %d, want %d", got, tt.want)
			}
		})
	}

	// ping is allowed at any time, before connection_init too.
	t.Run("ping before init", func(t *testing.T) {
		c := dialWS(t, url, "graphql-transport-ws", nil)
		c.send("ping", "", nil)
		c.c.SetReadDeadline(time.Now().Add(5 * time.Second))
		var m struct{ Type string }
		if err := c.c.ReadJSON(&m); err != nil || m.Type != "pong" {
			t.Fatalf("got %+v %v, want pong", m, err)
		}
		c.init(e.key)
	})
	// complete is allowed at any time too (graphql-ws's own server takes it
	// before connection_init): a client that gives up on a subscription
	// while it connects must not have its connection closed with 1002,
	// which graphql-ws clients take as fatal. So is the legacy stop.
	for _, tc := range []struct{ protocol, complete string }{
		{"graphql-transport-ws", "complete"}, {"graphql-ws", "stop"},
	} {
		t.Run(tc.complete+" before init on "+tc.protocol, func(t *testing.T) {
			c := dialWS(t, url, tc.protocol, nil)
			c.t = t
			c.send(tc.complete, "s1", nil)
			c.init(e.key)
		})
	}
	// The refused payloads above held mutations: neither ran.
	var stored int
	if err := e.db.Pool.QueryRow(context.Background(), `SELECT count(*) FROM identities WHERE workspace_id = $1 AND value IN ('twice@ws.example', 'case@ws.example')`, e.ws).Scan(&stored); err != nil || stored != 0 {
		t.Errorf("refused subscribe payloads stored %d identities (%v), want none", stored, err)
	}
	t.Run("subprotocol not acceptable", func(t *testing.T) {
		c := dialWS(t, url, "graphql-nonsense", nil)
		if got := c.closeCode(); got != server.CloseSubprotocolNotAcceptable {
			t.Fatalf("close code %d, want %d", got, server.CloseSubprotocolNotAcceptable)
		}
	})
	t.Run("a completed id may be reused", func(t *testing.T) {
		c := dialWS(t, url, "graphql-transport-ws", nil)
		c.init(e.key)
		c.subscribe("s", q, nil)
		waitFor(t, "subscription", func() bool { return e.hub.Stats().Streams == 1 })
		c.send("complete", "s", nil)
		waitFor(t, "unsubscribe", func() bool { return e.hub.Stats().Streams == 0 })
		c.subscribe("s", q, nil)
		waitFor(t, "subscription", func() bool { return e.hub.Stats().Streams == 1 })
		c.send("ping", "", nil)
		c.c.SetReadDeadline(time.Now().Add(5 * time.Second))
		var m wsMsg
		if err := c.c.ReadJSON(&m); err != nil || m.Type != "pong" {
			t.Fatalf("got %+v, %v after a ping, want pong on a live connection", m, err)
		}
	})
}

// The origin allow-list: browsers from other origins are refused at the
// handshake, same-origin pages and non-browser clients are served.
func TestWebsocketOrigins(t *testing.T) {
	e := newRTEnv(t, rtOptions{cfg: server.Config{Websocket: server.WebsocketConfig{AllowedOrigins: []string{"https://console.example.com"}}}})
	d := websocket.Dialer{Subprotocols: []string{"graphql-transport-ws"}}
	for _, tt := range []struct {
		origin string
		want   int
	}{
		{"", http.StatusSwitchingProtocols},
		{"https://console.example.com", http.StatusSwitchingProtocols},
		{e.srv.URL, http.StatusSwitchingProtocols},
		{"https://evil.example.com", http.StatusForbidden},
	} {
		hdr := http.Header{}
		if tt.origin != "" {
			hdr.Set("Origin", tt.origin)
		}
		c, resp, err := d.Dial(wsURL(e.srv), hdr)
		if c != nil {
			c.Close()
		}
		if resp == nil {
			t.Fatalf("origin %q: %v", tt.origin, err)
		}
		if resp.StatusCode != tt.want {
			t.Errorf("origin %q: status %d, want %d", tt.origin, resp.StatusCode, tt.want)
		}
	}
}

// C360_ALLOWED_ORIGINS is written as browsers write Origin: a default port
// is dropped (a browser never sends https://a.example:443), and an entry a
// browser's Origin could never equal (no scheme, a path) is refused rather
// than left to refuse every browser silently.
func TestParseOrigins(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want []string
		err  bool
	}{
		{"", nil, false},
		{"*", []string{"*"}, false},
		{" https://Console.Example.com/ , http://localhost:3000", []string{"https://console.example.com", "http://localhost:3000"}, false},
		{"https://console.example.com:443,http://a.example:80", []string{"https://console.example.com", "http://a.example"}, false},
		{"https://console.example.com:8443", []string{"https://console.example.com:8443"}, false},
		{"console.example.com", nil, true},
		{"https://console.example.com/app", nil, true},
		{"https://console.example.com?x=1", nil, true},
		{"https://", nil, true},
	} {
		got, err := server.ParseOrigins(tt.in)
		if (err != nil) != tt.err || !slices.Equal(got, tt.want) {
			t.Errorf("ParseOrigins(%q) = %q, %v; want %q, error %v", tt.in, got, err, tt.want, tt.err)
		}
		if err != nil && !strings.Contains(err.Error(), "scheme://host") {
			t.Errorf("ParseOrigins(%q): error %q does not say what an origin is", tt.in, err)
		}
	}
	// The normalized entry admits the browser's Origin, and an Origin
	// that writes the default port, which matched before the entry was
	// normalized.
	origins, err := server.ParseOrigins("https://console.example.com:443")
	if err != nil {
		t.Fatal(err)
	}
	e := newRTEnv(t, rtOptions{cfg: server.Config{Websocket: server.WebsocketConfig{AllowedOrigins: origins}}})
	for _, origin := range []string{"https://console.example.com", "https://console.example.com:443", "https://Console.Example.com:443/"} {
		c, resp, err := (&websocket.Dialer{Subprotocols: []string{"graphql-transport-ws"}}).Dial(wsURL(e.srv), http.Header{"Origin": {origin}})
		if c != nil {
			c.Close()
		}
		if resp == nil || resp.StatusCode != http.StatusSwitchingProtocols {
			t.Errorf("Origin %s with https://console.example.com:443 allowed: %v %v, want 101", origin, resp, err)
		}
	}
	// Another port is another origin.
	c, resp, err := (&websocket.Dialer{Subprotocols: []string{"graphql-transport-ws"}}).Dial(wsURL(e.srv), http.Header{"Origin": {"https://console.example.com:8443"}})
	if c != nil {
		c.Close()
	}
	if resp == nil || resp.StatusCode != http.StatusForbidden {
		t.Errorf("Origin https://console.example.com:8443: %v %v, want 403", resp, err)
	}
}

// A handshake gorilla refuses is answered once, with a code: gqlgen's own
// answer to the failed upgrade ("unable to upgrade", without one) would
// follow it in the same body, and net/http would log its status line as
// superfluous.
func TestRefusedHandshakeAnswersOnce(t *testing.T) {
	e := newRTEnv(t, rtOptions{})
	req, _ := http.NewRequest(http.MethodGet, e.srv.URL+"/graphql", nil)
	req.Header.Set("Connection", "Upgrade")
	req.Header.Set("Upgrade", "websocket")
	req.Header.Set("Sec-WebSocket-Version", "13") // and no Sec-WebSocket-Key
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	dec := json.NewDecoder(bytes.NewReader(body))
	var first struct {
		Errors []struct {
			Message    string
			Extensions struct{ Code string }
		}
	}
	if err := dec.Decode(&first); err != nil || resp.StatusCode != http.StatusBadRequest || len(first.Errors) != 1 ||
		first.Errors[0].Extensions.Code != c360.EINVALID || !strings.Contains(first.Errors[0].Message, "websocket handshake") {
		t.Fatalf("answer %d %s, want 400 BAD_USER_INPUT on the handshake", resp.StatusCode, body)
	}
	if dec.More() {
		t.Errorf("the answer holds more than one JSON document: %s", body)
	}
}

// The legacy graphql-ws protocol (subscriptions-transport-ws) still works.
func TestWebsocketLegacyProtocol(t *testing.T) {
	e := newRTEnv(t, rtOptions{})
	id := ingest(t, e.db, e.ws, email("jo@example.com"), nil)
	c := dialWS(t, wsURL(e.srv), "graphql-ws", nil)
	c.init(e.key)
	c.send("start", "1", map[string]any{"query": subCustomer, "variables": map[string]any{"id": fmt.Sprint(id)}})
	waitFor(t, "subscription", func() bool { return e.hub.Stats().Streams == 1 })
	ingest(t, e.db, e.ws, email("jo@example.com"), map[string]any{"a": 1})
	if m := c.read(); m.Type != "data" || m.ID != "1" {
		t.Fatalf("got %s %q, want data for 1", m.Type, m.ID)
	}
	c.send("stop", "1", nil)
	waitFor(t, "unsubscribe", func() bool { return e.hub.Stats().Streams == 0 })

	// A start that is no operation is not of the protocol either.
	for _, payload := range []any{nil, "x"} {
		c := dialWS(t, wsURL(e.srv), "graphql-ws", nil)
		c.init(e.key)
		c.send("start", "1", payload)
		if got := c.closeCode(); got != server.CloseBadRequest {
			t.Fatalf("start with payload %v: close code %d, want %d", payload, got, server.CloseBadRequest)
		}
	}

	bad := dialWS(t, wsURL(e.srv), "graphql-ws", nil)
	bad.send("connection_init", "", map[string]any{"authorization": "Bearer wrong"})
	if m := bad.read(); m.Type != "connection_error" {
		t.Fatalf("got %s, want connection_error", m.Type)
	}
	if got := bad.closeCode(); got != server.CloseForbidden {
		t.Fatalf("close code %d, want %d", got, server.CloseForbidden)
	}
}

// A websocket connection lives on after net/http's handler for its request
// has returned: the handler hands the hijacked connection over, so that
// net/http's per-connection state does not live as long as the socket.
// The connection then works as any other, and closes with 1001 at shutdown.
func TestWebsocketOutlivesItsHTTPHandler(t *testing.T) {
	e := newRTEnv(t, rtOptions{})
	id := ingest(t, e.db, e.ws, email("handoff@example.com"), nil)
	returned := make(chan struct{}, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		e.s.ServeHTTP(w, r)
		if websocket.IsWebSocketUpgrade(r) {
			returned <- struct{}{}
		}
	}))
	t.Cleanup(srv.Close)

	c := dialWS(t, wsURL(srv), "graphql-transport-ws", nil)
	select {
	case <-returned:
	case <-time.After(10 * time.Second):
		t.Fatal("the HTTP handler did not return once the websocket was upgraded")
	}
	c.init(e.key)
	c.subscribe("s", subCustomer, map[string]any{"id": fmt.Sprint(id)})
	waitFor(t, "subscription", func() bool { return e.hub.Stats().Streams == 1 })
	ingest(t, e.db, e.ws, email("handoff@example.com"), map[string]any{"n": 1})
	if got := c.nextChange("s"); got.Version != 2 {
		t.Fatalf("got version %d, want 2", got.Version)
	}
	e.s.CloseWebsockets()
	if got := c.closeCode(); got != server.CloseGoingAway {
		t.Fatalf("close code %d at shutdown, want %d", got, server.CloseGoingAway)
	}
}

// Messages of any size up to the limits cross the connection whole, though
// its read buffer is small and it borrows its write buffer for one message
// at a time: a client message larger than the read buffer, a change larger
// than a write buffer, and a client message over 64 KiB closes with 1009.
func TestWebsocketMessageSizes(t *testing.T) {
	e := newRTEnv(t, rtOptions{})
	id := ingest(t, e.db, e.ws, email("sizes@example.com"), nil)
	c := dialWS(t, wsURL(e.srv), "graphql-transport-ws", nil)
	c.init(e.key)
	// A comment makes the subscribe message 20 KiB.
	q := "# " + strings.Repeat("x", 20<<10) + "\n" + subCustomer
	c.subscribe("s", q, map[string]any{"id": fmt.Sprint(id)})
	waitFor(t, "subscription", func() bool { return e.hub.Stats().Streams == 1 })
	blob := strings.Repeat("y", 40<<10)
	ingest(t, e.db, e.ws, email("sizes@example.com"), map[string]any{"blob": blob})
	got := c.nextChange("s")
	if got.Customer == nil || got.Customer.Traits["blob"] != blob {
		t.Fatalf("the change's 40 KiB trait did not arrive whole")
	}

	big := dialWS(t, wsURL(e.srv), "graphql-transport-ws", nil)
	big.init(e.key)
	big.subscribe("s", "# "+strings.Repeat("x", 64<<10)+"\n"+subCustomer, map[string]any{"id": fmt.Sprint(id)})
	if got := big.closeCode(); got != websocket.CloseMessageTooBig {
		t.Fatalf("close code %d after a message over 64 KiB, want %d", got, websocket.CloseMessageTooBig)
	}
}

// A connection holds at most MaxSubscriptions active subscriptions: one
// more is refused with an error message (RATE_LIMITED) and the connection
// stays open. A subscription the server ends (here: a bad cursor) frees its
// slot on both protocols; a client's complete frees it too.
func TestWebsocketSubscriptionLimit(t *testing.T) {
	e := newRTEnv(t, rtOptions{cfg: server.Config{Websocket: server.WebsocketConfig{MaxSubscriptions: 2}}})
	id := fmt.Sprint(ingest(t, e.db, e.ws, email("limit@example.com"), nil))
	good := map[string]any{"id": id}
	bad := map[string]any{"id": id, "after": "not a cursor"}

	t.Run("graphql-transport-ws", func(t *testing.T) {
		c := dialWS(t, wsURL(e.srv), "graphql-transport-ws", nil)
		c.init(e.key)
		for _, sub := range []string{"bad1", "bad2"} {
			c.send("subscribe", sub, map[string]any{"query": subCustomer, "variables": bad})
			endedWithError(t, c, sub)
		}
		// The two slots the server ended are free again.
		c.subscribe("a", subCustomer, good)
		c.subscribe("b", subCustomer, good)
		waitFor(t, "two subscriptions", func() bool { return e.hub.Stats().Streams == 2 })
		c.send("subscribe", "c", map[string]any{"query": subCustomer, "variables": good})
		m := c.read()
		if m.Type != "error" || m.ID != "c" || !strings.Contains(string(m.Payload), "RATE_LIMITED") {
			t.Fatalf("third subscription: got %s %q %s, want an error RATE_LIMITED for c", m.Type, m.ID, m.Payload)
		}
		c.send("complete", "a", nil)
		waitFor(t, "a completed", func() bool { return e.hub.Stats().Streams == 1 })
		c.subscribe("c", subCustomer, good)
		waitFor(t, "c in a's slot", func() bool { return e.hub.Stats().Streams == 2 })
		c.send("complete", "b", nil)
		c.send("complete", "c", nil)
		waitFor(t, "all completed", func() bool { return e.hub.Stats().Streams == 0 })
	})
	t.Run("graphql-ws (legacy)", func(t *testing.T) {
		c := dialWS(t, wsURL(e.srv), "graphql-ws", nil)
		c.init(e.key)
		for _, sub := range []string{"bad1", "bad2", "bad3"} {
			c.send("start", sub, map[string]any{"query": subCustomer, "variables": bad})
			endedWithError(t, c, sub)
		}
		c.send("start", "ok", map[string]any{"query": subCustomer, "variables": good})
		waitFor(t, "a subscription after three server-ended ones", func() bool { return e.hub.Stats().Streams == 1 })
		c.send("stop", "ok", nil)
		waitFor(t, "stopped", func() bool { return e.hub.Stats().Streams == 0 })
	})
}

// endedWithError reads the server's answer to a subscription it refuses
// for a bad argument: its own error (never the subscription limit's), then
// complete.
func endedWithError(t *testing.T, c *wsClient, id string) {
	t.Helper()
	m := c.read()
	if m.ID != id || !strings.Contains(string(m.Payload), "BAD_USER_INPUT") || strings.Contains(string(m.Payload), "RATE_LIMITED") {
		t.Fatalf("subscription %s: got %s %q %s, want its BAD_USER_INPUT error", id, m.Type, m.ID, m.Payload)
	}
	if m.Type != "complete" && m.Type != "error" {
		if m = c.read(); m.Type != "complete" || m.ID != id {
			t.Fatalf("subscription %s: got %s %q after its error, want complete", id, m.Type, m.ID)
		}
	}
}

// On the legacy graphql-ws protocol, an id stopped and started again
// fifty times in a row leaves one subscription running under it, which
// gets each change once, and nothing of the stopped ones: a subscription
// stopped while it started ended with an error that reached the client
// under the reused id.
func TestWebsocketLegacyIDReuseAfterStop(t *testing.T) {
	var logs logbuf.Buffer
	e := newRTEnv(t, rtOptions{cfg: server.Config{Logger: slog.New(slog.NewTextHandler(&logs, nil))}})
	id := ingest(t, e.db, e.ws, email("legacy-reuse@example.com"), nil)
	start := map[string]any{"query": subCustomer, "variables": map[string]any{"id": fmt.Sprint(id)}}
	c := dialWS(t, wsURL(e.srv), "graphql-ws", nil)
	c.init(e.key)
	c.send("start", "a", start)
	const churn = 50
	for range churn {
		c.send("stop", "a", nil)
		c.send("start", "a", start)
	}
	// Each stop is answered by its complete, and nothing else comes.
	for i := range churn {
		if m := c.read(); m.Type != "complete" || m.ID != "a" {
			t.Fatalf("after %d of %d stops answered: got %s %q %s, want complete for a", i, churn, m.Type, m.ID, m.Payload)
		}
	}
	waitFor(t, "one subscription left running", func() bool { return e.hub.Stats().Streams == 1 })
	ingest(t, e.db, e.ws, email("legacy-reuse@example.com"), map[string]any{"plan": "pro"})
	// Then the change, once.
	m := c.read()
	if m.Type != "data" || m.ID != "a" {
		t.Fatalf("got %s %q %s, want data for a", m.Type, m.ID, m.Payload)
	}
	var p struct {
		Data struct {
			CustomerChanged change `json:"customerChanged"`
		} `json:"data"`
	}
	if err := json.Unmarshal(m.Payload, &p); err != nil || p.Data.CustomerChanged.Version != 2 {
		t.Fatalf("data %s (%v), want version 2", m.Payload, err)
	}
	ingest(t, e.db, e.ws, email("legacy-reuse@example.com"), map[string]any{"plan": "team"})
	if m := c.read(); m.Type != "data" || m.ID != "a" || !strings.Contains(string(m.Payload), `"version":3`) {
		t.Fatalf("got %s %q %s, want the next change once, version 3", m.Type, m.ID, m.Payload)
	}
	c.c.Close()
	waitFor(t, "nothing running after the connection closed", func() bool { return e.hub.Stats().Streams == 0 })
	// A subscription stopped while it started is the client's doing, not
	// an error of the server's.
	if strings.Contains(logs.String(), "level=ERROR") {
		t.Errorf("the stops were logged as errors:\n%s", logs.String())
	}
}

// A client may reuse an id as soon as it has completed it. gqlgen ends the
// old subscription in the background; the new one must be the one that
// runs, delivers and ends with the connection, however fast the reuse.
func TestWebsocketIDReuseAfterComplete(t *testing.T) {
	e := newRTEnv(t, rtOptions{})
	id := ingest(t, e.db, e.ws, email("reuse@example.com"), nil)
	vars := map[string]any{"id": fmt.Sprint(id)}
	c := dialWS(t, wsURL(e.srv), "graphql-transport-ws", nil)
	c.init(e.key)
	c.subscribe("a", subCustomer, vars)
	for range 50 {
		c.send("complete", "a", nil)
		c.subscribe("a", subCustomer, vars)
	}
	waitFor(t, "one subscription left running", func() bool { return e.hub.Stats().Streams == 1 })
	ingest(t, e.db, e.ws, email("reuse@example.com"), map[string]any{"plan": "pro"})
	if got := c.nextChange("a"); got.Version != 2 {
		t.Fatalf("the last subscription under a: got version %d, want 2", got.Version)
	}
	c.c.Close()
	waitFor(t, "nothing running after the connection closed", func() bool { return e.hub.Stats().Streams == 0 })
}

// A websocket subscription whose key was revoked delivers no further
// change, even before the connection's next ping or subscribe finds out:
// the subscription asks KeyActive before each change.
func TestWebsocketRevokedKeyWithholdsNextChange(t *testing.T) {
	e := newRTEnv(t, rtOptions{cfg: server.Config{Websocket: server.WebsocketConfig{PingInterval: time.Hour}}})
	ctx := context.Background()
	id := ingest(t, e.db, e.ws, email("withheld@example.com"), nil)
	key, k, err := e.db.IssueAPIKey(ctx, e.ws, c360.RoleAdmin, nil)
	if err != nil {
		t.Fatal(err)
	}
	c := dialWS(t, wsURL(e.srv), "graphql-transport-ws", nil)
	c.init(key)
	c.subscribe("a", subCustomer, map[string]any{"id": fmt.Sprint(id)})
	waitFor(t, "subscription", func() bool { return e.hub.Stats().Streams == 1 })
	if _, _, err := e.db.RevokeAPIKey(ctx, e.ws, k.Prefix); err != nil {
		t.Fatal(err)
	}
	ingest(t, e.db, e.ws, email("withheld@example.com"), map[string]any{"plan": "secret"})
	m := c.read()
	if m.ID != "a" || strings.Contains(string(m.Payload), "secret") || !strings.Contains(string(m.Payload), `"UNAUTHENTICATED"`) {
		t.Fatalf("got %s %q %s, want subscription a to end with UNAUTHENTICATED, without the change", m.Type, m.ID, m.Payload)
	}
}

// A key revoked while its websocket is open stops working on it too: the
// next subscribe, or the next ping on an idle connection, closes it with
// 4403, as a new connection with the key would be refused.
func TestWebsocketRevokedKeyClosesTheConnection(t *testing.T) {
	e := newRTEnv(t, rtOptions{cfg: server.Config{Websocket: server.WebsocketConfig{PingInterval: 200 * time.Millisecond}}})
	ctx := context.Background()
	id := fmt.Sprint(ingest(t, e.db, e.ws, email("revoked@example.com"), nil))
	for _, idle := range []bool{false, true} {
		key, k, err := e.db.IssueAPIKey(ctx, e.ws, c360.RoleAdmin, nil)
		if err != nil {
			t.Fatal(err)
		}
		c := dialWS(t, wsURL(e.srv), "graphql-transport-ws", nil)
		c.init(key)
		c.subscribe("a", subCustomer, map[string]any{"id": id})
		waitFor(t, "subscription", func() bool { return e.hub.Stats().Streams == 1 })
		if _, _, err := e.db.RevokeAPIKey(ctx, e.ws, k.Prefix); err != nil {
			t.Fatal(err)
		}
		if !idle {
			c.subscribe("b", subCustomer, map[string]any{"id": id})
		}
		if code := c.closeCode(); code != server.CloseForbidden {
			t.Errorf("idle %v: close %d after the key was revoked, want %d", idle, code, server.CloseForbidden)
		}
		waitFor(t, "nothing running", func() bool { return e.hub.Stats().Streams == 0 })
	}
}

// A subscription selects one field. Two aliases of the same field pass
// gqlparser's rule (it counts names); they are refused as bad input, not
// answered as an internal error.
func TestSubscriptionOfTwoAliasesIsBadInput(t *testing.T) {
	e := newRTEnv(t, rtOptions{})
	c := dialWS(t, wsURL(e.srv), "graphql-transport-ws", nil)
	c.init(e.key)
	c.subscribe("two", `subscription { a: customerChanges { version } b: customerChanges { version } }`, nil)
	m := c.read()
	if (m.Type != "error" && m.Type != "next") || m.ID != "two" || !strings.Contains(string(m.Payload), c360.EINVALID) ||
		!strings.Contains(string(m.Payload), "SUBSCRIPTION_NOT_SINGLE_FIELD") {
		t.Fatalf("got %s %q %s, want an error BAD_USER_INPUT (SUBSCRIPTION_NOT_SINGLE_FIELD)", m.Type, m.ID, m.Payload)
	}
	if n := e.hub.Stats().Streams; n != 0 {
		t.Errorf("streams = %d, want none", n)
	}
}

// maskedFrames encodes client text frames as one would go on the wire, with
// a zero mask key (valid, and it leaves the payload as it is).
func maskedFrames(msgs ...string) []byte {
	var b []byte
	for _, m := range msgs {
		b = append(b, 0x81) // FIN, text
		switch n := len(m); {
		case n < 126:
			b = append(b, 0x80|byte(n))
		case n < 1<<16:
			b = append(b, 0x80|126, byte(n>>8), byte(n))
		default:
			panic("frame too long for this helper")
		}
		b = append(b, 0, 0, 0, 0)
		b = append(b, m...)
	}
	return b
}

// Client messages that arrive in one piece are all handled: the server
// waits for the socket to have data only when it holds none unread (see
// wsConn.NextReader), so the messages behind the first, already read from
// the socket, are not left waiting for more to come.
func TestWebsocketMessagesArrivingTogether(t *testing.T) {
	e := newRTEnv(t, rtOptions{})
	id := ingest(t, e.db, e.ws, email("together@example.com"), nil)
	for _, pings := range []int{1, 20} { // 20 pings are more than the read buffer holds
		c := dialWS(t, wsURL(e.srv), "graphql-transport-ws", nil)
		subscribeTogether(t, c, e, id, pings)
		ingest(t, e.db, e.ws, email("together@example.com"), map[string]any{"n": pings})
		if got := c.nextChange("s"); got.Customer == nil || got.Customer.Traits["n"] != float64(pings) {
			t.Fatalf("got %+v, want the change setting n to %d", got, pings)
		}
		c.c.Close()
		waitFor(t, "unsubscribe", func() bool { return e.hub.Stats().Streams == 0 })
	}
}

// Over TLS the server cannot wait on the socket for data (the TLS layer
// holds what it decrypted), so it reads as gorilla does. Messages that
// arrive in one TLS record are all handled, and changes are delivered.
func TestWebsocketOverTLS(t *testing.T) {
	e := newRTEnv(t, rtOptions{tls: true})
	id := ingest(t, e.db, e.ws, email("tls@example.com"), nil)
	c := dialWSS(t, e.srv, "graphql-transport-ws")
	// More than the server's read buffer holds, in one TLS record: the
	// rest waits in the TLS layer, decrypted, with nothing on the socket.
	subscribeTogether(t, c, e, id, 200)
	for n := range 3 {
		ingest(t, e.db, e.ws, email("tls@example.com"), map[string]any{"n": n})
		if got := c.nextChange("s"); got.Customer == nil || got.Customer.Traits["n"] != float64(n) {
			t.Fatalf("got %+v, want the change setting n to %d", got, n)
		}
	}
}

// subscribeTogether writes connection_init, a subscription "s" to the
// customer and pings in one write, and checks that the connection_ack and
// a pong for each ping come back and the subscription runs.
func subscribeTogether(t *testing.T, c *wsClient, e *rtEnv, customer int64, pings int) {
	t.Helper()
	msgs := []string{
		fmt.Sprintf(`{"type":"connection_init","payload":{"authorization":"Bearer %s"}}`, e.key),
		fmt.Sprintf(`{"type":"subscribe","id":"s","payload":{"query":%q,"variables":{"id":"%d"}}}`, subCustomer, customer),
	}
	for range pings {
		msgs = append(msgs, `{"type":"ping"}`)
	}
	if _, err := c.c.NetConn().Write(maskedFrames(msgs...)); err != nil {
		t.Fatal(err)
	}
	// connection_ack, then a pong for each ping (c.read skips pongs).
	for i := range pings + 1 {
		c.c.SetReadDeadline(time.Now().Add(10 * time.Second))
		var m wsMsg
		if err := c.c.ReadJSON(&m); err != nil {
			t.Fatalf("pings %d, message %d: %v", pings, i, err)
		}
		if want := map[bool]string{true: "connection_ack", false: "pong"}[i == 0]; m.Type != want {
			t.Fatalf("pings %d, message %d: got %s, want %s", pings, i, m.Type, want)
		}
	}
	waitFor(t, "subscription", func() bool { return e.hub.Stats().Streams == 1 })
}

// panickyKeys is the store as API key service, except that authenticating
// the key "panic" panics.
type panickyKeys struct{ *postgres.DB }

func (k panickyKeys) Authenticate(ctx context.Context, key string) (*c360.Principal, error) {
	if key == "panic" {
		panic("authenticate: boom")
	}
	return k.DB.Authenticate(ctx, key)
}

// A panic while serving a connection (here in its connection_init) closes
// that connection and is logged; the process and its other connections go
// on.
func TestWebsocketPanicClosesOnlyItsConnection(t *testing.T) {
	var logs logbuf.Buffer
	e := newRTEnv(t, rtOptions{cfg: server.Config{Logger: slog.New(slog.NewTextHandler(&logs, nil))},
		auth: func(db *postgres.DB) c360.APIKeyService { return panickyKeys{db} }})
	id := ingest(t, e.db, e.ws, email("panic@example.com"), nil)
	other := dialWS(t, wsURL(e.srv), "graphql-transport-ws", nil)
	other.init(e.key)
	other.subscribe("s", subCustomer, map[string]any{"id": fmt.Sprint(id)})

	c := dialWS(t, wsURL(e.srv), "graphql-transport-ws", nil)
	c.send("connection_init", "", map[string]any{"authorization": "Bearer panic"})
	if code := c.closeCode(); code != websocket.CloseNormalClosure {
		t.Errorf("close code after a panic = %d, want %d", code, websocket.CloseNormalClosure)
	}
	waitFor(t, "the panic logged", func() bool { return strings.Contains(logs.String(), "panic in graphql websocket") })

	waitFor(t, "subscription", func() bool { return e.hub.Stats().Streams == 1 })
	ingest(t, e.db, e.ws, email("panic@example.com"), map[string]any{"plan": "pro"})
	if got := other.nextChange("s"); got.Customer == nil || got.Customer.Traits["plan"] != "pro" {
		t.Fatalf("the other connection got %+v, want the change", got)
	}
}

// unsureKeys is the store as API key service, except that, once down is
// set, it cannot say whether a key still stands.
type unsureKeys struct {
	*postgres.DB
	down *atomic.Bool
}

func (k unsureKeys) KeyActive(ctx context.Context, p *c360.Principal) error {
	if k.down.Load() {
		return c360.Errorf(c360.EUNAVAILABLE, "the database did not answer")
	}
	return k.DB.KeyActive(ctx, p)
}

// A database that cannot say whether a key stands is no reason to close
// its connection or hold back its changes: a subscribe (which asks about
// the key, as a keepalive ping does) is taken, and changes are delivered;
// only a revoked key closes it (the test above).
func TestWebsocketKeyCheckUnavailableKeepsTheConnection(t *testing.T) {
	var down atomic.Bool
	e := newRTEnv(t, rtOptions{auth: func(db *postgres.DB) c360.APIKeyService { return unsureKeys{DB: db, down: &down} }})
	id := ingest(t, e.db, e.ws, email("unsure@example.com"), nil)
	vars := map[string]any{"id": fmt.Sprint(id)}
	c := dialWS(t, wsURL(e.srv), "graphql-transport-ws", nil)
	c.init(e.key)
	c.subscribe("a", subCustomer, vars)
	down.Store(true)
	c.subscribe("b", subCustomer, vars)
	waitFor(t, "both subscriptions", func() bool { return e.hub.Stats().Streams == 2 })
	ingest(t, e.db, e.ws, email("unsure@example.com"), map[string]any{"plan": "pro"})
	got := map[string]int64{}
	for range 2 {
		m := c.read()
		var ch struct {
			Data struct {
				CustomerChanged change `json:"customerChanged"`
			} `json:"data"`
		}
		if m.Type != "next" || json.Unmarshal(m.Payload, &ch) != nil {
			t.Fatalf("with the key check unavailable: got %s %s, want the change", m.Type, m.Payload)
		}
		got[m.ID] = ch.Data.CustomerChanged.Version
	}
	if got["a"] != 2 || got["b"] != 2 {
		t.Fatalf("with the key check unavailable: got versions %v, want version 2 on a and b", got)
	}
}

// connection_init carries the API key. Once the connection is
// authenticated, no connection holds the payload any more, in either
// protocol: a heap dump of a long-lived connection must not show the key.
func TestWebsocketForgetsItsInitPayload(t *testing.T) {
	e := newRTEnv(t, rtOptions{})
	c := dialWS(t, wsURL(e.srv), "graphql-transport-ws", nil)
	c.init(e.key)
	legacy := dialWS(t, wsURL(e.srv), "graphql-ws", nil)
	legacy.init(e.key)
	open, holding := e.s.WebsocketInitPayloads()
	if open != 2 || holding != 0 {
		t.Fatalf("%d connections open, %d holding their connection_init payload; want 2 and 0", open, holding)
	}
}
