package twilio_test

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha1"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sort"
	"strings"
	"sync"
	"testing"

	twclient "github.com/twilio/twilio-go/client"
	"go.uber.org/goleak"

	"github.com/c360dev/c360"
	"github.com/c360dev/c360/connectors/twilio"
	"github.com/c360dev/c360/internal/logbuf"
	"github.com/c360dev/c360/internal/pgtest"
	"github.com/c360dev/c360/postgres"
	"github.com/c360dev/c360/resolver"
	"github.com/c360dev/c360/server"
)

// twilio-go's HTTP client gives each request a deadline; net/http watches it
// with a goroutine that, after an error answer from the stand-in Twilio,
// lives until the deadline (10 s) fires. It is bounded, and not ours.
func TestMain(m *testing.M) {
	pgtest.Main(m, goleak.IgnoreTopFunction("net/http.setRequestCancel.func4"))
}

const (
	// publicURL is what C360_PUBLIC_URL would be behind a proxy: Twilio signs
	// this URL, while the test talks to the httptest server's own address.
	publicURL  = "https://c360.example.com"
	accountSID = "AC00000000000000000000000000000001"
	authToken  = "0123456789abcdef0123456789abcdef"
)

// env is the real server (server.New and the Twilio routes as mountConnectors
// mounts them) over a real store, with one workspace holding Twilio settings,
// and a fake Twilio REST API for outbound messages.
type env struct {
	db     *postgres.DB
	srv    *httptest.Server
	twilio *fakeTwilio
	ws     int64
	slug   string
	key    string // admin API key
	logs   *logbuf.Buffer
	audit  *postgres.AuditWriter // the resolver's audit log
}

func newEnv(t *testing.T) *env {
	t.Helper()
	return newEnvWith(t, nil)
}

// newEnvWith is newEnv with the resolver's MessagingService replaced by
// wrap(the store), when wrap is not nil.
func newEnvWith(t *testing.T, wrap func(c360.MessagingService) c360.MessagingService) *env {
	t.Helper()
	db := pgtest.Open(t)
	ws, slug, key := pgtest.Workspace(t, db)
	ctx := context.Background()
	if _, err := db.UpdateWorkspace(ctx, slug, c360.WorkspaceUpdate{
		TwilioAccountSID: ptr(accountSID), TwilioAuthToken: ptr(authToken),
		TwilioSMSFrom: ptr("+14155550199"), TwilioWhatsAppFrom: ptr("+14155550198"),
	}); err != nil {
		t.Fatal(err)
	}
	fake := newFakeTwilio(t)
	logs := &logbuf.Buffer{}
	log := slog.New(slog.NewJSONHandler(logs, nil))
	sender, err := twilio.NewSender(twilio.SenderConfig{PublicURL: publicURL, APIURL: fake.srv.URL, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	var messaging c360.MessagingService = db
	if wrap != nil {
		messaging = wrap(db)
	}
	audit := postgres.NewAuditWriter(db, postgres.AuditWriterConfig{Logger: log})
	t.Cleanup(audit.Close) // after the server's Close, registered below
	res := &resolver.Resolver{
		CustomerService: db, EventService: db, ConversationService: db, Ingester: db, Now: db.Now,
		MessagingService: messaging, MessageSender: sender, Audit: audit,
	}
	s := server.New(server.Config{Logger: log}, db, res, db)
	(&twilio.Handler{Workspaces: db, Ingester: db, PublicURL: publicURL, StatusOf: server.StatusOf,
		Logger: log, Now: db.Now, Limit: s.LimitWebhook}).Register(s)
	srv := httptest.NewServer(s)
	t.Cleanup(srv.Close)
	return &env{db: db, srv: srv, twilio: fake, ws: ws, slug: slug, key: key, logs: logs, audit: audit}
}

func ptr[T any](v T) *T { return &v }

// sign computes X-Twilio-Signature as Twilio documents it, independently of
// twilio-go: HMAC-SHA1 with the auth token over the full URL followed by
// every POST parameter's name and value, sorted by name; base64.
func sign(token, fullURL string, form url.Values) string {
	keys := make([]string, 0, len(form))
	for k := range form {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	b.WriteString(fullURL)
	for _, k := range keys {
		vs := append([]string(nil), form[k]...)
		sort.Strings(vs)
		for _, v := range vs {
			b.WriteString(k)
			b.WriteString(v)
		}
	}
	mac := hmac.New(sha1.New, []byte(token))
	mac.Write([]byte(b.String()))
	return base64.StdEncoding.EncodeToString(mac.Sum(nil))
}

// webhook posts form to path, signed over publicURL+path with token ("" for
// no signature header).
func (e *env) webhook(t *testing.T, path string, form url.Values, token string) (int, http.Header, string) {
	t.Helper()
	sig := ""
	if token != "" {
		sig = sign(token, publicURL+path, form)
		// The cross-check: Twilio's own Go validator accepts what we sign.
		params := map[string]string{}
		for k := range form {
			params[k] = form.Get(k)
		}
		v := twclient.NewRequestValidator(token)
		if !v.Validate(publicURL+path, params, sig) {
			t.Fatalf("twilio-go's RequestValidator rejects the test's signature")
		}
	}
	return e.postForm(t, path, form.Encode(), sig)
}

func (e *env) postForm(t *testing.T, path, body, sig string) (int, http.Header, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, e.srv.URL+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if sig != "" {
		req.Header.Set("X-Twilio-Signature", sig)
	}
	resp, err := e.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, string(b)
}

func (e *env) inboundPath() string { return "/webhooks/twilio/" + e.slug }
func (e *env) statusPath() string  { return "/webhooks/twilio/" + e.slug + "/status" }

// inbound is a typical inbound SMS form.
func inbound(sid, from, body string, kv ...string) url.Values {
	f := url.Values{
		"MessageSid": {sid}, "SmsMessageSid": {sid}, "SmsSid": {sid}, "AccountSid": {accountSID},
		"From": {from}, "To": {"+14155550199"}, "Body": {body}, "NumMedia": {"0"}, "NumSegments": {"1"},
		"SmsStatus": {"received"}, "ApiVersion": {"2010-04-01"},
	}
	if strings.HasPrefix(from, "whatsapp:") {
		f.Set("To", "whatsapp:+14155550198")
	}
	for i := 0; i+1 < len(kv); i += 2 {
		f.Set(kv[i], kv[i+1])
	}
	return f
}

// statusForm is a status callback form for a message sent to "to".
func statusForm(sid, status, to string, kv ...string) url.Values {
	f := url.Values{
		"MessageSid": {sid}, "SmsSid": {sid}, "MessageStatus": {status}, "SmsStatus": {status},
		"AccountSid": {accountSID}, "From": {"+14155550199"}, "To": {to}, "ApiVersion": {"2010-04-01"},
	}
	for i := 0; i+1 < len(kv); i += 2 {
		f.Set(kv[i], kv[i+1])
	}
	return f
}

func count(t *testing.T, db *postgres.DB, sql string, args ...any) int {
	t.Helper()
	var n int
	if err := db.Pool.QueryRow(context.Background(), sql, args...).Scan(&n); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return n
}

// customerByPhone returns the customer with the phone, failing the test if none.
func (e *env) customerByPhone(t *testing.T, phone string) *c360.Customer {
	t.Helper()
	c, err := e.db.FindCustomerByIdentity(context.Background(), e.ws, c360.Identity{Type: "phone", Value: phone})
	if err != nil {
		t.Fatalf("customer with phone %s: %v", phone, err)
	}
	return c
}

// messages returns the customer's messages on channel, newest first.
func (e *env) messages(t *testing.T, customerID int64, channel string) []*c360.Message {
	t.Helper()
	ctx := context.Background()
	convs, err := e.db.ConversationsByCustomers(ctx, e.ws, []int64{customerID}, c360.PageArgs{First: 100})
	if err != nil {
		t.Fatal(err)
	}
	var out []*c360.Message
	for _, c := range convs[customerID].Items {
		if c.Channel != channel {
			continue
		}
		ms, err := e.db.MessagesByConversations(ctx, e.ws, []int64{c.ID}, c360.PageArgs{First: 100})
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, ms[c.ID].Items...)
	}
	return out
}

func (e *env) consent(t *testing.T, customerID int64, channel string) *c360.Consent {
	t.Helper()
	m, err := e.db.ConsentsByCustomers(context.Background(), e.ws, []int64{customerID})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range m[customerID] {
		if c.Channel == channel {
			return c
		}
	}
	return nil
}

// fakeTwilio stands in for Twilio's Messages API: it records every request
// and answers with a queued message, or with the error set by fail.
type fakeTwilio struct {
	srv *httptest.Server
	mu  sync.Mutex
	got []fakeRequest
	n   int
	// status and body, when status is non-zero, answer every request.
	status int
	body   string
	// before, when set, runs before each request is answered, with the SID
	// the answer will carry: Twilio may call the StatusCallback before its
	// answer to the send arrives.
	before func(sid string, form url.Values)
}

type fakeRequest struct {
	Method, Path   string
	User, Password string
	Form           url.Values
}

func newFakeTwilio(t *testing.T) *fakeTwilio {
	f := &fakeTwilio{}
	f.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		user, pass, _ := r.BasicAuth()
		r.ParseForm()
		f.mu.Lock()
		f.got = append(f.got, fakeRequest{Method: r.Method, Path: r.URL.Path, User: user, Password: pass, Form: r.PostForm})
		f.n++
		n, status, body, before := f.n, f.status, f.body, f.before
		f.mu.Unlock()
		sid := fmt.Sprintf("SMfake%026d", n)
		if before != nil {
			before(sid, r.PostForm)
		}
		w.Header().Set("Content-Type", "application/json")
		if status != 0 {
			w.WriteHeader(status)
			io.WriteString(w, body)
			return
		}
		w.WriteHeader(http.StatusCreated)
		json.NewEncoder(w).Encode(map[string]any{
			"sid": sid, "status": "queued", "account_sid": user,
			"to": r.PostForm.Get("To"), "from": r.PostForm.Get("From"), "body": r.PostForm.Get("Body"),
		})
	}))
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fakeTwilio) fail(status int, body string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.status, f.body = status, body
}

func (f *fakeTwilio) requests() []fakeRequest {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]fakeRequest(nil), f.got...)
}

// gql posts a GraphQL request with key as Bearer token.
func (e *env) gql(t *testing.T, key, query string, vars map[string]any) gqlResponse {
	t.Helper()
	b, _ := json.Marshal(map[string]any{"query": query, "variables": vars})
	req, _ := http.NewRequest(http.MethodPost, e.srv.URL+"/graphql", bytes.NewReader(b))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+key)
	resp, err := e.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out gqlResponse
	raw, _ := io.ReadAll(resp.Body)
	if err := json.Unmarshal(raw, &out); err != nil {
		t.Fatalf("decode %s: %v", raw, err)
	}
	out.raw = string(raw)
	return out
}

type gqlResponse struct {
	Data   json.RawMessage `json:"data"`
	Errors []struct {
		Message    string         `json:"message"`
		Extensions map[string]any `json:"extensions"`
	} `json:"errors"`
	raw string
}

func (r gqlResponse) code() string {
	if len(r.Errors) == 0 {
		return ""
	}
	c, _ := r.Errors[0].Extensions["code"].(string)
	return c
}

func (r gqlResponse) message() string {
	if len(r.Errors) == 0 {
		return ""
	}
	return r.Errors[0].Message
}
