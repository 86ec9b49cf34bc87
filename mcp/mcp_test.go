package mcp_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	sdk "github.com/modelcontextprotocol/go-sdk/mcp"
	"go.uber.org/goleak"

	"github.com/c360dev/c360"
	"github.com/c360dev/c360/internal/pgtest"
	"github.com/c360dev/c360/mcp"
	"github.com/c360dev/c360/postgres"
	"github.com/c360dev/c360/resolver"
	"github.com/c360dev/c360/server"
)

func TestMain(m *testing.M) {
	code := m.Run()
	pgtest.Drop()
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintf(os.Stderr, "goleak: %v\n", err)
			code = 1
		}
	}
	os.Exit(code)
}

// fakeSender stands in for Twilio's REST API, outside our reach in tests.
type fakeSender struct {
	mu   sync.Mutex
	sent []c360.OutboundMessage
}

func (f *fakeSender) CheckSender(*c360.Workspace, string) error { return nil }

func (f *fakeSender) SendMessage(_ context.Context, _ *c360.Workspace, m c360.OutboundMessage) (*c360.SentMessage, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.sent = append(f.sent, m)
	return &c360.SentMessage{ProviderID: fmt.Sprintf("SMfake%d%d", time.Now().UnixNano(), len(f.sent)), Status: "queued"}, nil
}

func (f *fakeSender) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.sent)
}

// env is the c360 server as `c360 serve` wires it, with /mcp mounted; one
// workspace with a key per role and Jane, who wrote by SMS and opted out of
// WhatsApp.
type env struct {
	db     *postgres.DB
	srv    *httptest.Server
	audit  *postgres.AuditWriter
	sender *fakeSender
	ws     int64
	keys   map[string]string
	jane   string
}

const (
	janeEmail = "jane@example.com"
	janePhone = "+14155550100"
	janeName  = "Jane Doe"
)

func newEnv(t *testing.T) *env {
	t.Helper()
	db := pgtest.Open(t)
	ctx := context.Background()
	ws, slug, admin := pgtest.Workspace(t, db)
	e := &env{db: db, ws: ws, keys: map[string]string{"admin": admin}, sender: &fakeSender{}}
	for name, k := range map[string]struct {
		role   c360.Role
		scopes []string
	}{"agent": {c360.RoleAgent, nil}, "assistant": {c360.RoleAssistant, nil}, "assistant+pii": {c360.RoleAssistant, []string{c360.ScopePII}}} {
		secret, _, err := db.CreateAPIKey(ctx, slug, k.role, k.scopes)
		if err != nil {
			t.Fatal(err)
		}
		e.keys[name] = secret
	}
	log := slog.New(slog.DiscardHandler)
	e.audit = postgres.NewAuditWriter(db, postgres.AuditWriterConfig{Logger: log})
	r := &resolver.Resolver{CustomerService: db, EventService: db, ConversationService: db, IdentityService: db,
		Ingester: db, Now: db.Now, MessagingService: db, MessageSender: e.sender, Keys: db, Audit: e.audit,
		ContextService: db, ObservationService: db}
	s := server.New(server.Config{Logger: log}, db, r, db)
	s.Handle("/mcp", mcp.New(mcp.Config{GraphQL: s, Auth: db, Authenticate: s.AuthenticateRequest,
		StatusOf: server.StatusOf, Logger: log}).Handler())
	e.srv = httptest.NewServer(s)
	t.Cleanup(func() {
		e.srv.Close()
		e.audit.Close()
	})

	now := time.Now().UTC()
	phone := []c360.Identity{{Type: "phone", Value: janePhone}}
	for i, ev := range []*c360.Event{
		{Type: c360.EventIdentify, Identities: []c360.Identity{{Type: "email", Value: janeEmail}},
			Traits: map[string]any{"name": janeName, "phone": janePhone, "plan": "pro"}},
		{Type: c360.EventMessage, Identities: phone,
			Message: &c360.MessageInput{Channel: c360.ChannelSMS, Direction: c360.DirectionInbound, Body: "where is my order?", Status: "received"}},
		{Type: c360.EventTrack, Name: "WhatsApp Opt Out", Identities: phone, Consent: &c360.ConsentInput{Channel: c360.ChannelWhatsApp, Status: c360.ConsentOptedOut}},
	} {
		ev.Source, ev.DedupeKey, ev.OccurredAt = "test", fmt.Sprint("seed", i), now.Add(time.Duration(i)*time.Second)
		res, err := db.Ingest(ctx, ws, []*c360.Event{ev})
		if err != nil {
			t.Fatal(err)
		}
		e.jane = fmt.Sprint(res[0].CustomerID)
	}
	if _, err := db.UpdateWorkspace(ctx, slug, c360.WorkspaceUpdate{TwilioAccountSID: ptr("AC1"), TwilioAuthToken: ptr("t"),
		TwilioSMSFrom: ptr("+15005550006")}); err != nil {
		t.Fatal(err)
	}
	return e
}

func ptr[T any](v T) *T { return &v }

// bearer adds the API key to every request of the MCP client.
type bearer struct {
	key  string
	next http.RoundTripper
}

func (b bearer) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", "Bearer "+b.key)
	return b.next.RoundTrip(r)
}

// connect opens an MCP session over Streamable HTTP with the key.
func (e *env) connect(t *testing.T, key string) *sdk.ClientSession {
	t.Helper()
	client := sdk.NewClient(&sdk.Implementation{Name: "c360-test", Version: "1"}, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cs, err := client.Connect(ctx, &sdk.StreamableClientTransport{Endpoint: e.srv.URL + "/mcp",
		HTTPClient: &http.Client{Transport: bearer{key, http.DefaultTransport}}}, nil)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	t.Cleanup(func() { cs.Close() })
	return cs
}

// call calls a tool and returns its result's JSON text and whether it is an error.
func call(t *testing.T, cs *sdk.ClientSession, name string, args map[string]any) (map[string]any, string, bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res, err := cs.CallTool(ctx, &sdk.CallToolParams{Name: name, Arguments: args})
	if err != nil {
		t.Fatalf("call %s: %v", name, err)
	}
	if len(res.Content) == 0 {
		t.Fatalf("call %s: no content", name)
	}
	text, ok := res.Content[0].(*sdk.TextContent)
	if !ok {
		t.Fatalf("call %s: content %T, want text", name, res.Content[0])
	}
	if res.IsError {
		return nil, text.Text, true
	}
	var out map[string]any
	if err := json.Unmarshal([]byte(text.Text), &out); err != nil {
		t.Fatalf("call %s: text is not JSON: %v\n%s", name, err, text.Text)
	}
	structured, _ := json.Marshal(res.StructuredContent)
	var same map[string]any
	if err := json.Unmarshal(structured, &same); err != nil || fmt.Sprint(same) != fmt.Sprint(out) {
		t.Errorf("call %s: structured content %s differs from the text %s", name, structured, text.Text)
	}
	return out, text.Text, false
}

func TestToolsOverStreamableHTTP(t *testing.T) {
	e := newEnv(t)
	cs := e.connect(t, e.keys["assistant"])

	// Every tool is listed with a description and an object schema.
	ctx := context.Background()
	tools, err := cs.ListTools(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, tool := range tools.Tools {
		names = append(names, tool.Name)
		schema, _ := json.Marshal(tool.InputSchema)
		if len(tool.Description) < 40 || !strings.Contains(string(schema), `"type":"object"`) || !strings.Contains(string(schema), `"properties"`) {
			t.Errorf("tool %s: description %q, schema %s", tool.Name, tool.Description, schema)
		}
	}
	slices.Sort(names)
	if got, want := strings.Join(names, " "), "get_customer_context list_recent_messages lookup_customer record_observation search_customers send_message"; got != want {
		t.Fatalf("tools = %s, want %s", got, want)
	}
	for _, tool := range tools.Tools {
		if tool.Name == mcp.ToolSendMessage {
			schema, _ := json.Marshal(tool.InputSchema)
			if !strings.Contains(string(schema), `"enum":["sms","whatsapp"]`) || !strings.Contains(string(schema), `"required":["customerId","channel","body"]`) {
				t.Errorf("send_message schema = %s", schema)
			}
		}
	}

	// lookup_customer: found by a phone in any format, masked for this key.
	out, text, _ := call(t, cs, mcp.ToolLookupCustomer, map[string]any{"type": "phone", "value": "(415) 555-0100"})
	cust, _ := out["customer"].(map[string]any)
	if cust == nil || cust["id"] != e.jane || !strings.Contains(text, "j***@example.com") || !strings.Contains(text, "+1******0100") {
		t.Errorf("lookup_customer = %s", text)
	}
	assertMasked(t, text)
	if out, text, _ := call(t, cs, mcp.ToolLookupCustomer, map[string]any{"type": "email", "value": "nobody@example.com"}); out["customer"] != nil {
		t.Errorf("lookup of nobody = %s, want customer null", text)
	}

	// get_customer_context, by identity and by id, within a budget.
	out, text, _ = call(t, cs, mcp.ToolGetCustomerContext, map[string]any{"type": "email", "value": janeEmail, "budget": 300})
	cc, _ := out["context"].(map[string]any)
	block, _ := cc["text"].(string)
	if cc == nil || cc["customerId"] != e.jane || len([]rune(block)) > 300 || !strings.Contains(block, "whatsapp opted_out") ||
		!strings.Contains(block, "j***@example.com") {
		t.Errorf("get_customer_context = %s", text)
	}
	assertMasked(t, text)
	out, _, _ = call(t, cs, mcp.ToolGetCustomerContext, map[string]any{"customerId": e.jane})
	if cc, _ := out["context"].(map[string]any); cc == nil || !strings.Contains(fmt.Sprint(cc["text"]), "where is my order?") {
		t.Errorf("get_customer_context by id = %v", out)
	}
	if _, msg, isErr := call(t, cs, mcp.ToolGetCustomerContext, map[string]any{}); !isErr || !strings.Contains(msg, c360.EINVALID) {
		t.Errorf("get_customer_context without a customer: %v %s, want BAD_USER_INPUT", isErr, msg)
	}

	// search_customers and list_recent_messages.
	// This key reads masked data: it searches by a whole address only.
	out, text, _ = call(t, cs, mcp.ToolSearchCustomers, map[string]any{"query": janeEmail})
	if list, _ := out["customers"].([]any); len(list) != 1 || out["hasMore"] != false {
		t.Errorf("search_customers = %s", text)
	}
	assertMasked(t, text)
	if _, msg, isErr := call(t, cs, mcp.ToolSearchCustomers, map[string]any{"query": "jane"}); !isErr || !strings.Contains(msg, c360.EFORBIDDEN) {
		t.Errorf("search_customers by a name without the pii scope: %v %s, want FORBIDDEN", isErr, msg)
	}
	out, text, _ = call(t, cs, mcp.ToolListRecentMessages, map[string]any{"customerId": e.jane})
	msgs, _ := out["messages"].([]any)
	if len(msgs) != 1 || msgs[0].(map[string]any)["body"] != "where is my order?" || msgs[0].(map[string]any)["channel"] != "sms" {
		t.Errorf("list_recent_messages = %s", text)
	}
	if _, msg, isErr := call(t, cs, mcp.ToolListRecentMessages, map[string]any{"customerId": "999999999"}); !isErr || !strings.Contains(msg, c360.ENOTFOUND) {
		t.Errorf("messages of nobody: %v %s, want NOT_FOUND", isErr, msg)
	}

	// record_observation: with the assistant's key as provenance; then in context.
	out, text, _ = call(t, cs, mcp.ToolRecordObservation, map[string]any{"customerId": e.jane, "text": "prefers SMS", "source": "test-bot", "confidence": 0.8})
	obs, _ := out["observation"].(map[string]any)
	if obs == nil || obs["recordedByRole"] != "ASSISTANT" || obs["source"] != "test-bot" || obs["confidence"] != 0.8 {
		t.Errorf("record_observation = %s", text)
	}
	if _, msg, isErr := call(t, cs, mcp.ToolRecordObservation, map[string]any{"customerId": e.jane, "text": strings.Repeat("x", 4097)}); !isErr || !strings.Contains(msg, c360.EINVALID) {
		t.Errorf("a 4097-byte observation: %v %s, want BAD_USER_INPUT", isErr, msg)
	}
	out, _, _ = call(t, cs, mcp.ToolGetCustomerContext, map[string]any{"customerId": e.jane})
	if !strings.Contains(fmt.Sprint(out), "prefers SMS") {
		t.Errorf("context after record_observation lacks it: %v", out)
	}

	// send_message: refused to an assistant, as sendMessage is in GraphQL.
	if _, msg, isErr := call(t, cs, mcp.ToolSendMessage, map[string]any{"customerId": e.jane, "channel": "sms", "body": "hi"}); !isErr || !strings.Contains(msg, c360.EFORBIDDEN) {
		t.Errorf("send_message by an assistant: %v %s, want FORBIDDEN", isErr, msg)
	}
	// Malformed arguments are refused by the schema.
	if _, msg, isErr := call(t, cs, mcp.ToolSendMessage, map[string]any{"customerId": e.jane, "channel": "fax", "body": "hi"}); !isErr {
		t.Errorf("send_message on fax: %s, want an error", msg)
	}
	if e.sender.count() != 0 {
		t.Fatalf("messages sent: %d, want 0", e.sender.count())
	}

	// An agent sends, consent-gated exactly as sendMessage: WhatsApp is opted out.
	agent := e.connect(t, e.keys["agent"])
	if _, msg, isErr := call(t, agent, mcp.ToolSendMessage, map[string]any{"customerId": e.jane, "channel": "whatsapp", "body": "hi"}); !isErr ||
		!strings.Contains(msg, c360.EFORBIDDEN) || !strings.Contains(msg, "opted out") {
		t.Errorf("send_message to an opted-out channel: %v %s, want FORBIDDEN", isErr, msg)
	}
	// A body PostgreSQL could not record is refused before anything is sent.
	if _, msg, isErr := call(t, agent, mcp.ToolSendMessage, map[string]any{"customerId": e.jane, "channel": "sms", "body": "code\u0000 4242"}); !isErr ||
		!strings.Contains(msg, c360.EINVALID) || !strings.Contains(msg, "NUL") || e.sender.count() != 0 {
		t.Errorf("send_message with a NUL: %v %s (sent %d), want BAD_USER_INPUT and nothing sent", isErr, msg, e.sender.count())
	}
	out, text, _ = call(t, agent, mcp.ToolSendMessage, map[string]any{"customerId": e.jane, "channel": "sms", "body": "It ships today."})
	if m, _ := out["message"].(map[string]any); m == nil || m["direction"] != "outbound" || m["status"] != "queued" || e.sender.count() != 1 {
		t.Errorf("send_message by an agent = %s (sent %d)", text, e.sender.count())
	}
	// An agent reads unmasked: same tools, the key decides.
	_, text, _ = call(t, agent, mcp.ToolLookupCustomer, map[string]any{"type": "email", "value": janeEmail})
	if !strings.Contains(text, janePhone) || !strings.Contains(text, janeName) {
		t.Errorf("agent's lookup_customer is masked: %s", text)
	}

	// The same audit as GraphQL: the assistant's reads are recorded, its
	// lookup of nobody as a count, the agent's send too.
	if err := e.audit.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	reads, _, _, err := e.db.FindAuditEntries(ctx, e.ws, c360.AuditFilter{Action: c360.AuditCustomerRead, First: 100})
	if err != nil {
		t.Fatal(err)
	}
	var ops []string
	for _, r := range reads {
		if r.CustomerID == 0 {
			if r.Role != c360.RoleAssistant || fmt.Sprint(r.Fields) != "[lookup.customerByIdentity(email)]" || fmt.Sprint(r.Detail["notFound"]) != "1" {
				t.Errorf("customer.read entry of nobody = %+v, want the assistant's lookup of nobody@example.com", r)
			}
			continue
		}
		if r.Role != c360.RoleAssistant || fmt.Sprint(r.CustomerID) != e.jane {
			t.Errorf("customer.read entry = %+v, want the assistant reading Jane", r)
		}
		ops = append(ops, fmt.Sprint(r.Detail["operation"]))
	}
	for _, op := range []string{"LookupCustomer", "CustomerContext", "SearchCustomers", "RecentMessages"} {
		if !slices.Contains(ops, op) {
			t.Errorf("no customer.read entry for %s; entries' operations: %v", op, ops)
		}
	}
	sends, _, _, err := e.db.FindAuditEntries(ctx, e.ws, c360.AuditFilter{Action: c360.AuditMessageSend, First: 10})
	if err != nil || len(sends) != 1 || sends[0].Role != c360.RoleAgent {
		t.Errorf("message.send entries = %+v, %v; want the agent's one", sends, err)
	}
}

// assertMasked fails if text carries any of Jane's personal data unmasked.
func assertMasked(t *testing.T, text string) {
	t.Helper()
	for _, raw := range []string{janeEmail, janePhone, janeName} {
		if strings.Contains(text, raw) {
			t.Errorf("assistant read %q unmasked: %s", raw, text)
		}
	}
}

func TestMCPAuthentication(t *testing.T) {
	e := newEnv(t)
	initialize := `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}`
	for name, auth := range map[string]string{"no key": "", "not bearer": "Basic eDp5", "bad key": "Bearer c360_000000000000_nope",
		"revoked-looking": "Bearer " + e.keys["assistant"] + "x"} {
		req, _ := http.NewRequest(http.MethodPost, e.srv.URL+"/mcp", strings.NewReader(initialize))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Accept", "application/json, text/event-stream")
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized || !strings.Contains(string(body), c360.EUNAUTHENTICATED) ||
			!strings.HasPrefix(resp.Header.Get("WWW-Authenticate"), "Bearer") {
			t.Errorf("%s: status %d, WWW-Authenticate %q, body %s; want 401 UNAUTHENTICATED", name, resp.StatusCode, resp.Header.Get("WWW-Authenticate"), body)
		}
		if strings.Contains(string(body), "c360_") {
			t.Errorf("%s: the answer echoes the key: %s", name, body)
		}
	}
	client := sdk.NewClient(&sdk.Implementation{Name: "t", Version: "1"}, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if cs, err := client.Connect(ctx, &sdk.StreamableClientTransport{Endpoint: e.srv.URL + "/mcp"}, nil); err == nil {
		cs.Close()
		t.Error("an MCP client without a key connected")
	}
}

// wire records the bodies of the MCP server's answers, as sent.
type wire struct {
	next   http.RoundTripper
	mu     sync.Mutex
	bodies [][]byte
}

func (w *wire) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := w.next.RoundTrip(r)
	if err != nil {
		return nil, err
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return nil, err
	}
	w.mu.Lock()
	w.bodies = append(w.bodies, body)
	w.mu.Unlock()
	resp.Body = io.NopCloser(strings.NewReader(string(body)))
	return resp, nil
}

// last returns the structured content of the last answer, as sent.
func (w *wire) lastStructured(t *testing.T) string {
	t.Helper()
	w.mu.Lock()
	defer w.mu.Unlock()
	var msg struct {
		Result struct {
			StructuredContent json.RawMessage `json:"structuredContent"`
		} `json:"result"`
	}
	if len(w.bodies) == 0 || json.Unmarshal(w.bodies[len(w.bodies)-1], &msg) != nil {
		t.Fatalf("no JSON-RPC answer recorded")
	}
	return string(msg.Result.StructuredContent)
}

// A tool's result carries a trait's number as GraphQL does, every digit and
// the scale: an assistant told a loyalty id of 12345678901234567 must not
// read 12345678901234568 (as a float64 rounds it), in the text content or
// in the structured content.
// TestRecordObservationRetry: record_observation called again with the
// same messageId (an assistant retrying after a lost answer) returns the
// stored observation, and one observation and one change are stored;
// another messageId records another.
func TestRecordObservationRetry(t *testing.T) {
	e := newEnv(t)
	cs := e.connect(t, e.keys["assistant"])
	stored := func() (observations, changes int) {
		t.Helper()
		if err := e.db.Pool.QueryRow(context.Background(), `SELECT
			(SELECT count(*) FROM observations WHERE workspace_id = $1),
			(SELECT count(*) FROM customer_changes WHERE workspace_id = $1 AND kind = 'observation')`, e.ws).Scan(&observations, &changes); err != nil {
			t.Fatal(err)
		}
		return observations, changes
	}
	record := func(text, messageID string) string {
		t.Helper()
		out, res, isErr := call(t, cs, mcp.ToolRecordObservation, map[string]any{"customerId": e.jane, "text": text, "messageId": messageID})
		obs, _ := out["observation"].(map[string]any)
		if isErr || obs == nil {
			t.Fatalf("record_observation: %s", res)
		}
		id, _ := obs["id"].(string)
		return id
	}
	first := record("prefers SMS", "bot-turn-4")
	if again := record("prefers SMS", "bot-turn-4"); again != first {
		t.Errorf("retry returned observation %s, want the stored %s", again, first)
	}
	if o, c := stored(); o != 1 || c != 1 {
		t.Errorf("after a retry: %d observations, %d changes; want 1, 1", o, c)
	}
	if other := record("prefers SMS", "bot-turn-5"); other == first {
		t.Errorf("another messageId returned the stored observation %s, want a new one", first)
	}
	if o, c := stored(); o != 2 || c != 2 {
		t.Errorf("after another messageId: %d observations, %d changes; want 2, 2", o, c)
	}
}

// An assistant's host that calls send_message again after a lost answer
// texts the customer once.
func TestSendMessageRetry(t *testing.T) {
	e := newEnv(t)
	cs := e.connect(t, e.keys["agent"])
	send := func(body, messageID string) string {
		t.Helper()
		out, res, isErr := call(t, cs, mcp.ToolSendMessage, map[string]any{"customerId": e.jane, "channel": "sms", "body": body, "messageId": messageID})
		m, _ := out["message"].(map[string]any)
		if isErr || m == nil {
			t.Fatalf("send_message: %s", res)
		}
		// errorCode says why a message the provider took failed later; a
		// repeat of such a send returns it.
		if _, ok := m["errorCode"]; !ok {
			t.Errorf("send_message's message has no errorCode: %s", res)
		}
		id, _ := m["id"].(string)
		return id
	}
	first := send("It ships today.", "turn-7")
	if again := send("It ships today.", "turn-7"); again != first || e.sender.count() != 1 {
		t.Errorf("retry returned message %s (sent %d), want the stored %s, sent once", again, e.sender.count(), first)
	}
	if _, msg, isErr := call(t, cs, mcp.ToolSendMessage, map[string]any{"customerId": e.jane, "channel": "sms", "body": "Other text", "messageId": "turn-7"}); !isErr ||
		!strings.Contains(msg, c360.ECONFLICT) || e.sender.count() != 1 {
		t.Errorf("another body under the messageId: %v %s (sent %d), want CONFLICT", isErr, msg, e.sender.count())
	}
}

func TestToolResultsKeepEveryDigit(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	ev := &c360.Event{Type: c360.EventIdentify, Identities: []c360.Identity{{Type: "email", Value: "ada@example.com"}},
		Traits: map[string]any{"name": "Ada Digits", "loyaltyId": json.Number("12345678901234567"), "balance": json.Number("0.10")},
		Source: "test", DedupeKey: "digits", OccurredAt: time.Now().UTC()}
	res, err := e.db.Ingest(ctx, e.ws, []*c360.Event{ev})
	if err != nil {
		t.Fatal(err)
	}
	ada := fmt.Sprint(res[0].CustomerID)

	w := &wire{next: bearer{e.keys["assistant+pii"], http.DefaultTransport}}
	client := sdk.NewClient(&sdk.Implementation{Name: "c360-test", Version: "1"}, nil)
	cs, err := client.Connect(ctx, &sdk.StreamableClientTransport{Endpoint: e.srv.URL + "/mcp", HTTPClient: &http.Client{Transport: w}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer cs.Close()
	for _, c := range []struct {
		tool string
		args map[string]any
	}{
		{mcp.ToolLookupCustomer, map[string]any{"type": "email", "value": "ada@example.com"}},
		{mcp.ToolGetCustomerContext, map[string]any{"customerId": ada}},
		{mcp.ToolSearchCustomers, map[string]any{"query": "Ada Digits"}},
	} {
		_, text, isErr := call(t, cs, c.tool, c.args)
		structured := w.lastStructured(t)
		for name, got := range map[string]string{"text": text, "structured content": structured} {
			if isErr || !strings.Contains(got, `"loyaltyId":12345678901234567`) || !strings.Contains(got, `"balance":0.10`) {
				t.Errorf("%s: %s = %s; want loyaltyId 12345678901234567 and balance 0.10 as stored", c.tool, name, got)
			}
		}
	}
}

// A number argument out of its range is refused by the input schema, with
// the property named, before the SDK decodes it: the decoder's error would
// name Go's types.
func TestOutOfRangeArgumentsAreRefusedByTheSchema(t *testing.T) {
	e := newEnv(t)
	cs := e.connect(t, e.keys["assistant"])
	for _, c := range []struct {
		tool, property string
		args           map[string]any
	}{
		{mcp.ToolGetCustomerContext, "budget", map[string]any{"customerId": e.jane, "budget": 1e30}},
		{mcp.ToolListRecentMessages, "limit", map[string]any{"customerId": e.jane, "limit": json.Number("9223372036854775808")}},
		// These two were refused before the bounds too (by the tool and by
		// GraphQL); they hold the promise whichever check refuses them.
		{mcp.ToolSearchCustomers, "first", map[string]any{"query": janeEmail, "first": -1}},
		{mcp.ToolRecordObservation, "confidence", map[string]any{"customerId": e.jane, "text": "x", "confidence": 1.5}},
	} {
		_, msg, isErr := call(t, cs, c.tool, c.args)
		if !isErr || !strings.Contains(msg, c.property) || strings.Contains(msg, "Go struct") || strings.Contains(msg, "mcp.") {
			t.Errorf("%s with %v: error %v, %q; want a refusal naming %s and no Go type", c.tool, c.args, isErr, msg, c.property)
		}
	}
}

// inbound is a message from the customer, on its channel (and chat
// thread), at its time.
type inbound struct {
	channel, thread, body string
	at                    time.Time
}

// inbound stores the messages as received from phone, in order, and returns
// the customer's id.
func (e *env) inbound(t *testing.T, phone string, msgs []inbound) string {
	t.Helper()
	var id int64
	for i, m := range msgs {
		ev := &c360.Event{Type: c360.EventMessage, Identities: []c360.Identity{{Type: "phone", Value: phone}},
			Source: "test", DedupeKey: fmt.Sprint(phone, "/", i), OccurredAt: m.at, ReceivedAt: m.at,
			Message: &c360.MessageInput{Channel: m.channel, Direction: c360.DirectionInbound, Body: m.body, Status: "received"}}
		if m.thread != "" {
			ev.Properties = map[string]any{"threadKey": m.thread}
		}
		res, err := e.db.Ingest(context.Background(), e.ws, []*c360.Event{ev})
		if err != nil {
			t.Fatal(err)
		}
		id = res[0].CustomerID
	}
	return fmt.Sprint(id)
}

// bodies returns the bodies of list_recent_messages's result, in order.
func bodies(t *testing.T, cs *sdk.ClientSession, customer string, limit int) []string {
	t.Helper()
	out, text, isErr := call(t, cs, mcp.ToolListRecentMessages, map[string]any{"customerId": customer, "limit": limit})
	if isErr {
		t.Fatalf("list_recent_messages: %s", text)
	}
	msgs, _ := out["messages"].([]any)
	got := make([]string, len(msgs))
	for i, m := range msgs {
		got[i], _ = m.(map[string]any)["body"].(string)
	}
	return got
}

// list_recent_messages orders messages newest first, then by id, as
// GraphQL pages them. The Time scalar drops a fraction's trailing zeros:
// compared as strings, "…:58Z" would come after the later "…:58.3Z".
func TestRecentMessagesNewestFirst(t *testing.T) {
	e := newEnv(t)
	at := time.Date(2025, 3, 1, 11, 57, 58, 0, time.UTC)
	customer := e.inbound(t, "+14155550142", []inbound{
		{channel: c360.ChannelSMS, body: "a", at: at},
		{channel: c360.ChannelWhatsApp, body: "b", at: at},
		{channel: c360.ChannelSMS, body: "c", at: at}, // as old as b, and stored after it
		{channel: c360.ChannelWhatsApp, body: "d", at: at.Add(300 * time.Millisecond)},
	})
	cs := e.connect(t, e.keys["agent"])
	if got, want := strings.Join(bodies(t, cs, customer, 20), " "), "d c b a"; got != want {
		t.Errorf("list_recent_messages bodies = %s, want %s", got, want)
	}
}

// list_recent_messages returns the customer's most recent messages across
// all their conversations, however many conversations were active since.
// Twelve chat threads: ten read first would hide the other two, whose
// messages are newer than the busy thread's first four, and one of which
// has a message as new as the tenth thread's, and stored after it.
func TestRecentMessagesAcrossConversations(t *testing.T) {
	e := newEnv(t)
	at := func(s int) time.Time { return time.Date(2025, 3, 1, 12, 0, s, 0, time.UTC) }
	chat := func(thread, body string, s int) inbound {
		return inbound{channel: c360.ChannelChat, thread: thread, body: body, at: at(s)}
	}
	msgs := []inbound{chat("busy", "busy0", 0), chat("busy", "busy1", 1), chat("busy", "busy2", 2), chat("busy", "busy3", 3),
		chat("late2", "late2", 9), chat("late1", "late1a", 10)}
	for s := 20; s <= 28; s++ {
		msgs = append(msgs, chat(fmt.Sprint("n", s), fmt.Sprint("n", s), s))
	}
	msgs = append(msgs, chat("late1", "late1b", 20), chat("busy", "busy30", 30))
	customer := e.inbound(t, "+14155550143", msgs)
	cs := e.connect(t, e.keys["agent"])

	all := "busy30 n28 n27 n26 n25 n24 n23 n22 n21 late1b n20 late1a late2 busy3 busy2 busy1 busy0"
	for _, c := range []struct {
		limit int
		want  string
	}{
		{20, all},
		{17, all},
		{11, strings.Join(strings.Fields(all)[:11], " ")},
		{10, strings.Join(strings.Fields(all)[:10], " ")},
		{3, "busy30 n28 n27"},
	} {
		if got := strings.Join(bodies(t, cs, customer, c.limit), " "); got != c.want {
			t.Errorf("list_recent_messages limit %d:\n got  %s\n want %s", c.limit, got, c.want)
		}
	}
}

// API keys that fail to authenticate on /mcp are limited per client
// address, as on /graphql: each well-formed unknown key costs a database
// lookup. Past its burst, an address is refused with 429 RATE_LIMITED
// before its key is looked up; requests with a valid key take none of its
// tokens, and another address is served.
func TestMCPFailedAuthenticationsLimitedPerAddress(t *testing.T) {
	db := pgtest.Open(t)
	_, _, key := pgtest.Workspace(t, db)
	log := slog.New(slog.DiscardHandler)
	s := server.New(server.Config{Logger: log, Limits: server.Limits{
		WebhookUnverifiedRate: server.Rate{RPS: 0.01, Burst: 3},
	}}, db, &resolver.Resolver{Now: db.Now}, db)
	s.Handle("/mcp", mcp.New(mcp.Config{GraphQL: s, Auth: db, Authenticate: s.AuthenticateRequest,
		StatusOf: server.StatusOf, Logger: log}).Handler())
	srv := httptest.NewServer(s)
	t.Cleanup(srv.Close)
	from := func(ip string) *http.Client {
		d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}}
		tr := &http.Transport{DialContext: d.DialContext}
		t.Cleanup(tr.CloseIdleConnections)
		return &http.Client{Transport: tr}
	}
	initialize := func(c *http.Client, key string) (int, http.Header, string) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodPost, srv.URL+"/mcp", strings.NewReader(
			`{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}`))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Accept", "application/json, text/event-stream")
		req.Header.Set("Authorization", "Bearer "+key)
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, resp.Header, string(body)
	}
	unknown := func(i int) string { return fmt.Sprintf("c360_%012x_%s", 0xbad0000+i, strings.Repeat("0", 43)) }
	attacker, client, app := from("127.0.0.2"), from("127.0.0.1"), from("127.0.0.3")

	// Valid keys take no token of their address's...
	for i := 0; i < 4; i++ {
		if status, _, body := initialize(app, key); status != http.StatusOK {
			t.Fatalf("valid key, request %d = %d %s, want 200", i, status, body)
		}
	}
	for i := 0; i < 3; i++ {
		if status, _, body := initialize(app, unknown(i)); status != http.StatusUnauthorized {
			t.Fatalf("unknown key %d after valid ones = %d %s, want 401", i, status, body)
		}
	}
	// ... while unknown keys do: past the burst, the address is refused
	// before the lookup, even with a valid key.
	for i := 0; i < 3; i++ {
		if status, _, body := initialize(attacker, unknown(10+i)); status != http.StatusUnauthorized {
			t.Fatalf("unknown key %d = %d %s, want 401", i, status, body)
		}
	}
	for name, k := range map[string]string{"unknown key": unknown(13), "valid key": key} {
		status, h, body := initialize(attacker, k)
		if status != http.StatusTooManyRequests || !strings.Contains(body, `"code":"RATE_LIMITED"`) ||
			!strings.Contains(body, "rate limit of failed authentications from this address exceeded") {
			t.Errorf("%s past the burst = %d %s, want 429 RATE_LIMITED", name, status, body)
		}
		if ra, err := strconv.Atoi(h.Get("Retry-After")); err != nil || ra < 1 || ra > 100 {
			t.Errorf("%s: Retry-After = %q, want the seconds until a token (at most 100)", name, h.Get("Retry-After"))
		}
	}
	if status, _, body := initialize(client, key); status != http.StatusOK {
		t.Errorf("valid key from another address = %d %s, want 200", status, body)
	}
}

// An observation's source and an event's name are free text: an agent may
// write "call from +14155550100" as a source, an app may name an event
// after whom it concerns. get_customer_context gives them masked to an
// assistant without the pii scope, in its fields and its text, and whole to
// an agent.
func TestContextMasksObservationSourcesAndEventNames(t *testing.T) {
	e := newEnv(t)
	agent := e.connect(t, e.keys["agent"])
	if _, res, isErr := call(t, agent, mcp.ToolRecordObservation, map[string]any{"customerId": e.jane,
		"text": "asked for a callback", "source": "call from " + janePhone + ", cc " + janeEmail}); isErr {
		t.Fatalf("record_observation: %s", res)
	}
	if _, err := e.db.Ingest(context.Background(), e.ws, []*c360.Event{{Type: c360.EventTrack, Source: "test",
		DedupeKey: "named", OccurredAt: time.Now().UTC(), Name: "Callback requested by " + janePhone,
		Identities: []c360.Identity{{Type: "phone", Value: janePhone}}}}); err != nil {
		t.Fatal(err)
	}

	_, text, isErr := call(t, e.connect(t, e.keys["assistant"]), mcp.ToolGetCustomerContext, map[string]any{"customerId": e.jane})
	if isErr || !strings.Contains(text, "source call from +1******0100, cc j***@example.com") || !strings.Contains(text, `Callback requested by +1******0100`) {
		t.Errorf("get_customer_context = %s, want the source and the event's name masked", text)
	}
	assertMasked(t, text)
	_, text, isErr = call(t, agent, mcp.ToolGetCustomerContext, map[string]any{"customerId": e.jane})
	if isErr || !strings.Contains(text, "call from "+janePhone+", cc "+janeEmail) || !strings.Contains(text, "Callback requested by "+janePhone) {
		t.Errorf("agent's get_customer_context = %s, want the source and the event's name whole", text)
	}
}

// search_customers with a blank query would list every customer: a key
// that reads personal data masked is refused it, with BAD_USER_INPUT
// first in the error; one that reads personal data lists customers.
func TestSearchCustomersRefusesABlankQueryWhenMasked(t *testing.T) {
	e := newEnv(t)
	masked, clear := e.connect(t, e.keys["assistant"]), e.connect(t, e.keys["assistant+pii"])
	for _, blank := range []string{"", "   "} {
		out, msg, isErr := call(t, masked, mcp.ToolSearchCustomers, map[string]any{"query": blank})
		if !isErr || !strings.HasPrefix(msg, c360.EINVALID) || !strings.Contains(msg, "blank") {
			t.Errorf("search_customers {query: %q} without the pii scope = %v %s, want BAD_USER_INPUT", blank, out, msg)
		}
		out, msg, isErr = call(t, clear, mcp.ToolSearchCustomers, map[string]any{"query": blank})
		if list, _ := out["customers"].([]any); isErr || len(list) != 1 {
			t.Errorf("search_customers {query: %q} with the pii scope = %s, want Jane listed", blank, msg)
		}
	}
}

// search_customers refuses a fragment of fewer than 3 letters or digits
// with BAD_USER_INPUT, as customers(query:) does (the trigram index cannot
// find it, and one that matched nobody read every customer); a fragment of
// 3 finds its customers.
func TestSearchCustomersRefusesShortFragments(t *testing.T) {
	e := newEnv(t)
	clear := e.connect(t, e.keys["assistant+pii"])
	for _, q := range []string{"ja", "j", "qz", "%%%"} {
		out, msg, isErr := call(t, clear, mcp.ToolSearchCustomers, map[string]any{"query": q})
		if !isErr || !strings.HasPrefix(msg, c360.EINVALID) || !strings.Contains(msg, "at least 3 letters or digits") {
			t.Errorf("search_customers {query: %q} = %v %s, want BAD_USER_INPUT naming the 3 letters or digits", q, out, msg)
		}
	}
	out, msg, isErr := call(t, clear, mcp.ToolSearchCustomers, map[string]any{"query": "jan"})
	if list, _ := out["customers"].([]any); isErr || len(list) != 1 {
		t.Errorf("search_customers {query: \"jan\"} = %s, want Jane found", msg)
	}
}

// The bounds of a number argument are the values the tool takes, in its
// listed input schema and in its refusals: a value out of them, 0
// included, is refused naming the property and the bound broken (not a
// bound of 0 the tool would not take); a property left out takes its
// default.
func TestArgumentBoundsAreTheToolsOwn(t *testing.T) {
	e := newEnv(t)
	cs := e.connect(t, e.keys["assistant"])
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	tools, err := cs.ListTools(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	bounds := map[string]struct {
		property string
		min, max float64
		base     map[string]any
	}{
		mcp.ToolGetCustomerContext: {"budget", 100, 32000, map[string]any{"customerId": e.jane}},
		mcp.ToolListRecentMessages: {"limit", 1, 100, map[string]any{"customerId": e.jane}},
		mcp.ToolSearchCustomers:    {"first", 1, 50, map[string]any{"query": janeEmail}},
	}
	for _, tool := range tools.Tools {
		b, ok := bounds[tool.Name]
		if !ok {
			continue
		}
		raw, _ := json.Marshal(tool.InputSchema)
		var schema struct {
			Properties map[string]struct{ Minimum, Maximum *float64 }
		}
		if err := json.Unmarshal(raw, &schema); err != nil {
			t.Fatal(err)
		}
		p := schema.Properties[b.property]
		if p.Minimum == nil || p.Maximum == nil || *p.Minimum != b.min || *p.Maximum != b.max {
			t.Errorf("%s's listed %s bounds: %s, want %v to %v", tool.Name, b.property, raw, b.min, b.max)
		}
		with := func(v any) map[string]any {
			args := map[string]any{b.property: v}
			for k, v := range b.base {
				args[k] = v
			}
			return args
		}
		for _, v := range []float64{b.min - 1, 0, -5} {
			_, msg, isErr := call(t, cs, tool.Name, with(v))
			if !isErr || !strings.Contains(msg, b.property) || !strings.Contains(msg, fmt.Sprintf("%f", b.min)) {
				t.Errorf("%s with %s %v: %v %q; want a refusal naming %s and its minimum %v", tool.Name, b.property, v, isErr, msg, b.property, b.min)
			}
		}
		if _, msg, isErr := call(t, cs, tool.Name, with(b.max+1)); !isErr || !strings.Contains(msg, fmt.Sprintf("%f", b.max)) {
			t.Errorf("%s with %s %v: %v %q; want a refusal naming its maximum", tool.Name, b.property, b.max+1, isErr, msg)
		}
		for _, args := range []map[string]any{b.base, with(b.min), with(b.max)} {
			if _, msg, isErr := call(t, cs, tool.Name, args); isErr {
				t.Errorf("%s with %v refused: %s", tool.Name, args, msg)
			}
		}
	}
}

// TestDocumentedInputSchemaIsListed: the input schema of
// get_customer_context that docs/assistants.md prints is the one clients
// are listed, property for property.
func TestDocumentedInputSchemaIsListed(t *testing.T) {
	doc, err := os.ReadFile("../docs/assistants.md")
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(doc), "`get_customer_context` input schema, as clients see it:\n\n```json\n")
	if !ok {
		t.Fatal("docs/assistants.md: no get_customer_context input schema")
	}
	block, _, _ := strings.Cut(rest, "```")
	var documented any
	if err := json.Unmarshal([]byte(block), &documented); err != nil {
		t.Fatalf("docs/assistants.md: the schema is not JSON: %v\n%s", err, block)
	}

	e := newEnv(t)
	cs := e.connect(t, e.keys["assistant"])
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	tools, err := cs.ListTools(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, tool := range tools.Tools {
		if tool.Name != mcp.ToolGetCustomerContext {
			continue
		}
		raw, _ := json.Marshal(tool.InputSchema)
		var listed any
		if err := json.Unmarshal(raw, &listed); err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(documented, listed) {
			pretty, _ := json.MarshalIndent(listed, "", "  ")
			t.Errorf("docs/assistants.md shows\n%s\nclients are listed\n%s", block, pretty)
		}
		return
	}
	t.Fatalf("no %s listed", mcp.ToolGetCustomerContext)
}
