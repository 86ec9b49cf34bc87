package whatsapp_test

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/c360dev/c360"
	"github.com/c360dev/c360/connectors/whatsapp"
	"github.com/c360dev/c360/internal/logbuf"
	"github.com/c360dev/c360/internal/pgtest"
	"github.com/c360dev/c360/postgres"
	"github.com/c360dev/c360/resolver"
	"github.com/c360dev/c360/server"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

const (
	appSecret   = "meta-app-secret-0123456789"
	verifyToken = "verify-me-please"
)

// env is the real server with the WhatsApp routes as mountConnectors mounts
// them, over a real store, with one workspace holding the Meta settings.
type env struct {
	db   *postgres.DB
	srv  *httptest.Server
	ws   int64
	slug string
	logs *logbuf.Buffer // the handler's and the server's log lines, as JSON
}

func newEnv(t *testing.T) *env {
	t.Helper()
	return newEnvOn(t, pgtest.Open(t))
}

// newEnvOn is newEnv with the server and the webhook on the store db.
func newEnvOn(t *testing.T, db *postgres.DB) *env {
	t.Helper()
	ws, slug, _ := pgtest.Workspace(t, db)
	if _, err := db.UpdateWorkspace(context.Background(), slug, c360.WorkspaceUpdate{
		WhatsAppAppSecret: ptr(appSecret), WhatsAppVerifyToken: ptr(verifyToken)}); err != nil {
		t.Fatal(err)
	}
	logs := new(logbuf.Buffer)
	log := slog.New(slog.NewJSONHandler(logs, nil))
	res := &resolver.Resolver{CustomerService: db, EventService: db, ConversationService: db, Ingester: db, Now: db.Now}
	s := server.New(server.Config{Logger: log}, db, res, db)
	(&whatsapp.Handler{Workspaces: db, Ingester: db, StatusOf: server.StatusOf, Logger: log, Now: db.Now,
		Limit: s.LimitWebhook}).Register(s)
	srv := httptest.NewServer(s)
	t.Cleanup(srv.Close)
	return &env{db: db, srv: srv, ws: ws, slug: slug, logs: logs}
}

func ptr[T any](v T) *T { return &v }

// signature is X-Hub-Signature-256 as Meta computes it.
func signature(secret string, body []byte) string {
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write(body)
	return "sha256=" + hex.EncodeToString(mac.Sum(nil))
}

func (e *env) path() string { return "/webhooks/whatsapp/" + e.slug }

func (e *env) post(t *testing.T, path string, body []byte, sig string) (int, string) {
	t.Helper()
	status, _, b, err := e.send(path, body, sig)
	if err != nil {
		t.Fatal(err)
	}
	return status, b
}

// send posts body with the signature header sig ("" for none) and returns
// the answer; it may run outside the test's goroutine.
func (e *env) send(path string, body []byte, sig string) (int, http.Header, string, error) {
	req, _ := http.NewRequest(http.MethodPost, e.srv.URL+path, strings.NewReader(string(body)))
	req.Header.Set("Content-Type", "application/json")
	if sig != "" {
		req.Header.Set("X-Hub-Signature-256", sig)
	}
	resp, err := e.srv.Client().Do(req)
	if err != nil {
		return 0, nil, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, string(b), err
}

// deliver posts a signed notification and requires 200.
func (e *env) deliver(t *testing.T, body string) {
	t.Helper()
	if status, b := e.post(t, e.path(), []byte(body), signature(appSecret, []byte(body))); status != http.StatusOK {
		t.Fatalf("status = %d (%s), want 200", status, b)
	}
}

// notification wraps a change value as Meta sends it.
func notification(value string) string {
	return `{"object":"whatsapp_business_account","entry":[{"id":"102290129340398","changes":[{"field":"messages","value":` + value + `}]}]}`
}

func inboundValue(waID, name, messages string) string {
	return fmt.Sprintf(`{"messaging_product":"whatsapp","metadata":{"display_phone_number":"15550783881","phone_number_id":"106540352242922"},
		"contacts":[{"profile":{"name":%q},"wa_id":%q}],"messages":[%s]}`, name, waID, messages)
}

func count(t *testing.T, db *postgres.DB, sql string, args ...any) int {
	t.Helper()
	var n int
	if err := db.Pool.QueryRow(context.Background(), sql, args...).Scan(&n); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return n
}

func (e *env) customer(t *testing.T, phone string) *c360.Customer {
	t.Helper()
	c, err := e.db.FindCustomerByIdentity(context.Background(), e.ws, c360.Identity{Type: "phone", Value: phone})
	if err != nil {
		t.Fatalf("customer %s: %v", phone, err)
	}
	return c
}

func (e *env) message(t *testing.T, wamid string) *c360.Message {
	t.Helper()
	m, err := e.db.FindMessageByProviderID(context.Background(), e.ws, wamid)
	if err != nil {
		t.Fatalf("message %s: %v", wamid, err)
	}
	return m
}

func (e *env) properties(t *testing.T, dedupeKey string) string {
	t.Helper()
	var p string
	if err := e.db.Pool.QueryRow(context.Background(),
		`SELECT properties::text FROM events WHERE workspace_id = $1 AND source = 'whatsapp' AND dedupe_key = $2`, e.ws, dedupeKey).Scan(&p); err != nil {
		t.Fatalf("event %s: %v", dedupeKey, err)
	}
	return p
}

func TestHandshake(t *testing.T) {
	e := newEnv(t)
	get := func(path string, q url.Values) (int, string) {
		resp, err := e.srv.Client().Get(e.srv.URL + path + "?" + q.Encode())
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	q := url.Values{"hub.mode": {"subscribe"}, "hub.verify_token": {verifyToken}, "hub.challenge": {"1158201444"}}
	if status, body := get(e.path(), q); status != http.StatusOK || body != "1158201444" {
		t.Errorf("handshake = %d %q, want 200 with the challenge", status, body)
	}
	wrong := url.Values{"hub.mode": {"subscribe"}, "hub.verify_token": {"guess"}, "hub.challenge": {"1"}}
	if status, body := get(e.path(), wrong); status != http.StatusForbidden || body == "1" {
		t.Errorf("wrong token = %d %q, want 403", status, body)
	}
	badMode := url.Values{"hub.mode": {"unsubscribe"}, "hub.verify_token": {verifyToken}, "hub.challenge": {"1"}}
	if status, _ := get(e.path(), badMode); status != http.StatusForbidden {
		t.Errorf("mode unsubscribe = %d, want 403", status)
	}
	if status, _ := get("/webhooks/whatsapp/no-such-ws", q); status != http.StatusNotFound {
		t.Errorf("unknown workspace = %d, want 404", status)
	}
	// A workspace without a verify token never verifies, even with an empty token.
	if _, err := e.db.UpdateWorkspace(context.Background(), e.slug, c360.WorkspaceUpdate{WhatsAppVerifyToken: ptr("")}); err != nil {
		t.Fatal(err)
	}
	empty := url.Values{"hub.mode": {"subscribe"}, "hub.verify_token": {""}, "hub.challenge": {"1"}}
	if status, _ := get(e.path(), empty); status != http.StatusForbidden {
		t.Errorf("no configured token = %d, want 403", status)
	}
}

func TestSignatureAndLimits(t *testing.T) {
	e := newEnv(t)
	body := []byte(notification(inboundValue("16505551234", "Kerry", `{"from":"16505551234","id":"wamid.SIG1","timestamp":"1700000000","type":"text","text":{"body":"hi"}}`)))
	for _, tc := range []struct {
		name   string
		path   string
		body   []byte
		sig    string
		status int
	}{
		{"missing signature", e.path(), body, "", http.StatusForbidden},
		{"wrong secret", e.path(), body, signature("not-the-secret", body), http.StatusForbidden},
		{"signature of another body", e.path(), body, signature(appSecret, append([]byte(" "), body...)), http.StatusForbidden},
		{"not hex", e.path(), body, "sha256=zz", http.StatusForbidden},
		{"sha1 header format", e.path(), body, "sha1=" + signature(appSecret, body)[7:], http.StatusForbidden},
		{"unknown workspace", "/webhooks/whatsapp/no-such-ws", body, signature(appSecret, body), http.StatusNotFound},
		{"oversized", e.path(), []byte(strings.Repeat(" ", 1<<20+1)), "", http.StatusRequestEntityTooLarge},
		{"signed but not JSON", e.path(), []byte("{"), signature(appSecret, []byte("{")), http.StatusBadRequest},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if status, b := e.post(t, tc.path, tc.body, tc.sig); status != tc.status {
				t.Errorf("status = %d (%s), want %d", status, b, tc.status)
			}
		})
	}
	if n := count(t, e.db, `SELECT count(*) FROM events WHERE workspace_id = $1`, e.ws); n != 0 {
		t.Errorf("events = %d after refusals, want 0", n)
	}
	if !whatsapp.ValidSignature(appSecret, body, signature(appSecret, body)) {
		t.Errorf("ValidSignature refuses a good signature")
	}
}

// A workspace without an app secret can verify no signature, so every
// notification is refused, whatever it is signed with, and the answer says
// that the secret is missing rather than that the signature is wrong.
func TestWorkspaceWithoutAppSecret(t *testing.T) {
	e := newEnv(t)
	if _, err := e.db.UpdateWorkspace(context.Background(), e.slug, c360.WorkspaceUpdate{WhatsAppAppSecret: ptr("")}); err != nil {
		t.Fatal(err)
	}
	body := []byte(notification(inboundValue("16505551240", "Noa",
		`{"from":"16505551240","id":"wamid.NOSECRET","timestamp":"1700000000","type":"text","text":{"body":"hi"}}`)))
	for _, tc := range []struct{ name, sig string }{
		{"signed with the former secret", signature(appSecret, body)},
		// What anyone can compute: it must not pass for a signature under
		// the empty secret.
		{"signed with the empty secret", signature("", body)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			status, got := e.post(t, e.path(), body, tc.sig)
			if status != http.StatusForbidden {
				t.Errorf("status = %d (%s), want 403", status, got)
			}
			if !strings.Contains(got, "no WhatsApp app secret configured") {
				t.Errorf("body = %q, want it to say the workspace has no app secret", got)
			}
			for _, secret := range []string{appSecret, verifyToken, strings.TrimPrefix(tc.sig, "sha256=")} {
				if strings.Contains(got, secret) {
					t.Errorf("body %q contains %q", got, secret)
				}
			}
		})
	}
	for _, table := range []string{"events", "customers", "messages", "dead_letters"} {
		if n := count(t, e.db, `SELECT count(*) FROM `+table+` WHERE workspace_id = $1`, e.ws); n != 0 {
			t.Errorf("%s = %d after refusals, want 0", table, n)
		}
	}
}

func TestInboundText(t *testing.T) {
	e := newEnv(t)
	e.deliver(t, notification(inboundValue("16505551234", "Kerry Fisher",
		`{"from":"16505551234","id":"wamid.TEXT1","timestamp":"1700000000","type":"text","text":{"body":"Where is my order?"}}`)))
	c := e.customer(t, "+16505551234")
	if c.Traits["name"] != "Kerry Fisher" {
		t.Errorf("name = %v, want Kerry Fisher", c.Traits["name"])
	}
	m := e.message(t, "wamid.TEXT1")
	if m.Channel != "whatsapp" || m.Direction != "inbound" || m.Body != "Where is my order?" || m.Status != "received" || m.CustomerID != c.ID {
		t.Errorf("message = %+v", m)
	}
	if got := m.CreatedAt.Unix(); got != 1700000000 {
		t.Errorf("created at %d, want the message's timestamp", got)
	}
	// Dedupe by wamid: Meta's retry of the same notification stores nothing new.
	e.deliver(t, notification(inboundValue("16505551234", "Kerry Fisher",
		`{"from":"16505551234","id":"wamid.TEXT1","timestamp":"1700000000","type":"text","text":{"body":"Where is my order?"}}`)))
	if n := count(t, e.db, `SELECT count(*) FROM messages WHERE workspace_id = $1`, e.ws); n != 1 {
		t.Errorf("messages = %d, want 1", n)
	}
	// A later profile name does not replace a known name.
	e.deliver(t, notification(inboundValue("16505551234", "KF",
		`{"from":"16505551234","id":"wamid.TEXT2","timestamp":"1700000100","type":"text","text":{"body":"hello?"}}`)))
	if c = e.customer(t, "+16505551234"); c.Traits["name"] != "Kerry Fisher" {
		t.Errorf("name = %v, want Kerry Fisher", c.Traits["name"])
	}
}

func TestInboundMediaAndInteractive(t *testing.T) {
	e := newEnv(t)
	e.deliver(t, notification(inboundValue("16505551235", "Lee", strings.Join([]string{
		`{"from":"16505551235","id":"wamid.IMG","timestamp":"1700000000","type":"image","image":{"caption":"the box","mime_type":"image/jpeg","sha256":"x","id":"1003383421387256"}}`,
		`{"from":"16505551235","id":"wamid.DOC","timestamp":"1700000001","type":"document","document":{"filename":"invoice.pdf","mime_type":"application/pdf","id":"2003"}}`,
		`{"from":"16505551235","id":"wamid.AUD","timestamp":"1700000002","type":"audio","audio":{"mime_type":"audio/ogg","id":"3003","voice":true}}`,
		`{"from":"16505551235","id":"wamid.STK","timestamp":"1700000003","type":"sticker","sticker":{"mime_type":"image/webp","id":"4003","animated":false}}`,
		`{"from":"16505551235","id":"wamid.BTN","timestamp":"1700000004","type":"interactive","interactive":{"type":"button_reply","button_reply":{"id":"track-order","title":"Track my order"}}}`,
		`{"from":"16505551235","id":"wamid.LST","timestamp":"1700000005","type":"interactive","interactive":{"type":"list_reply","list_reply":{"id":"size-m","title":"Medium","description":"fits most"}}}`,
		`{"from":"16505551235","id":"wamid.QRB","timestamp":"1700000006","type":"button","button":{"payload":"CONFIRM","text":"Confirm"},"context":{"from":"15550783881","id":"wamid.TEMPLATE"}}`,
	}, ","))))
	for wamid, want := range map[string]struct {
		body  string
		media []string
	}{
		"wamid.IMG": {"the box", []string{"whatsapp-media:1003383421387256"}},
		"wamid.DOC": {"", []string{"whatsapp-media:2003"}},
		"wamid.AUD": {"", []string{"whatsapp-media:3003"}},
		"wamid.STK": {"", []string{"whatsapp-media:4003"}},
		"wamid.BTN": {"Track my order", nil},
		"wamid.LST": {"Medium", nil},
		"wamid.QRB": {"Confirm", nil},
	} {
		m := e.message(t, wamid)
		if m.Body != want.body || fmt.Sprint(m.MediaURLs) != fmt.Sprint(append([]string{}, want.media...)) {
			t.Errorf("%s: body %q media %v; want %q %v", wamid, m.Body, m.MediaURLs, want.body, want.media)
		}
	}
	if p := e.properties(t, "wamid.BTN"); !strings.Contains(p, `"interactive": {"id": "track-order", "type": "button_reply"`) {
		t.Errorf("button_reply properties = %s", p)
	}
	if p := e.properties(t, "wamid.LST"); !strings.Contains(p, `"id": "size-m"`) || !strings.Contains(p, `"list_reply"`) {
		t.Errorf("list_reply properties = %s", p)
	}
	if p := e.properties(t, "wamid.QRB"); !strings.Contains(p, `"payload": "CONFIRM"`) || !strings.Contains(p, `"replyTo": "wamid.TEMPLATE"`) {
		t.Errorf("button properties = %s", p)
	}
	if p := e.properties(t, "wamid.DOC"); !strings.Contains(p, `"filename": "invoice.pdf"`) {
		t.Errorf("document properties = %s", p)
	}
	if n := count(t, e.db, `SELECT count(*) FROM customers WHERE workspace_id = $1`, e.ws); n != 1 {
		t.Errorf("customers = %d, want 1", n)
	}
}

func TestStatuses(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	// A message the business sent (recorded as any outbound message is).
	if _, err := e.db.Ingest(ctx, e.ws, []*c360.Event{{Type: c360.EventMessage, Source: "whatsapp", DedupeKey: "wamid.OUT1",
		Identities: []c360.Identity{{Type: "phone", Value: "+16505551236"}},
		Message:    &c360.MessageInput{Channel: "whatsapp", Direction: "outbound", Body: "shipped", ProviderID: "wamid.OUT1", Status: "accepted"}}}); err != nil {
		t.Fatal(err)
	}
	status := func(id, s, extra string) string {
		return notification(fmt.Sprintf(`{"messaging_product":"whatsapp","metadata":{"display_phone_number":"15550783881","phone_number_id":"1"},
			"statuses":[{"id":%q,"status":%q,"timestamp":"1700000000","recipient_id":"16505551236"%s}]}`, id, s, extra))
	}
	for _, step := range []struct{ status, want string }{
		{"sent", "sent"}, {"read", "read"}, {"delivered", "read"}, {"sent", "read"},
	} {
		e.deliver(t, status("wamid.OUT1", step.status, ""))
		if got := e.message(t, "wamid.OUT1").Status; got != step.want {
			t.Errorf("after %s: %s, want %s", step.status, got, step.want)
		}
	}
	if _, err := e.db.Ingest(ctx, e.ws, []*c360.Event{{Type: c360.EventMessage, Source: "whatsapp", DedupeKey: "wamid.OUT2",
		Identities: []c360.Identity{{Type: "phone", Value: "+16505551236"}},
		Message:    &c360.MessageInput{Channel: "whatsapp", Direction: "outbound", Body: "x", ProviderID: "wamid.OUT2", Status: "accepted"}}}); err != nil {
		t.Fatal(err)
	}
	e.deliver(t, status("wamid.OUT2", "failed", `,"errors":[{"code":131047,"title":"Re-engagement message"}]`))
	e.deliver(t, status("wamid.OUT2", "delivered", ""))
	if m := e.message(t, "wamid.OUT2"); m.Status != "failed" || m.ErrorCode != "131047" {
		t.Errorf("failed message = %s/%s, want failed/131047", m.Status, m.ErrorCode)
	}
	// A status for a message c360 never stored is acknowledged.
	e.deliver(t, status("wamid.UNKNOWN", "delivered", ""))

	// A status needs only its wamid: one addressed to a recipient_id that
	// is no phone number is applied all the same.
	if _, err := e.db.Ingest(ctx, e.ws, []*c360.Event{{Type: c360.EventMessage, Source: "whatsapp", DedupeKey: "wamid.OUT3",
		Identities: []c360.Identity{{Type: "phone", Value: "+16505551236"}},
		Message:    &c360.MessageInput{Channel: "whatsapp", Direction: "outbound", Body: "x", ProviderID: "wamid.OUT3", Status: "accepted"}}}); err != nil {
		t.Fatal(err)
	}
	e.deliver(t, notification(`{"messaging_product":"whatsapp","metadata":{"display_phone_number":"15550783881","phone_number_id":"1"},
		"statuses":[{"id":"wamid.OUT3","status":"delivered","timestamp":"1700000000","recipient_id":"12"}]}`))
	if got := e.message(t, "wamid.OUT3").Status; got != "delivered" {
		t.Errorf("status to recipient 12 = %s, want delivered", got)
	}
}

// A consent keyword sent through Meta sets the customer's WhatsApp consent,
// as one sent through Twilio does: a STOP stored as an ordinary message
// would open the 24-hour window, and sendMessage would pass CheckSendable
// for someone who just wrote STOP.
func TestInboundConsentKeywords(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	ts := e.db.Now().Unix()
	text := func(wamid string, at int64, body string) string {
		return notification(inboundValue("16505551299", "Sam",
			fmt.Sprintf(`{"from":"16505551299","id":%q,"timestamp":"%d","type":"text","text":{"body":%q}}`, wamid, at, body)))
	}
	outreach := func() *c360.Outreach {
		t.Helper()
		c := e.customer(t, "+16505551299")
		o, err := e.db.FindOutreach(ctx, e.ws, c.ID, c360.ChannelWhatsApp)
		if err != nil {
			t.Fatal(err)
		}
		return o
	}
	keyword := func(wamid string) string {
		t.Helper()
		var kw *string
		if err := e.db.Pool.QueryRow(ctx, `SELECT properties->>'keyword' FROM events
			WHERE workspace_id = $1 AND source = 'whatsapp' AND dedupe_key = $2`, e.ws, wamid).Scan(&kw); err != nil {
			t.Fatalf("event %s: %v", wamid, err)
		}
		if kw == nil {
			return ""
		}
		return *kw
	}
	wantConsent := func(step, want string) {
		t.Helper()
		o := outreach()
		if o.Consent == nil || o.Consent.Status != want || o.Consent.Source != "whatsapp" {
			t.Errorf("%s: whatsapp consent = %+v, want %s from whatsapp", step, o.Consent, want)
		}
		err := o.CheckSendable(e.db.Now())
		if want == c360.ConsentOptedOut && c360.ErrorCode(err) != c360.EFORBIDDEN {
			t.Errorf("%s: CheckSendable = %v, want FORBIDDEN", step, err)
		}
		if want == c360.ConsentOptedIn && err != nil {
			t.Errorf("%s: CheckSendable = %v, want nil (opted in, window open)", step, err)
		}
	}

	e.deliver(t, text("wamid.HI", ts, "please stop by tomorrow"))
	if o := outreach(); o.Consent != nil || o.CheckSendable(e.db.Now()) != nil {
		t.Errorf("after a sentence: consent %+v, CheckSendable %v; want none and sendable", o.Consent, o.CheckSendable(e.db.Now()))
	}
	e.deliver(t, text("wamid.STOP1", ts+1, " Stop. "))
	wantConsent("STOP", c360.ConsentOptedOut)
	if kw := keyword("wamid.STOP1"); kw != "STOP" {
		t.Errorf("STOP event keyword = %q, want STOP", kw)
	}
	e.deliver(t, text("wamid.HELP", ts+2, "help"))
	wantConsent("HELP", c360.ConsentOptedOut)
	if kw := keyword("wamid.HELP"); kw != "HELP" {
		t.Errorf("HELP event keyword = %q, want HELP", kw)
	}
	e.deliver(t, text("wamid.START", ts+3, "START"))
	wantConsent("START", c360.ConsentOptedIn)

	// A reply button's, a list item's or a template quick reply's title
	// is the business's words, not the customer's: tapping one decides
	// nothing about consent, whatever it says.
	inbound := func(wamid string, at int64, msg string) string {
		return notification(inboundValue("16505551299", "Sam", fmt.Sprintf(
			`{"from":"16505551299","id":%q,"timestamp":"%d",%s}`, wamid, at, msg)))
	}
	e.deliver(t, inbound("wamid.BTNSTOP", ts+4, `"type":"interactive","interactive":{"type":"button_reply","button_reply":{"id":"optout","title":"STOP"}}`))
	wantConsent("button_reply STOP", c360.ConsentOptedIn)
	e.deliver(t, inbound("wamid.LSTCANCEL", ts+5, `"type":"interactive","interactive":{"type":"list_reply","list_reply":{"id":"appt-cancel","title":"Cancel"}}`))
	wantConsent("list_reply Cancel", c360.ConsentOptedIn)
	e.deliver(t, inbound("wamid.QRSTOP", ts+6, `"type":"button","button":{"payload":"OPT_OUT","text":"Stop"},"context":{"id":"wamid.TEMPLATE"}`))
	wantConsent("quick reply Stop", c360.ConsentOptedIn)
	for _, id := range []string{"wamid.BTNSTOP", "wamid.LSTCANCEL", "wamid.QRSTOP"} {
		if kw := keyword(id); kw != "" {
			t.Errorf("%s: event keyword = %q, want none", id, kw)
		}
	}
	// A caption is typed by the customer: it is read as a text is.
	e.deliver(t, inbound("wamid.CAPSTOP", ts+7, `"type":"image","image":{"caption":"STOP","mime_type":"image/jpeg","id":"1003383421387257"}`))
	wantConsent("caption STOP", c360.ConsentOptedOut)
	e.deliver(t, inbound("wamid.BTNYES", ts+8, `"type":"interactive","interactive":{"type":"button_reply","button_reply":{"id":"appt-42-yes","title":"Yes"}}`))
	wantConsent("button_reply Yes", c360.ConsentOptedOut)
	e.deliver(t, text("wamid.YES", ts+9, "yes"))
	wantConsent("YES", c360.ConsentOptedIn)
	e.deliver(t, text("wamid.STOP2", ts+10, "STOP"))
	wantConsent("typed STOP", c360.ConsentOptedOut)
	// REVOKE and OPTOUT, Twilio's opt-out words since May 2025, opt out
	// whichever way they arrive.
	for i, word := range []string{"revoke", "OptOut"} {
		e.deliver(t, text(fmt.Sprintf("wamid.START%d", i), ts+11+2*int64(i), "START"))
		wantConsent("START", c360.ConsentOptedIn)
		e.deliver(t, text(fmt.Sprintf("wamid.OUT%d", i), ts+12+2*int64(i), word))
		wantConsent(word, c360.ConsentOptedOut)
	}

	// Opt-out is per channel: a WhatsApp STOP leaves SMS alone.
	c := e.customer(t, "+16505551299")
	o, err := e.db.FindOutreach(ctx, e.ws, c.ID, c360.ChannelSMS)
	if err != nil {
		t.Fatal(err)
	}
	if o.Consent != nil {
		t.Errorf("sms consent after WhatsApp STOPs = %+v, want none", o.Consent)
	}
}

// A customer who taps a reply button under a business's message is not
// opted out or in by its title: "Cancel" under an appointment reminder
// cancels the appointment, not WhatsApp.
func TestReplyButtonTitlesAreNotConsent(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	ts := e.db.Now().Unix()
	e.deliver(t, notification(inboundValue("16505551288", "Ana", fmt.Sprintf(
		`{"from":"16505551288","id":"wamid.CANCEL","timestamp":"%d","type":"interactive","interactive":{"type":"button_reply","button_reply":{"id":"appt-42-cancel","title":"Cancel"}}}`, ts))))
	c := e.customer(t, "+16505551288")
	o, err := e.db.FindOutreach(ctx, e.ws, c.ID, c360.ChannelWhatsApp)
	if err != nil {
		t.Fatal(err)
	}
	if o.Consent != nil || o.CheckSendable(e.db.Now()) != nil {
		t.Errorf("after tapping Cancel: consent = %+v, CheckSendable = %v; want none and sendable", o.Consent, o.CheckSendable(e.db.Now()))
	}
}

func TestUserChangedNumber(t *testing.T) {
	e := newEnv(t)
	e.deliver(t, notification(inboundValue("16505551237", "Sam",
		`{"from":"16505551237","id":"wamid.BEFORE","timestamp":"1700000000","type":"text","text":{"body":"hi"}}`)))
	old := e.customer(t, "+16505551237")
	e.deliver(t, notification(`{"messaging_product":"whatsapp","metadata":{"display_phone_number":"15550783881","phone_number_id":"1"},
		"messages":[{"from":"16505551237","id":"wamid.CHANGE","timestamp":"1700000100","type":"system",
		"system":{"body":"Sam changed from 16505551237 to 16505559999","new_wa_id":"16505559999","type":"user_changed_number"}}]}`))
	moved := e.customer(t, "+16505559999")
	if moved.ID != old.ID {
		t.Errorf("new number's customer = %d, want %d (the same customer)", moved.ID, old.ID)
	}
	// Messages from the new number land on the same profile.
	e.deliver(t, notification(inboundValue("16505559999", "Sam",
		`{"from":"16505559999","id":"wamid.AFTER","timestamp":"1700000200","type":"text","text":{"body":"new phone"}}`)))
	if m := e.message(t, "wamid.AFTER"); m.CustomerID != old.ID {
		t.Errorf("message from the new number went to customer %d, want %d", m.CustomerID, old.ID)
	}
	if n := count(t, e.db, `SELECT count(*) FROM customers WHERE workspace_id = $1`, e.ws); n != 1 {
		t.Errorf("customers = %d, want 1", n)
	}
}

// An event ingest refuses as invalid is acknowledged with the rest of the
// notification, so it must not be lost: it is kept as a dead letter, with
// the reason, for an admin to replay once a fix accepts it; the rest of the
// notification is stored. Meta's redelivery counts one more attempt.
func TestInvalidEventKeptAsDeadLetter(t *testing.T) {
	e := newEnv(t)
	body := notification(`{"messaging_product":"whatsapp","contacts":[],"messages":[
		{"from":"abc","id":"wamid.BAD","timestamp":"1700000000","type":"text","text":{"body":"x"}},
		{"from":"16505551238","id":"wamid.GOOD","timestamp":"1700000000","type":"text","text":{"body":"y"}}]}`)
	for attempt := 1; attempt <= 2; attempt++ {
		e.deliver(t, body)
		p, err := e.db.DeadLetters(context.Background(), e.ws, c360.DeadLetterFilter{PageArgs: c360.PageArgs{First: 10}})
		if err != nil {
			t.Fatal(err)
		}
		if len(p.Items) != 1 {
			t.Fatalf("delivery %d: dead letters = %+v, want wamid.BAD", attempt, p.Items)
		}
		d := p.Items[0]
		if d.DedupeKey != "wamid.BAD" || d.Source != "whatsapp" || d.EventType != c360.EventMessage || d.Attempts != attempt ||
			!strings.Contains(d.Error, `refused as invalid before ingest: invalid phone "+abc"`) {
			t.Errorf("delivery %d: dead letter = %+v", attempt, d)
		}
		if strings.Contains(d.Error, appSecret) || strings.Contains(fmt.Sprint(d.Event), appSecret) {
			t.Errorf("dead letter holds the app secret: %+v", d)
		}
	}
	if m := e.message(t, "wamid.GOOD"); m.Body != "y" {
		t.Errorf("good message = %+v", m)
	}
	// The log line names the number it refused masked; the dead letter,
	// which admins read, keeps it whole for the replay.
	long := notification(`{"messaging_product":"whatsapp","contacts":[],"messages":[
		{"from":"14155550100123456","id":"wamid.LONG","timestamp":"1700000000","type":"text","text":{"body":"z"}}]}`)
	e.deliver(t, long)
	if logs := e.logs.String(); strings.Contains(logs, "14155550100123456") || !strings.Contains(logs, "wamid.LONG") {
		t.Errorf("the refusal's log line holds the number whole, or is missing:\n%s", logs)
	}
	if n := count(t, e.db, `SELECT count(*) FROM events WHERE workspace_id = $1`, e.ws); n != 1 {
		t.Errorf("events = %d, want 1", n)
	}
}

// A new app secret set by another process (the command line) is accepted
// at once, though this server cached the row before: a refused signature
// reads the row again, at most once a second per workspace. Meta would
// retry a 403, but for up to the cache's 5 seconds every notification
// was refused.
func TestNewAppSecretAcceptedRightAfterAnUpdateByAnotherProcess(t *testing.T) {
	e := newEnv(t)
	cli := pgtest.Open(t) // the command line's own store
	body := textNotification("wamid.ROTATE1", "16505557001")
	if status, b := e.post(t, e.path(), body, signature(appSecret, body)); status != http.StatusOK { // caches the row
		t.Fatalf("warm-up: %d %s", status, b)
	}
	const newSecret = "meta-app-secret-rotated-000001"
	if _, err := cli.UpdateWorkspace(context.Background(), e.slug, c360.WorkspaceUpdate{WhatsAppAppSecret: ptr(newSecret)}); err != nil {
		t.Fatal(err)
	}
	body = textNotification("wamid.ROTATE2", "16505557001")
	if status, b := e.post(t, e.path(), body, signature(newSecret, body)); status != http.StatusOK {
		t.Errorf("signed with the new app secret right after the update: %d %s, want 200", status, b)
	}
	body = textNotification("wamid.ROTATE3", "16505557001")
	if status, _ := e.post(t, e.path(), body, signature(appSecret, body)); status != http.StatusForbidden {
		t.Errorf("signed with the old app secret after the update: %d, want 403", status)
	}
}
