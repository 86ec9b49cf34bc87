package server_test

import (
	"context"
	"crypto/hmac"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/c360dev/c360"
	"github.com/c360dev/c360/connectors/chatbot"
	"github.com/c360dev/c360/connectors/segment"
	"github.com/c360dev/c360/connectors/twilio"
	"github.com/c360dev/c360/connectors/whatsapp"
	"github.com/c360dev/c360/internal/pgtest"
	"github.com/c360dev/c360/postgres"
	"github.com/c360dev/c360/server"
)

// webhookEnv is a server with the three provider webhooks mounted as
// mountConnectors mounts them, and a way to send each of them a request,
// signed or not, addressed to a workspace that holds every provider's
// secrets.
type webhookEnv struct {
	db  *postgres.DB
	srv *httptest.Server
	n   int // numbers the messages, so that none is a duplicate
}

// webhookWorkspace is a workspace with the secrets of every provider.
type webhookWorkspace struct {
	slug, twilioToken, appSecret, webhookSecret string
}

const testVerifyToken = "verify-token-for-the-rate-limit-test"

func newWebhookEnv(t *testing.T, limits server.Limits) *webhookEnv {
	t.Helper()
	db := pgtest.Open(t)
	log := slog.New(slog.DiscardHandler)
	s := server.New(server.Config{Logger: log, Limits: limits}, db, newResolver(db), db)
	e := &webhookEnv{db: db}
	chatbot.New(chatbot.Config{Store: db, Now: db.Now, StatusOf: server.StatusOf, Logger: log, Limit: s.LimitWebhook}).Register(s)
	tw := &twilio.Handler{Workspaces: db, Ingester: db, StatusOf: server.StatusOf, Logger: log, Now: db.Now, Limit: s.LimitWebhook}
	tw.Register(s)
	(&whatsapp.Handler{Workspaces: db, Ingester: db, StatusOf: server.StatusOf, Logger: log, Now: db.Now,
		Limit: s.LimitWebhook}).Register(s)
	e.srv = httptest.NewServer(s)
	t.Cleanup(e.srv.Close)
	// Twilio signs the URL it calls: here, the test server's own.
	tw.PublicURL = e.srv.URL
	return e
}

func (e *webhookEnv) workspace(t *testing.T) webhookWorkspace {
	t.Helper()
	ctx := context.Background()
	creds, err := e.db.CreateWorkspace(ctx, fmt.Sprintf("rl%d", time.Now().UnixNano()%1e12), "rate limits")
	if err != nil {
		t.Fatal(err)
	}
	w := webhookWorkspace{slug: creds.Slug, twilioToken: "0123456789abcdef0123456789abcdef",
		appSecret: "whatsapp-app-secret", webhookSecret: creds.WebhookSecret}
	if _, err := e.db.UpdateWorkspace(ctx, w.slug, c360.WorkspaceUpdate{TwilioAuthToken: &w.twilioToken,
		WhatsAppAppSecret: &w.appSecret, WhatsAppVerifyToken: ptrTo(testVerifyToken)}); err != nil {
		t.Fatal(err)
	}
	return w
}

func ptrTo[T any](v T) *T { return &v }

// provider is one webhook: request builds a request to workspace w, signed
// as the provider signs when signed is true, and carrying a wrong
// signature (or verify token) otherwise.
type provider struct {
	name    string
	refused int // the status of a request whose signature is wrong
	request func(e *webhookEnv, w webhookWorkspace, signed bool) *http.Request
}

var providers = []provider{
	{"twilio inbound", http.StatusForbidden, func(e *webhookEnv, w webhookWorkspace, signed bool) *http.Request {
		return e.twilio(w, "/webhooks/twilio/"+w.slug, signed)
	}},
	{"twilio status", http.StatusForbidden, func(e *webhookEnv, w webhookWorkspace, signed bool) *http.Request {
		return e.twilio(w, "/webhooks/twilio/"+w.slug+"/status", signed)
	}},
	{"whatsapp notification", http.StatusForbidden, func(e *webhookEnv, w webhookWorkspace, signed bool) *http.Request {
		e.n++
		body := fmt.Sprintf(`{"object":"whatsapp_business_account","entry":[{"id":"1","changes":[{"field":"messages","value":`+
			`{"messaging_product":"whatsapp","metadata":{"display_phone_number":"15550783881","phone_number_id":"1"},`+
			`"contacts":[{"profile":{"name":"Kerry"},"wa_id":"16505551234"}],`+
			`"messages":[{"from":"16505551234","id":"wamid.RL%d","timestamp":"1700000000","type":"text","text":{"body":"hi"}}]}}]}]}`, e.n)
		secret := w.appSecret
		if !signed {
			secret = "not-the-app-secret"
		}
		mac := hmac.New(sha256.New, []byte(secret))
		mac.Write([]byte(body))
		req, _ := http.NewRequest(http.MethodPost, e.srv.URL+"/webhooks/whatsapp/"+w.slug, strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("X-Hub-Signature-256", "sha256="+hex.EncodeToString(mac.Sum(nil)))
		return req
	}},
	{"whatsapp handshake", http.StatusForbidden, func(e *webhookEnv, w webhookWorkspace, signed bool) *http.Request {
		token := testVerifyToken
		if !signed {
			token = "not-the-verify-token"
		}
		q := url.Values{"hub.mode": {"subscribe"}, "hub.verify_token": {token}, "hub.challenge": {"42"}}
		req, _ := http.NewRequest(http.MethodGet, e.srv.URL+"/webhooks/whatsapp/"+w.slug+"?"+q.Encode(), nil)
		return req
	}},
	{"chatbot", http.StatusUnauthorized, func(e *webhookEnv, w webhookWorkspace, signed bool) *http.Request {
		e.n++
		body := fmt.Sprintf(`{"sessionId":"rl","identities":[{"type":"email","value":"rl@example.com"}],`+
			`"turns":[{"id":"%d","role":"user","text":"Hi"}]}`, e.n)
		secret := w.webhookSecret
		if !signed {
			secret = "whsec_not-the-secret"
		}
		ts := strconv.FormatInt(time.Now().Unix(), 10)
		mac := hmac.New(sha256.New, []byte(secret))
		mac.Write([]byte(ts + "." + body))
		req, _ := http.NewRequest(http.MethodPost, e.srv.URL+"/webhooks/chatbot/"+w.slug, strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set(chatbot.SignatureHeader, "t="+ts+",v1="+hex.EncodeToString(mac.Sum(nil)))
		return req
	}},
}

func providerNamed(t *testing.T, name string) provider {
	t.Helper()
	for _, p := range providers {
		if p.name == name {
			return p
		}
	}
	t.Fatalf("no provider %q", name)
	return provider{}
}

// twilio is a Twilio form post to path: an inbound message, or a status
// callback, signed as Twilio signs (HMAC-SHA1 over the URL and the sorted
// parameters), with the workspace's auth token or a wrong one.
func (e *webhookEnv) twilio(w webhookWorkspace, path string, signed bool) *http.Request {
	e.n++
	sid := fmt.Sprintf("SM%032d", e.n)
	form := url.Values{"MessageSid": {sid}, "AccountSid": {"AC00000000000000000000000000000001"},
		"From": {"+14155550100"}, "To": {"+14155550199"}, "Body": {"hi"}, "NumMedia": {"0"}}
	if strings.HasSuffix(path, "/status") {
		form = url.Values{"MessageSid": {sid}, "MessageStatus": {"delivered"}, "To": {"+14155550100"},
			"From": {"+14155550199"}, "AccountSid": {"AC00000000000000000000000000000001"}}
	}
	token := w.twilioToken
	if !signed {
		token = "not-the-auth-token-0000000000000"
	}
	keys := make([]string, 0, len(form))
	for k := range form {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	signedText := e.srv.URL + path
	for _, k := range keys {
		signedText += k + form.Get(k)
	}
	mac := hmac.New(sha1.New, []byte(token))
	mac.Write([]byte(signedText))
	req, _ := http.NewRequest(http.MethodPost, e.srv.URL+path, strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("X-Twilio-Signature", base64.StdEncoding.EncodeToString(mac.Sum(nil)))
	return req
}

// send sends req and returns its status, header and body.
func (e *webhookEnv) send(t *testing.T, req *http.Request) (int, http.Header, string) {
	t.Helper()
	return sendFrom(t, e.srv.Client(), req)
}

// A workspace's webhook rate limit counts only the requests that pass
// verification. Anyone who knows a workspace's slug (it is in every public
// webhook URL) can send requests without a valid signature; if they spent
// the workspace's tokens, the provider's genuine webhooks would get 429,
// and Twilio by default does not retry them: the messages would be lost.
func TestWebhookRateLimitCountsOnlyVerifiedRequests(t *testing.T) {
	// Refilling a token takes 100 s: the test's few seconds see none.
	e := newWebhookEnv(t, server.Limits{WebhookRate: server.Rate{RPS: 0.01, Burst: 5}})
	for _, p := range providers {
		t.Run(p.name, func(t *testing.T) {
			w := e.workspace(t)
			// Enough unsigned requests to empty the bucket if they counted.
			for i := 0; i < 5; i++ {
				if status, _, body := e.send(t, p.request(e, w, false)); status != p.refused {
					t.Fatalf("forged request %d = %d %s, want %d", i, status, body, p.refused)
				}
			}
			// The provider's own requests get the workspace's whole burst...
			for i := 0; i < 5; i++ {
				if status, _, body := e.send(t, p.request(e, w, true)); status != http.StatusOK {
					t.Fatalf("signed request %d after the forged ones = %d %s, want 200", i, status, body)
				}
			}
			// ... and past it are refused, as the docs say.
			status, h, body := e.send(t, p.request(e, w, true))
			if status != http.StatusTooManyRequests || !strings.Contains(body, `"code":"RATE_LIMITED"`) ||
				!strings.Contains(body, "rate limit of this workspace's webhooks exceeded") {
				t.Errorf("signed request past the burst = %d %s, want 429 RATE_LIMITED", status, body)
			}
			if ra, err := strconv.Atoi(h.Get("Retry-After")); err != nil || ra < 1 || ra > 100 {
				t.Errorf("Retry-After = %q, want the seconds until a token (at most 100)", h.Get("Retry-After"))
			}
			// Another workspace has its own bucket.
			if status, _, body := e.send(t, p.request(e, e.workspace(t), true)); status != http.StatusOK {
				t.Errorf("another workspace's signed request = %d %s, want 200", status, body)
			}
		})
	}
}

// clientFrom returns an HTTP client whose connections come from the
// loopback address ip, as another host's would.
func clientFrom(t *testing.T, ip string) *http.Client {
	t.Helper()
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}}
	tr := &http.Transport{DialContext: d.DialContext}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr}
}

// Requests that fail verification are limited per client address, in a
// bucket of their own: a flood of forgeries is refused with 429 after its
// burst, before any lookup or HMAC, while the provider, from its own
// address, is served within its workspace's limit.
func TestUnverifiedWebhooksLimitedPerAddress(t *testing.T) {
	e := newWebhookEnv(t, server.Limits{
		WebhookRate:           server.Rate{RPS: 0.01, Burst: 5},
		WebhookUnverifiedRate: server.Rate{RPS: 0.01, Burst: 3},
	})
	forger, provider := clientFrom(t, "127.0.0.2"), clientFrom(t, "127.0.0.1")
	send := func(c *http.Client, req *http.Request) (int, http.Header, string) {
		t.Helper()
		resp, err := c.Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", req.Method, req.URL.Path, err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, resp.Header, string(b)
	}
	wantLimited := func(t *testing.T, what string, status int, h http.Header, body string) {
		t.Helper()
		if status != http.StatusTooManyRequests || !strings.Contains(body, `"code":"RATE_LIMITED"`) ||
			!strings.Contains(body, "rate limit of unverified webhook requests from this address exceeded") {
			t.Errorf("%s = %d %s, want 429 RATE_LIMITED for unverified requests", what, status, body)
		}
		if ra, err := strconv.Atoi(h.Get("Retry-After")); err != nil || ra < 1 || ra > 100 {
			t.Errorf("%s: Retry-After = %q, want the seconds until a token (at most 100)", what, h.Get("Retry-After"))
		}
	}
	w := e.workspace(t)
	tw, bot := providerNamed(t, "twilio inbound"), providerNamed(t, "chatbot")
	// Forged requests, and requests for workspaces that do not exist, are
	// answered as such up to the burst, then refused before any work.
	for i, req := range []*http.Request{
		tw.request(e, w, false),
		tw.request(e, webhookWorkspace{slug: "no-such-workspace"}, false),
		bot.request(e, w, false),
	} {
		if status, _, body := send(forger, req); status != http.StatusForbidden && status != http.StatusNotFound &&
			status != http.StatusUnauthorized {
			t.Fatalf("unverified request %d = %d %s, want it refused as such", i, status, body)
		}
	}
	for _, p := range providers {
		status, h, body := send(forger, p.request(e, w, false))
		wantLimited(t, p.name+", forged, past the burst", status, h, body)
	}
	// The forger's refusals spent neither the workspace's tokens nor the
	// provider's address's: its whole burst is served.
	for i := 0; i < 5; i++ {
		if status, _, body := send(provider, tw.request(e, w, true)); status != http.StatusOK {
			t.Fatalf("the provider's signed request %d = %d %s, want 200", i, status, body)
		}
	}
	status, _, body := send(provider, tw.request(e, w, true))
	if status != http.StatusTooManyRequests || !strings.Contains(body, "rate limit of this workspace's webhooks exceeded") {
		t.Errorf("the provider's signed request past the workspace's burst = %d %s, want 429 for the workspace", status, body)
	}
	// An address over its limit is refused before its requests are
	// verified, signed or not: why the limit must stay high where c360
	// does not see clients' own addresses.
	status, h, body := send(forger, tw.request(e, e.workspace(t), true))
	wantLimited(t, "a signed request from the forger's address", status, h, body)
}

// unknownKey returns a well-formed API (or write) key that no workspace
// holds: checking it costs a database lookup.
func unknownKey(i int) string {
	return fmt.Sprintf("c360_%012x_%s", 0xfeed0000+i, strings.Repeat("0", 43))
}

// sendFrom sends req with client c and returns its status, header and body.
func sendFrom(t *testing.T, c *http.Client, req *http.Request) (int, http.Header, string) {
	t.Helper()
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL.Path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, string(b)
}

// Segment API requests that never authenticate (a missing, malformed or
// unknown write key, a body refused before its key is checked) are limited
// per client address, in the bucket of unverified webhooks: each costs a
// body read of up to 500 KB, maybe a parse, and a key lookup. Past its
// burst, an address is refused before any of that, in Segment's answer
// shape, which SDKs parse; requests with a valid write key take none of its
// tokens, and another address is served.
func TestUnauthenticatedSegmentRequestsLimitedPerAddress(t *testing.T) {
	db := pgtest.Open(t)
	log := slog.New(slog.DiscardHandler)
	s := server.New(server.Config{Logger: log, Limits: server.Limits{
		WebhookUnverifiedRate: server.Rate{RPS: 0.01, Burst: 3},
	}}, db, newResolver(db), db)
	segment.New(segment.Config{Store: db, Now: db.Now, StatusOf: server.StatusOf, Logger: log,
		Limit: s.AllowWriteKey}).Register(s)
	srv := httptest.NewServer(s)
	t.Cleanup(srv.Close)
	creds, err := db.CreateWorkspace(context.Background(), fmt.Sprintf("rl-seg-%d", time.Now().UnixNano()%1e9), "segment")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	track := func(header, body string) *http.Request { return segmentTrack(srv.URL, "rl-seg-", &n, header, body) }
	attacker, client, app := clientFrom(t, "127.0.0.2"), clientFrom(t, "127.0.0.1"), clientFrom(t, "127.0.0.3")

	// A valid write key takes no token of its address's, nor does a valid
	// key whose body is refused: more of them than the burst are served...
	for i := 0; i < 4; i++ {
		if status, _, body := sendFrom(t, app, track(creds.WriteKey, "")); status != http.StatusOK {
			t.Fatalf("valid write key, call %d = %d %s, want 200", i, status, body)
		}
	}
	bad, _ := http.NewRequest(http.MethodPost, srv.URL+"/v1/track", strings.NewReader(`{"userId":`))
	bad.SetBasicAuth(creds.WriteKey, "")
	if status, _, body := sendFrom(t, app, bad); status != http.StatusBadRequest {
		t.Fatalf("valid write key, body not JSON = %d %s, want 400", status, body)
	}
	// ... and its address still has its whole burst for unknown keys.
	for i := 0; i < 3; i++ {
		if status, _, body := sendFrom(t, app, track(unknownKey(i), "")); status != http.StatusUnauthorized {
			t.Fatalf("unknown write key %d after valid ones = %d %s, want 401", i, status, body)
		}
	}

	// Unknown keys, in the header or the body, and a missing key are
	// answered as such up to the burst...
	for i, req := range []*http.Request{
		track(unknownKey(10), ""),
		track("", unknownKey(11)),
		track("", ""),
	} {
		if status, _, body := sendFrom(t, attacker, req); status != http.StatusUnauthorized {
			t.Fatalf("unauthenticated request %d = %d %s, want 401", i, status, body)
		}
	}
	// ... then refused before the body is read or the key looked up, in
	// Segment's shape, whatever the key: even a valid one.
	for _, tc := range []struct {
		name string
		req  *http.Request
	}{
		{"unknown key", track(unknownKey(12), "")},
		{"unknown key on a batch", func() *http.Request {
			req, _ := http.NewRequest(http.MethodPost, srv.URL+"/v1/batch",
				strings.NewReader(`{"batch":[{"type":"track","userId":"u","event":"E"}]}`))
			req.SetBasicAuth(unknownKey(13), "")
			return req
		}()},
		{"valid key", track(creds.WriteKey, "")},
	} {
		status, h, body := sendFrom(t, attacker, tc.req)
		var got struct {
			Success *bool  `json:"success"`
			Code    string `json:"code"`
			Message string `json:"message"`
		}
		if err := json.Unmarshal([]byte(body), &got); err != nil || status != http.StatusTooManyRequests ||
			got.Success == nil || *got.Success || got.Code != c360.ERATELIMITED ||
			!strings.Contains(got.Message, "rate limit of unauthenticated requests from this address exceeded") {
			t.Errorf("%s past the burst = %d %s, want 429 in Segment's shape", tc.name, status, body)
		}
		if ra, err := strconv.Atoi(h.Get("Retry-After")); err != nil || ra < 1 || ra > 100 {
			t.Errorf("%s: Retry-After = %q, want the seconds until a token (at most 100)", tc.name, h.Get("Retry-After"))
		}
		if h.Get("Access-Control-Allow-Origin") != "*" {
			t.Errorf("%s: Access-Control-Allow-Origin = %q, want * (browsers read the answer)", tc.name, h.Get("Access-Control-Allow-Origin"))
		}
	}
	// Another address is served.
	if status, _, body := sendFrom(t, client, track(creds.WriteKey, "")); status != http.StatusOK {
		t.Errorf("valid write key from another address = %d %s, want 200", status, body)
	}
}

// API keys that fail to authenticate on /graphql, over HTTP or in a
// websocket's connection_init, are limited per client address, in the
// bucket of unverified webhooks: each well-formed key costs a database
// lookup (only keys that authenticated are cached). Past its burst, an
// address is refused with a GraphQL RATE_LIMITED error before its key is
// looked up, and its websocket handshakes with 429; requests with a valid
// key take none of its tokens, and another address is served.
func TestFailedAuthenticationsLimitedPerAddress(t *testing.T) {
	db := pgtest.Open(t)
	_, _, key := pgtest.Workspace(t, db)
	s := server.New(server.Config{Logger: slog.New(slog.DiscardHandler), Limits: server.Limits{
		WebhookUnverifiedRate: server.Rate{RPS: 0.01, Burst: 3},
	}}, db, newResolver(db), db)
	srv := httptest.NewServer(s)
	t.Cleanup(srv.Close)
	query := func(key string) *http.Request {
		req, _ := http.NewRequest(http.MethodPost, srv.URL+"/graphql", strings.NewReader(`{"query":"{ __typename }"}`))
		req.Header.Set("Content-Type", "application/json")
		if key != "" {
			req.Header.Set("Authorization", "Bearer "+key)
		}
		return req
	}
	wantLimited := func(t *testing.T, what string, status int, h http.Header, body string) {
		t.Helper()
		var got struct {
			Errors []struct {
				Message    string
				Extensions struct{ Code string }
			}
		}
		if err := json.Unmarshal([]byte(body), &got); err != nil || status != http.StatusTooManyRequests ||
			len(got.Errors) != 1 || got.Errors[0].Extensions.Code != c360.ERATELIMITED ||
			!strings.Contains(got.Errors[0].Message, "rate limit of failed authentications from this address exceeded") {
			t.Errorf("%s = %d %s, want 429 RATE_LIMITED for failed authentications", what, status, body)
		}
		if ra, err := strconv.Atoi(h.Get("Retry-After")); err != nil || ra < 1 || ra > 100 {
			t.Errorf("%s: Retry-After = %q, want the seconds until a token (at most 100)", what, h.Get("Retry-After"))
		}
	}
	wsFrom := func(ip string) websocket.Dialer {
		nd := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}}
		return websocket.Dialer{HandshakeTimeout: 5 * time.Second, NetDialContext: nd.DialContext}
	}
	attacker, client, app := clientFrom(t, "127.0.0.2"), clientFrom(t, "127.0.0.1"), clientFrom(t, "127.0.0.3")

	// A valid key takes no token of its address's, over HTTP or a
	// websocket, nor does a request without a key (it costs no lookup)...
	for i := 0; i < 4; i++ {
		if status, _, body := sendFrom(t, app, query(key)); status != http.StatusOK {
			t.Fatalf("valid key, request %d = %d %s, want 200", i, status, body)
		}
	}
	dialWSWith(t, wsFrom("127.0.0.3"), wsURL(srv), "graphql-transport-ws", nil).init(key)
	if status, _, body := sendFrom(t, app, query("")); status != http.StatusUnauthorized {
		t.Fatalf("no key = %d %s, want 401", status, body)
	}
	// ... and its address still has its whole burst for unknown keys.
	for i := 0; i < 3; i++ {
		if status, _, body := sendFrom(t, app, query(unknownKey(i))); status != http.StatusUnauthorized {
			t.Fatalf("unknown key %d after valid ones = %d %s, want 401", i, status, body)
		}
	}

	// Unknown keys are answered as such up to the burst...
	for i := 0; i < 3; i++ {
		if status, _, body := sendFrom(t, attacker, query(unknownKey(10+i))); status != http.StatusUnauthorized {
			t.Fatalf("unknown key %d = %d %s, want 401", i, status, body)
		}
	}
	// ... then refused before the lookup, whatever the key: even a valid
	// one, and a websocket's handshake.
	status, h, body := sendFrom(t, attacker, query(unknownKey(13)))
	wantLimited(t, "unknown key past the burst", status, h, body)
	status, h, body = sendFrom(t, attacker, query(key))
	wantLimited(t, "valid key from the same address", status, h, body)
	d := wsFrom("127.0.0.2")
	d.Subprotocols = []string{"graphql-transport-ws"}
	if c, resp, err := d.Dial(wsURL(srv), nil); err == nil {
		c.Close()
		t.Errorf("websocket handshake from the address past its burst succeeded, want 429")
	} else if resp == nil {
		t.Errorf("websocket handshake from the address past its burst: %v, want 429", err)
	} else {
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		wantLimited(t, "websocket handshake", resp.StatusCode, resp.Header, string(b))
	}
	// Another address is served.
	if status, _, body := sendFrom(t, client, query(key)); status != http.StatusOK {
		t.Errorf("valid key from another address = %d %s, want 200", status, body)
	}

	// connection_init takes a token for a key that fails, and connections
	// opened before their address's bucket emptied are refused at init,
	// before the lookup, with 1013 (try again later).
	var conns []*wsClient
	for i := 0; i < 4; i++ {
		conns = append(conns, dialWSWith(t, wsFrom("127.0.0.4"), wsURL(srv), "graphql-transport-ws", nil))
	}
	for i, c := range conns[:3] {
		c.send("connection_init", "", map[string]any{"authorization": "Bearer " + unknownKey(20+i)})
		if got := c.closeCode(); got != server.CloseForbidden {
			t.Fatalf("connection_init %d with an unknown key: close %d, want %d", i, got, server.CloseForbidden)
		}
	}
	conns[3].send("connection_init", "", map[string]any{"authorization": "Bearer " + key})
	if got := conns[3].closeCode(); got != server.CloseTryAgainLater {
		t.Errorf("connection_init past the burst: close %d, want %d", got, server.CloseTryAgainLater)
	}
}

// segmentTrack returns a POST /v1/track of a call with a new messageId
// (prefix and the next *n), with the write key header in its Basic auth
// and body in the call's writeKey, each when not empty.
func segmentTrack(base, prefix string, n *int, header, body string) *http.Request {
	*n++
	call := fmt.Sprintf(`{"userId":"u","event":"E","messageId":"%s%d"`, prefix, *n)
	if body != "" {
		call += `,"writeKey":"` + body + `"`
	}
	req, _ := http.NewRequest(http.MethodPost, base+"/v1/track", strings.NewReader(call+"}"))
	req.Header.Set("Content-Type", "application/json")
	if header != "" {
		req.SetBasicAuth(header, "")
	}
	return req
}

// Behind a proxy named in C360_TRUSTED_PROXIES (here 127.0.0.1), the
// address limit keys its buckets by the client X-Forwarded-For names: a
// forger's refusals through the proxy spend its own bucket, not the
// bucket of every client behind the same proxy. A peer that is not a
// trusted proxy cannot escape its bucket by writing the header itself.
func TestAddressLimitReadsTrustedProxiesForwardedFor(t *testing.T) {
	db := pgtest.Open(t)
	_, _, key := pgtest.Workspace(t, db)
	trusted, err := server.ParseTrustedProxies("127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	s := server.New(server.Config{Logger: slog.New(slog.DiscardHandler), Limits: server.Limits{
		WebhookUnverifiedRate: server.Rate{RPS: 0.01, Burst: 2}, TrustedProxies: trusted,
	}}, db, newResolver(db), db)
	srv := httptest.NewServer(s)
	t.Cleanup(srv.Close)
	query := func(key, forwardedFor string) *http.Request {
		req, _ := http.NewRequest(http.MethodPost, srv.URL+"/graphql", strings.NewReader(`{"query":"{ __typename }"}`))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Authorization", "Bearer "+key)
		if forwardedFor != "" {
			req.Header.Set("X-Forwarded-For", forwardedFor)
		}
		return req
	}
	proxy, other := clientFrom(t, "127.0.0.1"), clientFrom(t, "127.0.0.2")

	// The forger behind the proxy spends its own burst...
	for i := 0; i < 2; i++ {
		if status, _, body := sendFrom(t, proxy, query(unknownKey(i), "198.51.100.66")); status != http.StatusUnauthorized {
			t.Fatalf("unknown key %d = %d %s, want 401", i, status, body)
		}
	}
	if status, _, body := sendFrom(t, proxy, query(key, "198.51.100.66")); status != http.StatusTooManyRequests {
		t.Fatalf("the forger past its burst = %d %s, want 429", status, body)
	}
	// ... whatever it writes left of what the proxy appended.
	if status, _, body := sendFrom(t, proxy, query(key, "203.0.113.1, 198.51.100.66")); status != http.StatusTooManyRequests {
		t.Errorf("the forger with its own X-Forwarded-For entry = %d %s, want 429", status, body)
	}
	// Another client behind the same proxy is served, and has its own burst.
	if status, _, body := sendFrom(t, proxy, query(key, "198.51.100.77")); status != http.StatusOK {
		t.Errorf("another client behind the proxy = %d %s, want 200", status, body)
	}
	if status, _, body := sendFrom(t, proxy, query(unknownKey(5), "198.51.100.77")); status != http.StatusUnauthorized {
		t.Errorf("another client's unknown key = %d %s, want 401", status, body)
	}
	// So is its websocket handshake, while the forger's is refused.
	for _, c := range []struct {
		forwardedFor string
		want         int
	}{{"198.51.100.77", http.StatusSwitchingProtocols}, {"198.51.100.66", http.StatusTooManyRequests}} {
		d := websocket.Dialer{HandshakeTimeout: 5 * time.Second, Subprotocols: []string{"graphql-transport-ws"},
			NetDialContext: (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.1")}}).DialContext}
		conn, resp, err := d.Dial(wsURL(srv), http.Header{"X-Forwarded-For": {c.forwardedFor}})
		if conn != nil {
			conn.Close()
		}
		if resp == nil || resp.StatusCode != c.want {
			t.Errorf("websocket handshake for %s: %v %v, want %d", c.forwardedFor, resp, err, c.want)
		}
	}
	// A peer that is no trusted proxy is its own client, whatever it writes.
	for i := 0; i < 2; i++ {
		sendFrom(t, other, query(unknownKey(10+i), fmt.Sprintf("198.51.100.%d", 100+i)))
	}
	if status, _, body := sendFrom(t, other, query(key, "198.51.100.200")); status != http.StatusTooManyRequests {
		t.Errorf("an untrusted peer with a fresh X-Forwarded-For past its burst = %d %s, want 429", status, body)
	}
}

// connection_init's failed keys behind a trusted proxy spend the bucket of
// the client X-Forwarded-For names, as the handshake does: a forger's
// refusals leave the other clients behind the proxy served.
func TestWebsocketInitReadsTrustedProxiesForwardedFor(t *testing.T) {
	db := pgtest.Open(t)
	_, _, key := pgtest.Workspace(t, db)
	trusted, err := server.ParseTrustedProxies("127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	s := server.New(server.Config{Logger: slog.New(slog.DiscardHandler), Limits: server.Limits{
		WebhookUnverifiedRate: server.Rate{RPS: 0.01, Burst: 2}, TrustedProxies: trusted}}, db, newResolver(db), db)
	srv := httptest.NewServer(s)
	t.Cleanup(srv.Close)
	d := websocket.Dialer{HandshakeTimeout: 5 * time.Second,
		NetDialContext: (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.1")}}).DialContext}
	for i := 0; i < 2; i++ {
		c := dialWSWith(t, d, wsURL(srv), "graphql-transport-ws", http.Header{"X-Forwarded-For": {"198.51.100.66"}})
		c.send("connection_init", "", map[string]any{"authorization": "Bearer " + unknownKey(30+i)})
		if got := c.closeCode(); got != server.CloseForbidden {
			t.Fatalf("the forger's init %d: close %d, want %d", i, got, server.CloseForbidden)
		}
	}
	c := dialWSWith(t, d, wsURL(srv), "graphql-transport-ws", http.Header{"X-Forwarded-For": {"198.51.100.77"}})
	c.send("connection_init", "", map[string]any{"authorization": "Bearer " + key})
	if m := c.read(); m.Type != "connection_ack" {
		t.Errorf("another client's init behind the proxy: %s %s, want connection_ack", m.Type, m.Payload)
	}
}
