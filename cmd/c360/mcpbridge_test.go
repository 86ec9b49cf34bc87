package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	sdk "github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/c360dev/c360"
	"github.com/c360dev/c360/internal/logbuf"
	"github.com/c360dev/c360/internal/pgtest"
	"github.com/c360dev/c360/postgres"
	"github.com/c360dev/c360/server"
)

// remoteMCP serves the c360 server as `c360 serve` wires /mcp, on a real
// listener. stop closes it and flushes its audit log; the test's cleanup
// calls it too.
func remoteMCP(t *testing.T, db *postgres.DB) (hs *httptest.Server, stop func()) {
	t.Helper()
	log := slog.New(slog.DiscardHandler)
	res := NewResolver(db)
	limits, err := server.LimitsFromEnv(func(string) string { return "" })
	if err != nil {
		t.Fatal(err)
	}
	sec := startSecurity(db, res, log)
	srv := server.New(server.Config{Logger: log, Limits: limits}, db, res, db)
	mountMCP(srv, db, log)
	hs = httptest.NewServer(srv)
	var once sync.Once
	stop = func() {
		once.Do(func() {
			hs.Close()
			sec.stop()
		})
	}
	t.Cleanup(stop)
	return hs, stop
}

// keyTransport adds the API key to every request of a direct MCP client.
type keyTransport struct {
	key  string
	next *http.Transport
}

func (k keyTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", "Bearer "+k.key)
	return k.next.RoundTrip(r)
}

// connectDirect opens an MCP session to endpoint over Streamable HTTP, as
// an assistant that speaks HTTP itself does.
func connectDirect(t *testing.T, endpoint, key string) *sdk.ClientSession {
	t.Helper()
	tr := &http.Transport{}
	client := sdk.NewClient(&sdk.Implementation{Name: "direct", Version: "1"}, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cs, err := client.Connect(ctx, &sdk.StreamableClientTransport{Endpoint: endpoint,
		HTTPClient: &http.Client{Transport: keyTransport{key, tr}}, DisableStandaloneSSE: true}, nil)
	if err != nil {
		t.Fatalf("connect directly: %v", err)
	}
	t.Cleanup(func() {
		cs.Close()
		tr.CloseIdleConnections()
	})
	return cs
}

// startBridge runs `c360 mcp args...` with env and connects to it over
// its stdin and stdout as a desktop assistant does. Closing the session
// ends the bridge, whose error done then yields.
func startBridge(t *testing.T, env map[string]string, args ...string) (cs *sdk.ClientSession, stderr *logbuf.Buffer, done <-chan error) {
	t.Helper()
	inR, inW := io.Pipe()
	outR, outW := io.Pipe()
	stderr = &logbuf.Buffer{}
	m := NewMain(outW, stderr, func(k string) string { return env[k] })
	m.Stdin = inR
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	errc := make(chan error, 1)
	go func() {
		defer cancel()
		err := m.Run(ctx, append([]string{"mcp"}, args...))
		outW.Close()
		inR.Close()
		errc <- err
	}()
	client := sdk.NewClient(&sdk.Implementation{Name: "desktop", Version: "1"}, nil)
	cctx, ccancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer ccancel()
	cs, err := client.Connect(cctx, &sdk.IOTransport{Reader: outR, Writer: inW}, nil)
	if err != nil {
		t.Fatalf("connect to the bridge: %v\nstderr: %s", err, stderr.String())
	}
	return cs, stderr, errc
}

// runBridge runs `c360 mcp args...` with env and nothing on its stdin.
func runBridge(env map[string]string, args ...string) (string, error) {
	var stderr logbuf.Buffer
	m := NewMain(io.Discard, &stderr, func(k string) string { return env[k] })
	m.Stdin = strings.NewReader("")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err := m.Run(ctx, append([]string{"mcp"}, args...))
	return stderr.String(), err
}

// callJSON calls a tool and returns the result, or the JSON-RPC error, as
// text to compare. (The go-sdk client words a JSON-RPC error in its own
// words, which depend on the transport; its code and message are the
// server's.)
func callJSON(t *testing.T, cs *sdk.ClientSession, name string, args map[string]any) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res, err := cs.CallTool(ctx, &sdk.CallToolParams{Name: name, Arguments: args})
	var werr *jsonrpc.Error
	if errors.As(err, &werr) {
		return fmt.Sprintf("JSON-RPC error %d: %s", werr.Code, werr.Message)
	} else if err != nil {
		t.Fatalf("call %s: %v", name, err)
	}
	b, err := json.Marshal(res)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestMCPBridge runs `c360 mcp --url` as a desktop assistant does, with
// only an API key in its environment (no DATABASE_URL), against a c360
// server's /mcp: it serves the server's tools, answers what the server
// answers (results, tool errors and protocol errors alike), and once the
// key is revoked fails the next call with UNAUTHENTICATED and ends
// non-zero, never showing the key.
func TestMCPBridge(t *testing.T) {
	db := pgtest.Open(t)
	ctx := context.Background()
	ws, slug, _ := pgtest.Workspace(t, db)
	key, k, err := db.CreateAPIKey(ctx, slug, c360.RoleAssistant, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Ingest(ctx, ws, []*c360.Event{{Type: c360.EventIdentify, Source: "test", DedupeKey: "bridge-1",
		Identities: []c360.Identity{{Type: "email", Value: "bridge@example.com"}, {Type: "phone", Value: "+14155550177"}},
		Traits:     map[string]any{"name": "Bridge Bea"}}}); err != nil {
		t.Fatal(err)
	}
	hs, stop := remoteMCP(t, db)
	direct := connectDirect(t, hs.URL+"/mcp", key)
	cs, stderr, done := startBridge(t, map[string]string{"C360_API_KEY": key}, "--url", hs.URL+"/mcp")

	// The server's tools, as the server lists them, and its instructions.
	want, err := direct.ListTools(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	got, err := cs.ListTools(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	wantJSON, _ := json.Marshal(want.Tools)
	gotJSON, _ := json.Marshal(got.Tools)
	if len(got.Tools) == 0 || string(gotJSON) != string(wantJSON) {
		t.Errorf("tools over the bridge =\n%s\nwant the server's\n%s", gotJSON, wantJSON)
	}
	if g, w := cs.InitializeResult().Instructions, direct.InitializeResult().Instructions; g == "" || g != w {
		t.Errorf("instructions over the bridge = %q, want the server's %q", g, w)
	}

	// The same answers as a direct call, masked for the assistant key.
	for _, c := range []struct {
		name string
		args map[string]any
	}{
		{"get_customer_context", map[string]any{"type": "phone", "value": "415 555 0177", "budget": 500}},
		{"search_customers", map[string]any{"query": "bridge@example.com"}},
		{"lookup_customer", map[string]any{"type": "email", "value": "nobody@example.com"}},
		{"get_customer_context", map[string]any{"customerId": "999999999"}},
		// Refusals pass through as the server sent them: by GraphQL,
		// by the input schema, and of a tool it does not have.
		{"get_customer_context", map[string]any{"type": "phone", "value": "415 555 0177", "budget": 5}},
		{"get_customer_context", map[string]any{"type": "phone", "value": "415 555 0177", "budget": "many"}},
		{"no_such_tool", map[string]any{}},
	} {
		g, w := callJSON(t, cs, c.name, c.args), callJSON(t, direct, c.name, c.args)
		if g != w {
			t.Errorf("%s %v over the bridge =\n%s\nwant, as directly,\n%s", c.name, c.args, g, w)
		}
	}
	if got := callJSON(t, cs, "get_customer_context", map[string]any{"type": "email", "value": "bridge@example.com"}); !strings.Contains(got, `b***@example.com`) ||
		strings.Contains(got, "bridge@example.com") || strings.Contains(got, "Bridge Bea") {
		t.Errorf("context over the bridge is not masked for an assistant: %s", got)
	}

	// The server stops: the call it does not answer is the tool error the
	// bridge documents, naming the URL, not a protocol error the server
	// never sent, and the bridge logs it, never the key. Back on the same
	// address, the server answers the next call.
	addr, handler := hs.Listener.Addr().String(), hs.Config.Handler
	hs.Close()
	bea := map[string]any{"type": "email", "value": "bridge@example.com"}
	lookup := &sdk.CallToolParams{Name: "lookup_customer", Arguments: bea}
	res, err := cs.CallTool(ctx, lookup)
	if err != nil || !res.IsError || len(res.Content) != 1 {
		t.Fatalf("call to a stopped server = %+v, %v; want a tool error", res, err)
	}
	if text := res.Content[0].(*sdk.TextContent).Text; !strings.HasPrefix(text, "UNAVAILABLE: c360 at "+hs.URL+"/mcp did not answer: ") ||
		strings.Contains(text, key) {
		t.Errorf("call to a stopped server = %q, want UNAVAILABLE naming %s/mcp, without the key", text, hs.URL)
	}
	if s := stderr.String(); !strings.Contains(s, "mcp bridge: call") || !strings.Contains(s, "lookup_customer") || strings.Contains(s, key) {
		t.Errorf("stderr = %s; want the failed call logged, without the key", s)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("listen again on %s: %v", addr, err)
	}
	again := httptest.NewUnstartedServer(handler)
	again.Listener.Close()
	again.Listener = ln
	again.Start()
	defer again.Close()
	if got := callJSON(t, cs, "lookup_customer", bea); !strings.Contains(got, `b***@example.com`) || strings.Contains(got, `"isError":true`) {
		t.Errorf("call once the server is back = %s, want the customer", got)
	}

	// Revoked: the next call fails, clearly.
	if _, _, err := db.RevokeAPIKey(ctx, ws, k.Prefix); err != nil {
		t.Fatal(err)
	}
	res, err = cs.CallTool(ctx, lookup)
	if err != nil || !res.IsError || len(res.Content) != 1 {
		t.Fatalf("call after revocation = %+v, %v; want a tool error", res, err)
	}
	if text := res.Content[0].(*sdk.TextContent).Text; !strings.HasPrefix(text, "UNAUTHENTICATED: ") || !strings.Contains(text, "revoked") ||
		strings.Contains(text, key) {
		t.Errorf("call after revocation = %q, want UNAUTHENTICATED naming the refused key, without it", text)
	}
	cs.Close()
	select {
	case err := <-done:
		if c360.ErrorCode(err) != c360.EUNAUTHENTICATED {
			t.Errorf("bridge ended with %v, want UNAUTHENTICATED (a non-zero exit)", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the bridge did not end when its stdin closed")
	}
	if s := stderr.String(); !strings.Contains(s, "refused C360_API_KEY") || strings.Contains(s, key) {
		t.Errorf("stderr = %s; want the refusal, without the key", s)
	}

	again.Close()
	stop()
	entries, _, _, err := db.FindAuditEntries(ctx, ws, c360.AuditFilter{Action: c360.AuditCustomerRead, First: 50})
	if err != nil || len(entries) == 0 || entries[0].Role != c360.RoleAssistant {
		t.Errorf("audit entries = %+v, %v; want the assistant's reads over the bridge", entries, err)
	}
}

// TestMCPBridgeRefusals: a bad key, an unreachable server and a URL that
// would send the key in clear each stop the bridge before it serves, with
// a message that names the cause and never the key.
func TestMCPBridgeRefusals(t *testing.T) {
	db := pgtest.Open(t)
	hs, _ := remoteMCP(t, db)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := "http://" + ln.Addr().String() + "/mcp"
	ln.Close()
	unknownKey := "c360_0000000000bd_" + strings.Repeat("x", 43)

	for _, c := range []struct {
		name     string
		env      map[string]string
		args     []string
		code     int
		contains []string
	}{
		{"bad key", map[string]string{"C360_API_KEY": unknownKey}, []string{"--url", hs.URL + "/mcp"}, 1,
			[]string{"refused C360_API_KEY (401 Unauthorized)", "unknown or revoked"}},
		{"unreachable", map[string]string{"C360_API_KEY": unknownKey}, []string{"--url", closed}, 1,
			[]string{"connect to c360's MCP endpoint at " + closed, "connection refused"}},
		{"http to another host", map[string]string{"C360_API_KEY": unknownKey}, []string{"--url", "http://c360.example.com/mcp"}, 2,
			[]string{"refusing http://c360.example.com", "in clear", "https"}},
		{"http to another host, from C360_MCP_URL", map[string]string{"C360_API_KEY": unknownKey, "C360_MCP_URL": "http://10.0.0.7:8080/mcp"}, nil, 2,
			[]string{"refusing http://10.0.0.7:8080", "in clear"}},
		{"a name that only starts like localhost", map[string]string{"C360_API_KEY": unknownKey}, []string{"--url", "http://localhost.example.com/mcp"}, 2,
			[]string{"refusing http://localhost.example.com"}},
		{"not a URL", map[string]string{"C360_API_KEY": unknownKey}, []string{"--url", "c360.example.com/mcp"}, 2,
			[]string{"not an absolute URL"}},
		{"no key", map[string]string{"DATABASE_URL": pgtest.URL(t)}, []string{"--url", hs.URL + "/mcp"}, 2,
			[]string{"C360_API_KEY is not set"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			stderr, err := runBridge(c.env, c.args...)
			if err == nil || exitCode(err) != c.code {
				t.Fatalf("err = %v (exit %d), want exit %d", err, exitCode(err), c.code)
			}
			msg := c360.ErrorMessageOrText(err)
			for _, s := range c.contains {
				if !strings.Contains(msg, s) {
					t.Errorf("message %q does not say %q", msg, s)
				}
			}
			if strings.Contains(msg, unknownKey) || strings.Contains(stderr, unknownKey) {
				t.Errorf("the key is shown: message %q, stderr %q", msg, stderr)
			}
		})
	}
}
