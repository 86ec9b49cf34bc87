package twilio_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/c360dev/c360"
	"github.com/c360dev/c360/connectors/twilio"
)

const sendMutation = `mutation($id: ID!, $channel: String!, $body: String!) {
	sendMessage(input: {customerId: $id, channel: $channel, body: $body}) {
		id channel direction body status providerId errorCode
	}
}`

type sentMessage struct {
	ID, Channel, Direction, Body, Status, ProviderID string
	ErrorCode                                        *string
}

func (e *env) send(t *testing.T, key string, customerID int64, channel, body string) (*sentMessage, gqlResponse) {
	t.Helper()
	r := e.gql(t, key, sendMutation, map[string]any{"id": fmt.Sprint(customerID), "channel": channel, "body": body})
	if len(r.Errors) > 0 {
		return nil, r
	}
	var d struct{ SendMessage sentMessage }
	if err := json.Unmarshal(r.Data, &d); err != nil {
		t.Fatalf("decode %s: %v", r.raw, err)
	}
	return &d.SendMessage, r
}

// identify creates a customer with the identities and returns its id.
func (e *env) identify(t *testing.T, key string, ids ...c360.Identity) int64 {
	t.Helper()
	res, err := e.db.Ingest(context.Background(), e.ws, []*c360.Event{{Type: c360.EventIdentify, Source: "test", DedupeKey: key, Identities: ids}})
	if err != nil {
		t.Fatal(err)
	}
	return res[0].CustomerID
}

func (e *env) apiKey(t *testing.T, role c360.Role) string {
	t.Helper()
	k, _, err := e.db.CreateAPIKey(context.Background(), e.slug, role, nil)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestSendSMS(t *testing.T) {
	e := newEnv(t)
	const phone = "+14155550120"
	id := e.identify(t, "id-120", c360.Identity{Type: "phone", Value: phone})
	agent := e.apiKey(t, c360.RoleAgent)
	m, r := e.send(t, agent, id, "sms", "Your order shipped")
	if m == nil {
		t.Fatalf("sendMessage: %s", r.raw)
	}
	// The sender is named as the audit log names it, by the key's prefix,
	// which an admin finds in the key listing; not by a row id no API shows.
	var sentBy string
	if err := e.db.Pool.QueryRow(context.Background(), `SELECT properties->>'sentBy' FROM events
		WHERE workspace_id = $1 AND customer_id = $2 AND type = 'message'`, e.ws, id).Scan(&sentBy); err != nil {
		t.Fatal(err)
	}
	if want := "key " + agent[len("c360_"):len("c360_")+12]; sentBy != want {
		t.Errorf("the message's sentBy = %q, want %q", sentBy, want)
	}
	reqs := e.twilio.requests()
	if len(reqs) != 1 {
		t.Fatalf("Twilio requests = %d, want 1", len(reqs))
	}
	got := reqs[0]
	if got.Method != http.MethodPost || got.Path != "/2010-04-01/Accounts/"+accountSID+"/Messages.json" {
		t.Errorf("request = %s %s", got.Method, got.Path)
	}
	if got.User != accountSID || got.Password != authToken {
		t.Errorf("basic auth = %q:%q, want the workspace's AccountSid:AuthToken", got.User, got.Password)
	}
	for field, want := range map[string]string{
		"To": phone, "From": "+14155550199", "Body": "Your order shipped",
		"StatusCallback": publicURL + "/webhooks/twilio/" + e.slug + "/status?message=" + m.ID,
	} {
		if v := got.Form.Get(field); v != want {
			t.Errorf("%s = %q, want %q", field, v, want)
		}
	}
	if m.Channel != "sms" || m.Direction != "outbound" || m.Body != "Your order shipped" || m.Status != "queued" ||
		!strings.HasPrefix(m.ProviderID, "SMfake") || m.ErrorCode != nil {
		t.Errorf("sendMessage = %+v", m)
	}
	if ms := e.messages(t, id, "sms"); len(ms) != 1 || ms[0].ProviderID != m.ProviderID || ms[0].Direction != "outbound" {
		t.Errorf("stored messages = %+v", ms)
	}
	// Twilio's callback to the StatusCallback URL moves it forward.
	e.status(t, statusForm(m.ProviderID, "delivered", phone))
	if s := e.message(t, m.ProviderID).Status; s != "delivered" {
		t.Errorf("status after callback = %s, want delivered", s)
	}
}

func TestSendWhatsAppInsideSessionWindow(t *testing.T) {
	e := newEnv(t)
	const phone = "+14155550121"
	if status, _, _ := e.webhook(t, e.inboundPath(), inbound("SM121", "whatsapp:"+phone, "hi"), authToken); status != http.StatusOK {
		t.Fatal(status)
	}
	c := e.customerByPhone(t, phone)
	m, r := e.send(t, e.key, c.ID, "whatsapp", "Hello from support")
	if m == nil {
		t.Fatalf("sendMessage: %s", r.raw)
	}
	reqs := e.twilio.requests()
	if len(reqs) != 1 {
		t.Fatalf("Twilio requests = %d, want 1", len(reqs))
	}
	if to, from := reqs[0].Form.Get("To"), reqs[0].Form.Get("From"); to != "whatsapp:"+phone || from != "whatsapp:+14155550198" {
		t.Errorf("To, From = %q, %q; want whatsapp: prefixed", to, from)
	}
	if ms := e.messages(t, c.ID, "whatsapp"); len(ms) != 2 || ms[0].Direction != "outbound" || ms[0].Channel != "whatsapp" {
		t.Errorf("whatsapp messages = %+v, want the outbound one on the inbound's conversation", ms)
	}
}

// WhatsApp's 24-hour window is per business number: a message the customer
// sent to a WhatsApp Cloud API number, or to another of the account's
// Twilio senders, does not open the window of the workspace's Twilio
// WhatsApp sender. Nothing is recorded or sent; once the customer writes
// to that sender, the reply goes out.
func TestSendWhatsAppWindowIsTheSendersOwn(t *testing.T) {
	e := newEnv(t)
	const phone = "+14155550305"
	now := time.Now().UTC()
	res, err := e.db.Ingest(context.Background(), e.ws, []*c360.Event{{Type: c360.EventMessage, Source: "whatsapp", DedupeKey: "wamid.r5",
		Identities: []c360.Identity{{Type: "phone", Value: phone}}, Properties: map[string]any{"to": "+15550783881"}, OccurredAt: now, ReceivedAt: now,
		Message: &c360.MessageInput{Channel: "whatsapp", Direction: "inbound", Body: "hi", ProviderID: "wamid.r5", Status: "received"}}})
	if err != nil {
		t.Fatal(err)
	}
	id := res[0].CustomerID
	if status, _, _ := e.webhook(t, e.inboundPath(), inbound("SM305", "whatsapp:"+phone, "hi", "To", "whatsapp:+14155550197"), authToken); status != http.StatusOK {
		t.Fatal(status)
	}
	if m, r := e.send(t, e.key, id, "whatsapp", "Hello"); m != nil || r.code() != c360.EFORBIDDEN || !strings.Contains(r.message(), "24-hour session window is closed") {
		t.Errorf("sendMessage after messages to other business numbers = %+v, %s; want FORBIDDEN, the window closed", m, r.raw)
	}
	if n := len(e.twilio.requests()); n != 0 {
		t.Errorf("Twilio requests = %d, want 0: the sender's window is closed", n)
	}
	if n := count(t, e.db, `SELECT count(*) FROM messages WHERE workspace_id = $1 AND direction = 'outbound'`, e.ws); n != 0 {
		t.Errorf("outbound messages = %d, want 0", n)
	}
	if status, _, _ := e.webhook(t, e.inboundPath(), inbound("SM306", "whatsapp:"+phone, "hello?"), authToken); status != http.StatusOK {
		t.Fatal(status)
	}
	if m, r := e.send(t, e.key, id, "whatsapp", "Hello"); m == nil {
		t.Errorf("sendMessage after a message to the sender: %s", r.raw)
	}
}

func TestSendThroughMessagingService(t *testing.T) {
	e := newEnv(t)
	if _, err := e.db.UpdateWorkspace(context.Background(), e.slug, c360.WorkspaceUpdate{
		TwilioSMSFrom: ptr(""), TwilioMessagingServiceSID: ptr("MG00000000000000000000000000000001")}); err != nil {
		t.Fatal(err)
	}
	id := e.identify(t, "id-122", c360.Identity{Type: "phone", Value: "+14155550122"})
	if m, r := e.send(t, e.key, id, "sms", "hi"); m == nil {
		t.Fatalf("sendMessage: %s", r.raw)
	}
	f := e.twilio.requests()[0].Form
	if f.Get("MessagingServiceSid") != "MG00000000000000000000000000000001" || f.Has("From") {
		t.Errorf("form = %v, want MessagingServiceSid and no From", f)
	}
}

// Every refusal is a clear error code, and Twilio sees no request.
func TestSendRefusalsSendNothing(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	optedOut := e.identify(t, "id-130", c360.Identity{Type: "phone", Value: "+14155550130"})
	if status, _, _ := e.webhook(t, e.inboundPath(), inbound("SM130", "+14155550130", "STOP"), authToken); status != http.StatusOK {
		t.Fatal(status)
	}
	noPhone := e.identify(t, "id-131", c360.Identity{Type: "email", Value: "nophone@example.com"})
	// Wrote on WhatsApp 25 hours ago: the session window is closed.
	stale := e.identify(t, "id-132", c360.Identity{Type: "phone", Value: "+14155550132"})
	if _, err := e.db.Ingest(ctx, e.ws, []*c360.Event{{Type: c360.EventMessage, Source: "twilio", DedupeKey: "SM132",
		Identities: []c360.Identity{{Type: "phone", Value: "+14155550132"}}, OccurredAt: time.Now().Add(-25 * time.Hour),
		Message: &c360.MessageInput{Channel: "whatsapp", Direction: "inbound", Body: "hi", ProviderID: "SM132", Status: "received"}}}); err != nil {
		t.Fatal(err)
	}
	smsOnly := e.identify(t, "id-133", c360.Identity{Type: "phone", Value: "+14155550133"})

	for _, tc := range []struct {
		name     string
		key      string
		id       int64
		channel  string
		body     string
		code     string
		contains string
	}{
		{"opted out", e.key, optedOut, "sms", "hi", c360.EFORBIDDEN, "customer opted out of sms"},
		{"no phone", e.key, noPhone, "sms", "hi", c360.EINVALID, "no phone number"},
		{"whatsapp window closed", e.key, stale, "whatsapp", "hi", c360.EFORBIDDEN, "24-hour session window"},
		{"whatsapp never written", e.key, smsOnly, "whatsapp", "hi", c360.EFORBIDDEN, "24-hour session window"},
		{"assistant key", e.apiKey(t, c360.RoleAssistant), smsOnly, "sms", "hi", c360.EFORBIDDEN, ""},
		{"write key", e.apiKey(t, c360.RoleWrite), smsOnly, "sms", "hi", c360.EFORBIDDEN, ""},
		{"unknown channel", e.key, smsOnly, "email", "hi", c360.EINVALID, "sms or whatsapp"},
		{"empty body", e.key, smsOnly, "sms", "  ", c360.EINVALID, "body"},
		{"body too long", e.key, smsOnly, "sms", strings.Repeat("a", 1601), c360.EINVALID, "1600"},
		{"unknown customer", e.key, 987654321, "sms", "hi", c360.ENOTFOUND, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, r := e.send(t, tc.key, tc.id, tc.channel, tc.body)
			if m != nil || r.code() != tc.code || !strings.Contains(r.message(), tc.contains) {
				t.Errorf("sendMessage = %+v, %s; want %s containing %q", m, r.raw, tc.code, tc.contains)
			}
		})
	}
	// Workspace settings missing.
	if _, err := e.db.UpdateWorkspace(ctx, e.slug, c360.WorkspaceUpdate{TwilioSMSFrom: ptr("")}); err != nil {
		t.Fatal(err)
	}
	if _, r := e.send(t, e.key, smsOnly, "sms", "hi"); r.code() != c360.EINVALID || !strings.Contains(r.message(), "no SMS sender") {
		t.Errorf("no sender: %s", r.raw)
	}
	if _, err := e.db.UpdateWorkspace(ctx, e.slug, c360.WorkspaceUpdate{TwilioSMSFrom: ptr("+14155550199"), TwilioAccountSID: ptr("")}); err != nil {
		t.Fatal(err)
	}
	if _, r := e.send(t, e.key, smsOnly, "sms", "hi"); r.code() != c360.EINVALID || !strings.Contains(r.message(), "no Twilio credentials") {
		t.Errorf("no credentials: %s", r.raw)
	}
	if n := len(e.twilio.requests()); n != 0 {
		t.Errorf("Twilio requests = %d, want 0", n)
	}
	if n := count(t, e.db, `SELECT count(*) FROM messages WHERE workspace_id = $1 AND direction = 'outbound'`, e.ws); n != 0 {
		t.Errorf("outbound messages = %d, want 0", n)
	}
}

// A body PostgreSQL cannot store (a NUL character, valid in GraphQL's JSON
// as "\u0000") is refused before anything is sent: sent first, the message
// could never be recorded, and the agent would learn only that it was sent
// but not recorded.
func TestSendUnstorableBodyRefusedBeforeSending(t *testing.T) {
	e := newEnv(t)
	id := e.identify(t, "id-902", c360.Identity{Type: "phone", Value: "+14155550902"})
	for _, body := range []string{"Your code is\u0000 4242", "\x00"} {
		m, r := e.send(t, e.key, id, "sms", body)
		if m != nil || r.code() != c360.EINVALID || !strings.Contains(r.message(), "NUL") {
			t.Errorf("sendMessage(%q) = %+v, %s; want BAD_USER_INPUT naming the NUL", body, m, r.raw)
		}
	}
	if n := len(e.twilio.requests()); n != 0 {
		t.Errorf("Twilio requests = %d, want 0", n)
	}
	for _, table := range []string{"messages", "dead_letters"} {
		if n := count(t, e.db, `SELECT count(*) FROM `+table+` WHERE workspace_id = $1`, e.ws); n != 0 {
			t.Errorf("%s = %d, want 0", table, n)
		}
	}
	// The same text without the NUL is sent and recorded.
	if m, r := e.send(t, e.key, id, "sms", "Your code is 4242"); m == nil || len(e.twilio.requests()) != 1 {
		t.Errorf("sendMessage without the NUL = %+v, %s; want sent", m, r.raw)
	}
}

func TestSendTwilioErrors(t *testing.T) {
	e := newEnv(t)
	id := e.identify(t, "id-140", c360.Identity{Type: "phone", Value: "+14155550140"})
	// Each send is recorded before Twilio is called: a refusal leaves it
	// failed with Twilio's code, an unknown outcome unconfirmed.
	for _, tc := range []struct {
		name       string
		status     int
		body       string
		code       string
		contains   string
		msgStatus  string
		msgErrCode string
	}{
		{"invalid To", 400, `{"code": 21211, "message": "The 'To' number +14155550140 is not a valid phone number.", "more_info": "https://www.twilio.com/docs/errors/21211", "status": 400}`,
			c360.EINVALID, "Twilio refused the message: The 'To' number +14155550140 is not a valid phone number. (Twilio error 21211)", "failed", "21211"},
		{"bad credentials", 401, `{"code": 20003, "message": "Authenticate", "more_info": "https://www.twilio.com/docs/errors/20003", "status": 401}`,
			c360.EUNAVAILABLE, "Twilio refused the workspace's Twilio setup, not the message: its credentials", "failed", "20003"},
		{"rate limited", 429, `{"code": 20429, "message": "Too Many Requests", "status": 429}`, c360.ERATELIMITED, "20429", "failed", "20429"},
		{"server error", 500, `{"code": 20500, "message": "Internal Server Error", "status": 500}`, c360.EUNAVAILABLE, "may or may not", "unconfirmed", ""},
		{"gateway error", 502, `<html>Bad Gateway</html>`, c360.EUNAVAILABLE, "did not answer", "unconfirmed", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e.twilio.fail(tc.status, tc.body)
			m, r := e.send(t, e.key, id, "sms", "hi "+tc.name)
			if m != nil || r.code() != tc.code || !strings.Contains(r.message(), tc.contains) {
				t.Errorf("sendMessage = %+v, %s; want %s containing %q", m, r.raw, tc.code, tc.contains)
			}
			if strings.Contains(r.raw, authToken) {
				t.Errorf("the answer leaks the auth token: %s", r.raw)
			}
			ms := e.messages(t, id, "sms")
			if len(ms) == 0 || ms[0].Body != "hi "+tc.name || ms[0].Status != tc.msgStatus || ms[0].ErrorCode != tc.msgErrCode || ms[0].ProviderID != "" {
				t.Fatalf("messages = %+v, want the newest %s/%q", ms, tc.msgStatus, tc.msgErrCode)
			}
			if tc.msgStatus == "unconfirmed" && !strings.Contains(r.message(), "recorded as message "+fmt.Sprint(ms[0].ID)+", status unconfirmed") {
				t.Errorf("message = %q, want it to name the recorded message", r.message())
			}
			// Twilio gave the message no SID: the store keeps none, and
			// GraphQL answers null, not "".
			var stored *string
			if err := e.db.Pool.QueryRow(context.Background(), `SELECT provider_id FROM messages WHERE workspace_id = $1 AND id = $2`,
				e.ws, ms[0].ID).Scan(&stored); err != nil || stored != nil {
				t.Errorf("stored provider_id = %v, %v; want NULL", stored, err)
			}
			if got := newestProviderID(t, e, id); got != "null" {
				t.Errorf("Message.providerId of the refused message = %s, want null", got)
			}
		})
	}
	// A message an earlier build stored with an empty provider id reads
	// as having none too.
	ms := e.messages(t, id, "sms")
	if _, err := e.db.Pool.Exec(context.Background(), `UPDATE messages SET provider_id = '' WHERE workspace_id = $1 AND id = $2`, e.ws, ms[0].ID); err != nil {
		t.Fatal(err)
	}
	if got := newestProviderID(t, e, id); got != "null" {
		t.Errorf("Message.providerId of a message stored with an empty id = %s, want null", got)
	}
}

// newestProviderID returns, as JSON, the providerId of the newest message
// of the customer's SMS conversation, as GraphQL answers it.
func newestProviderID(t *testing.T, e *env, customerID int64) string {
	t.Helper()
	r := e.gql(t, e.key, `query($id: ID!) { customer(id: $id) { conversations { edges { node { channel
		messages(first: 1) { edges { node { providerId } } } } } } } }`, map[string]any{"id": fmt.Sprint(customerID)})
	var d struct {
		Customer struct {
			Conversations struct {
				Edges []struct {
					Node struct {
						Channel  string
						Messages struct {
							Edges []struct {
								Node struct{ ProviderID json.RawMessage }
							}
						}
					}
				}
			}
		}
	}
	if len(r.Errors) > 0 || json.Unmarshal(r.Data, &d) != nil {
		t.Fatalf("read messages: %s", r.raw)
	}
	for _, c := range d.Customer.Conversations.Edges {
		if c.Node.Channel == "sms" && len(c.Node.Messages.Edges) == 1 {
			return string(c.Node.Messages.Edges[0].Node.ProviderID)
		}
	}
	t.Fatalf("no SMS message in %s", r.raw)
	return ""
}

// The workspace's Twilio Account SID reaches neither the sender's answer
// nor the log: Twilio's 20404 quotes the resource it did not find
// (/2010-04-01/Accounts/AC…/Messages.json), and an unreachable Twilio's
// error (a *url.Error) names the request's URL. Before, both were passed
// on verbatim.
func TestTwilioErrorsDoNotNameTheAccountSID(t *testing.T) {
	e := newEnv(t)
	id := e.identify(t, "id-395", c360.Identity{Type: "phone", Value: "+14155550395"})
	e.twilio.fail(404, `{"code": 20404, "message": "The requested resource /2010-04-01/Accounts/`+accountSID+`/Messages.json was not found", "more_info": "https://www.twilio.com/docs/errors/20404", "status": 404}`)
	if m, r := e.send(t, e.key, id, "sms", "hi"); m != nil || strings.Contains(r.raw, accountSID) ||
		!strings.Contains(r.message(), "/2010-04-01/Accounts/AC[redacted]/Messages.json was not found (Twilio error 20404)") {
		t.Errorf("sendMessage = %+v, %s; want Twilio's message without the Account SID", m, r.raw)
	}

	e.twilio.srv.Close() // connection refused
	if m, r := e.send(t, e.key, id, "sms", "hi"); m != nil || r.code() != c360.EUNAVAILABLE || strings.Contains(r.raw, accountSID) {
		t.Errorf("sendMessage to an unreachable Twilio = %+v, %s; want UNAVAILABLE", m, r.raw)
	}
	logs := e.logs.String()
	if !strings.Contains(logs, "twilio unreachable") || !strings.Contains(logs, "connection refused") {
		t.Errorf("logs = %s, want the unreachable Twilio logged with its cause", logs)
	}
	for _, l := range strings.Split(logs, "\n") {
		if strings.Contains(l, accountSID) {
			t.Errorf("log line names the Account SID: %s", l)
		}
	}
}

// A send whose answer is lost is in the conversation, unconfirmed, and
// Twilio's status callbacks, which name it in their URL, attach its SID
// and move it on. A callback with the message in the URL but a signature
// over another URL is refused.
func TestSendWithLostAnswerIsCaughtUpByItsCallbacks(t *testing.T) {
	e := newEnv(t)
	const phone = "+14155550141"
	id := e.identify(t, "id-141", c360.Identity{Type: "phone", Value: phone})
	e.twilio.fail(500, `{"code": 20500, "message": "Internal Server Error", "status": 500}`)
	if _, r := e.send(t, e.key, id, "sms", "Your order shipped"); r.code() != c360.EUNAVAILABLE {
		t.Fatalf("sendMessage: %s, want UNAVAILABLE", r.raw)
	}
	ms := e.messages(t, id, "sms")
	if len(ms) != 1 || ms[0].Status != "unconfirmed" || ms[0].Direction != "outbound" || ms[0].Body != "Your order shipped" {
		t.Fatalf("messages = %+v, want the send, unconfirmed", ms)
	}
	callback, err := url.Parse(e.twilio.requests()[0].Form.Get("StatusCallback"))
	if err != nil || callback.Query().Get("message") != fmt.Sprint(ms[0].ID) {
		t.Fatalf("StatusCallback = %v, %v; want it to name message %d", callback, err, ms[0].ID)
	}
	path := callback.RequestURI()
	const sid = "SM00000000000000000000000000000141"
	// Signed over the URL without the query: not Twilio's.
	form := statusForm(sid, "sent", phone)
	if status, _, _ := e.postForm(t, path, form.Encode(), sign(authToken, publicURL+e.statusPath(), form)); status != http.StatusForbidden {
		t.Errorf("callback signed without the query: %d, want 403", status)
	}
	for _, st := range []string{"sent", "delivered"} {
		if status, _, body := e.webhook(t, path, statusForm(sid, st, phone), authToken); status != http.StatusOK {
			t.Fatalf("callback %s: %d %s", st, status, body)
		}
	}
	if m := e.message(t, sid); m.ID != ms[0].ID || m.Status != "delivered" {
		t.Errorf("message %s = %+v, want message %d delivered", sid, m, ms[0].ID)
	}
}

// Twilio may call the StatusCallback before its answer to the send
// arrives: the callback attaches the SID, and the answer's "queued" does
// not move the message back.
func TestSendCallbackBeforeAnswer(t *testing.T) {
	e := newEnv(t)
	const phone = "+14155550142"
	id := e.identify(t, "id-142", c360.Identity{Type: "phone", Value: phone})
	e.twilio.before = func(sid string, form url.Values) {
		u, _ := url.Parse(form.Get("StatusCallback"))
		if status, _, body := e.webhook(t, u.RequestURI(), statusForm(sid, "sent", phone), authToken); status != http.StatusOK {
			t.Errorf("callback: %d %s", status, body)
		}
	}
	m, r := e.send(t, e.key, id, "sms", "hi")
	if m == nil {
		t.Fatalf("sendMessage: %s", r.raw)
	}
	if m.Status != "sent" || !strings.HasPrefix(m.ProviderID, "SMfake") {
		t.Errorf("sendMessage = %+v, want status sent from the callback", m)
	}
	if n := count(t, e.db, `SELECT count(*) FROM messages WHERE workspace_id = $1`, e.ws); n != 1 {
		t.Errorf("messages = %d, want 1", n)
	}
}

// A Twilio that does not answer in time is UNAVAILABLE, not a hang.
func TestSenderTimeout(t *testing.T) {
	done := make(chan struct{})
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-done:
		case <-r.Context().Done():
		}
	}))
	defer slow.Close()
	defer close(done)
	s, err := twilio.NewSender(twilio.SenderConfig{PublicURL: publicURL, APIURL: slow.URL, Timeout: 200 * time.Millisecond,
		Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	ws := &c360.Workspace{Slug: "acme", TwilioAccountSID: accountSID, TwilioAuthToken: authToken, TwilioSMSFrom: "+14155550199"}
	start := time.Now()
	_, err = s.SendMessage(context.Background(), ws, c360.OutboundMessage{Channel: "sms", To: "+14155550150", Body: "hi"})
	if c360.ErrorCode(err) != c360.EUNAVAILABLE {
		t.Errorf("err = %v, want %s", err, c360.EUNAVAILABLE)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("took %s", d)
	}
}

func TestNewSenderRefusesBadAPIURL(t *testing.T) {
	for _, u := range []string{"api.twilio.test", "ftp://x", "http://"} {
		if _, err := twilio.NewSender(twilio.SenderConfig{APIURL: u}); err == nil {
			t.Errorf("NewSender(APIURL %q) = nil error", u)
		}
	}
}

// A phone the workspace's identity rules block is never texted: a
// customer whose only phone is blocked gets the "no phone number" refusal,
// and one with another phone is texted there.
func TestSendSkipsBlockedPhone(t *testing.T) {
	e := newEnv(t)
	const blocked, other = "+14155550920", "+14155550921"
	only := e.identify(t, "id-920", c360.Identity{Type: "phone", Value: blocked}, c360.Identity{Type: "email", Value: "b@example.com"})
	if _, err := e.db.UpdateIdentityRules(context.Background(), e.ws, c360.IdentityRules{DefaultLimit: 5, Blocked: []string{blocked}}); err != nil {
		t.Fatal(err)
	}
	if m, r := e.send(t, e.key, only, "sms", "hi"); m != nil || r.code() != c360.EINVALID || !strings.Contains(r.message(), "no phone number") {
		t.Errorf("sendMessage = %+v, %s; want BAD_USER_INPUT, no phone number", m, r.raw)
	}
	if n := len(e.twilio.requests()); n != 0 {
		t.Errorf("Twilio requests = %d, want 0", n)
	}
	// The blocked number is seen last, so it would be the newest phone.
	both := e.identify(t, "id-921", c360.Identity{Type: "phone", Value: other}, c360.Identity{Type: "email", Value: "c@example.com"})
	if _, err := e.db.Pool.Exec(context.Background(), `UPDATE identities SET customer_id = $2, last_seen = now() + interval '1 hour'
		WHERE workspace_id = $1 AND type = 'phone' AND value = $3`, e.ws, both, blocked); err != nil {
		t.Fatal(err)
	}
	if m, r := e.send(t, e.key, both, "sms", "hi"); m == nil {
		t.Fatalf("sendMessage: %s", r.raw)
	}
	if reqs := e.twilio.requests(); len(reqs) != 1 || reqs[0].Form.Get("To") != other {
		t.Errorf("Twilio requests = %+v, want one to %s", reqs, other)
	}
}

// A reply goes to the number the customer writes from on the channel,
// not to whichever of its phones was seen last: on WhatsApp only that
// number's session is open.
func TestSendRepliesToTheNumberTheCustomerWritesFrom(t *testing.T) {
	e := newEnv(t)
	const chatting, other, texting = "+14155550910", "+14155550911", "+14155550912"
	e.webhook(t, e.inboundPath(), inbound("SM910", "whatsapp:"+chatting, "where is my order?"), authToken)
	e.webhook(t, e.inboundPath(), inbound("SM912", texting, "and the invoice?"), authToken)
	c := e.customerByPhone(t, chatting)
	// One customer with three numbers; the one never written from is seen last.
	e.identify(t, "id-911", c360.Identity{Type: "phone", Value: chatting}, c360.Identity{Type: "phone", Value: other},
		c360.Identity{Type: "phone", Value: texting})
	if _, err := e.db.Pool.Exec(context.Background(), `UPDATE identities SET last_seen = now() + interval '1 hour'
		WHERE workspace_id = $1 AND value = $2`, e.ws, other); err != nil {
		t.Fatal(err)
	}
	if m, r := e.send(t, e.key, c.ID, "whatsapp", "It ships today"); m == nil {
		t.Fatalf("sendMessage: %s", r.raw)
	}
	if m, r := e.send(t, e.key, c.ID, "sms", "Invoice attached"); m == nil {
		t.Fatalf("sendMessage: %s", r.raw)
	}
	// Without an inbound message on the channel, the newest phone.
	fresh := e.identify(t, "id-913", c360.Identity{Type: "phone", Value: "+14155550913"})
	if m, r := e.send(t, e.key, fresh, "sms", "Welcome"); m == nil {
		t.Fatalf("sendMessage: %s", r.raw)
	}
	reqs := e.twilio.requests()
	if len(reqs) != 3 {
		t.Fatalf("Twilio requests = %d, want 3", len(reqs))
	}
	for i, want := range []string{"whatsapp:" + chatting, texting, "+14155550913"} {
		if to := reqs[i].Form.Get("To"); to != want {
			t.Errorf("request %d: To = %q, want %q", i, to, want)
		}
	}
}

const sendKeyMutation = `mutation($id: ID!, $channel: String!, $body: String!, $key: String) {
	sendMessage(input: {customerId: $id, channel: $channel, body: $body, messageId: $key}) {
		id channel direction body status providerId errorCode
	}
}`

func (e *env) sendWithKey(t *testing.T, customerID any, channel, body, key string) (*sentMessage, gqlResponse) {
	t.Helper()
	r := e.gql(t, e.key, sendKeyMutation, map[string]any{"id": fmt.Sprint(customerID), "channel": channel, "body": body, "key": key})
	if len(r.Errors) > 0 {
		return nil, r
	}
	var d struct{ SendMessage sentMessage }
	if err := json.Unmarshal(r.Data, &d); err != nil {
		t.Fatalf("decode %s: %v", r.raw, err)
	}
	return &d.SendMessage, r
}

// A retried sendMessage with its messageId texts the customer once: a
// repeat of a completed send returns the stored message, even after the
// customer opted out in reply; one whose outcome is unknown, or that reuses
// the key for another message, is CONFLICT; and nothing is sent again.
func TestSendMessageIDIsAnIdempotencyKey(t *testing.T) {
	e := newEnv(t)
	const phone, other = "+14155550160", "+14155550161"
	id := e.identify(t, "id-160", c360.Identity{Type: "phone", Value: phone})
	otherID := e.identify(t, "id-161", c360.Identity{Type: "phone", Value: other})
	first, r := e.sendWithKey(t, id, "sms", "Your order shipped", "order-7-shipped")
	if first == nil {
		t.Fatalf("sendMessage: %s", r.raw)
	}
	if again, r := e.sendWithKey(t, id, "sms", "Your order shipped", "order-7-shipped"); again == nil || *again != *first {
		t.Errorf("repeat = %+v, %s; want the stored %+v", again, r.raw, first)
	}
	// The customer replies STOP: a repeat still answers with what was sent.
	e.webhook(t, e.inboundPath(), inbound("SM160", phone, "STOP"), authToken)
	if again, r := e.sendWithKey(t, id, "sms", "Your order shipped", "order-7-shipped"); again == nil || again.ID != first.ID {
		t.Errorf("repeat after STOP = %+v, %s; want the stored message", again, r.raw)
	}
	for _, tc := range []struct {
		name     string
		customer int64
		channel  string
		body     string
	}{
		{"another body", id, "sms", "Your order was delivered"},
		{"another customer", otherID, "sms", "Your order shipped"},
		{"another channel", id, "whatsapp", "Your order shipped"},
	} {
		if m, r := e.sendWithKey(t, tc.customer, tc.channel, tc.body, "order-7-shipped"); m != nil || r.code() != c360.ECONFLICT ||
			!strings.Contains(r.message(), "was used for another message") {
			t.Errorf("%s: %+v, %s; want CONFLICT", tc.name, m, r.raw)
		}
	}
	if n := len(e.twilio.requests()); n != 1 {
		t.Errorf("Twilio requests = %d, want 1", n)
	}

	// A send whose outcome is unknown: its repeat is CONFLICT until Twilio
	// reports on it, then returns it.
	e.twilio.fail(500, `{"code": 20500, "message": "Internal Server Error", "status": 500}`)
	if _, r := e.sendWithKey(t, otherID, "sms", "Hello", "hello-161"); r.code() != c360.EUNAVAILABLE {
		t.Fatalf("sendMessage: %s, want UNAVAILABLE", r.raw)
	}
	e.twilio.fail(0, "")
	if m, r := e.sendWithKey(t, otherID, "sms", "Hello", "hello-161"); m != nil || r.code() != c360.ECONFLICT || !strings.Contains(r.message(), "unknown") {
		t.Errorf("repeat of an unconfirmed send = %+v, %s; want CONFLICT", m, r.raw)
	}
	callback, _ := url.Parse(e.twilio.requests()[1].Form.Get("StatusCallback"))
	e.webhook(t, callback.RequestURI(), statusForm("SM00000000000000000000000000000161", "delivered", other), authToken)
	if m, r := e.sendWithKey(t, otherID, "sms", "Hello", "hello-161"); m == nil || m.Status != "delivered" {
		t.Errorf("repeat after the callback = %+v, %s; want the message, delivered", m, r.raw)
	}
	if n := len(e.twilio.requests()); n != 2 {
		t.Errorf("Twilio requests = %d, want 2", n)
	}
	if n := count(t, e.db, `SELECT count(*) FROM messages WHERE workspace_id = $1 AND direction = 'outbound'`, e.ws); n != 2 {
		t.Errorf("outbound messages = %d, want 2", n)
	}
}

// A repeated sendMessage with its messageId sends nothing, so it records no
// second message.send audit entry (docs/security.md): the log holds one
// entry per message sent, naming it.
func TestSendMessageIDRepeatIsNotAudited(t *testing.T) {
	e := newEnv(t)
	id := e.identify(t, "id-163", c360.Identity{Type: "phone", Value: "+14155550163"})
	first, r := e.sendWithKey(t, id, "sms", "Your order shipped", "order-8-shipped")
	if first == nil {
		t.Fatalf("sendMessage: %s", r.raw)
	}
	for i := 0; i < 2; i++ {
		if again, r := e.sendWithKey(t, id, "sms", "Your order shipped", "order-8-shipped"); again == nil || again.ID != first.ID {
			t.Fatalf("repeat = %+v, %s; want the stored %+v", again, r.raw, first)
		}
	}
	if n := len(e.twilio.requests()); n != 1 {
		t.Errorf("Twilio requests = %d, want 1", n)
	}
	ctx := context.Background()
	if err := e.audit.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	sends, _, _, err := e.db.FindAuditEntries(ctx, e.ws, c360.AuditFilter{Action: c360.AuditMessageSend, First: 10})
	if err != nil {
		t.Fatal(err)
	}
	if len(sends) != 1 || fmt.Sprint(sends[0].Detail["messageId"]) != first.ID {
		for _, s := range sends {
			t.Logf("entry: %+v", s)
		}
		t.Fatalf("message.send entries = %d, want 1 naming message %s", len(sends), first.ID)
	}
}

// Concurrent calls with one messageId send once: the others find the
// first in flight (CONFLICT) or sent.
func TestSendMessageIDConcurrentRepeats(t *testing.T) {
	e := newEnv(t)
	id := e.identify(t, "id-162", c360.Identity{Type: "phone", Value: "+14155550162"})
	const n = 8
	var wg sync.WaitGroup
	codes := make([]string, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, r := e.sendWithKey(t, id, "sms", "hi", "concurrent-162")
			codes[i] = r.code()
		}()
	}
	wg.Wait()
	if got := len(e.twilio.requests()); got != 1 {
		t.Errorf("Twilio requests = %d, want 1", got)
	}
	for i, c := range codes {
		if c != "" && c != c360.ECONFLICT {
			t.Errorf("call %d: code %s, want success or CONFLICT", i, c)
		}
	}
}

// A messageId is bounded and must be storable.
func TestSendMessageIDRefusals(t *testing.T) {
	e := newEnv(t)
	id := e.identify(t, "id-163", c360.Identity{Type: "phone", Value: "+14155550163"})
	for key, contains := range map[string]string{
		strings.Repeat("k", 257): "at most 256",
		"a\x00b":                 "NUL",
	} {
		if m, r := e.sendWithKey(t, id, "sms", "hi", key); m != nil || r.code() != c360.EINVALID || !strings.Contains(r.message(), contains) {
			t.Errorf("messageId %.20q: %+v, %s; want BAD_USER_INPUT containing %q", key, m, r.raw, contains)
		}
	}
	if m, r := e.sendWithKey(t, id, "sms", "hi", strings.Repeat("k", 256)); m == nil {
		t.Errorf("a 256-byte messageId: %s", r.raw)
	}
	if n := len(e.twilio.requests()); n != 1 {
		t.Errorf("Twilio requests = %d, want 1", n)
	}
}

// Twilio's 21610 (the recipient replied STOP to the sender) is FORBIDDEN,
// and the opt-out is recorded, so the next send is refused before Twilio.
func TestSendToUnsubscribedRecipientRecordsOptOut(t *testing.T) {
	e := newEnv(t)
	const phone = "+14155550170"
	id := e.identify(t, "id-170", c360.Identity{Type: "phone", Value: phone})
	e.twilio.fail(400, `{"code": 21610, "message": "Attempt to send to unsubscribed recipient", "more_info": "https://www.twilio.com/docs/errors/21610", "status": 400}`)
	if m, r := e.send(t, e.key, id, "sms", "hi"); m != nil || r.code() != c360.EFORBIDDEN || !strings.Contains(r.message(), "21610") {
		t.Fatalf("sendMessage = %+v, %s; want FORBIDDEN naming 21610", m, r.raw)
	}
	if c := e.consent(t, id, "sms"); c == nil || c.Status != c360.ConsentOptedOut || c.Source != "twilio" {
		t.Errorf("sms consent = %+v, want opted_out from twilio", c)
	}
	if c := e.consent(t, id, "whatsapp"); c != nil {
		t.Errorf("whatsapp consent = %+v, want none: the opt-out is the channel's", c)
	}
	if ms := e.messages(t, id, "sms"); len(ms) != 1 || ms[0].Status != "failed" || ms[0].ErrorCode != "21610" {
		t.Errorf("messages = %+v, want one failed with 21610", ms)
	}
	e.twilio.fail(0, "")
	if _, r := e.send(t, e.key, id, "sms", "hi again"); r.code() != c360.EFORBIDDEN || !strings.Contains(r.message(), "opted out") {
		t.Errorf("next send: %s, want FORBIDDEN, opted out", r.raw)
	}
	if n := len(e.twilio.requests()); n != 1 {
		t.Errorf("Twilio requests = %d, want 1", n)
	}
}

// A STOP that commits after sendMessage read the customer's consent
// (FindOutreach) and before it recorded the message is seen: the record
// reads the consent again under the customer's lock, and refuses as the
// first check does. Nothing is recorded or sent. Before, the message was
// recorded and sent to a customer who had just opted out.
func TestSendRefusedWhenAStopCommitsDuringTheSend(t *testing.T) {
	var stop *stopAfterOutreach
	e := newEnvWith(t, func(ms c360.MessagingService) c360.MessagingService {
		stop = &stopAfterOutreach{MessagingService: ms}
		return stop
	})
	const phone = "+14155550306"
	if st, _, _ := e.webhook(t, e.inboundPath(), inbound("SM306a", "whatsapp:"+phone, "hi"), authToken); st != http.StatusOK {
		t.Fatal(st)
	}
	c := e.customerByPhone(t, phone)
	stop.hook = func() {
		if st, _, b := e.webhook(t, e.inboundPath(), inbound("SM306b", "whatsapp:"+phone, "STOP"), authToken); st != http.StatusOK {
			t.Errorf("STOP: %d %s", st, b)
		}
	}
	m, r := e.sendWithKey(t, c.ID, "whatsapp", "Promo!", "promo-306")
	if k := e.consent(t, c.ID, "whatsapp"); k == nil || k.Status != c360.ConsentOptedOut {
		t.Fatalf("consent = %+v, want the STOP's opt-out", k)
	}
	if m != nil || r.code() != c360.EFORBIDDEN || r.message() != "customer opted out of whatsapp" {
		t.Errorf("sendMessage = %+v, %s; want FORBIDDEN, customer opted out of whatsapp", m, r.raw)
	}
	if n := len(e.twilio.requests()); n != 0 {
		t.Errorf("Twilio requests = %d, want 0", n)
	}
	if ms := e.messages(t, c.ID, "whatsapp"); len(ms) != 2 || ms[0].Direction != "inbound" || ms[1].Direction != "inbound" {
		t.Errorf("whatsapp messages = %+v, want the two inbound ones alone", ms)
	}
	// The key was not claimed: after a START, it sends.
	stop.hook = nil
	if st, _, _ := e.webhook(t, e.inboundPath(), inbound("SM306c", "whatsapp:"+phone, "START"), authToken); st != http.StatusOK {
		t.Fatal(st)
	}
	if m, r := e.sendWithKey(t, c.ID, "whatsapp", "Promo!", "promo-306"); m == nil {
		t.Errorf("sendMessage after START: %s", r.raw)
	}
}

// stopAfterOutreach runs hook, when set, after FindOutreach has read the
// customer's consent: the customer's STOP arrives and commits then.
type stopAfterOutreach struct {
	c360.MessagingService
	hook func()
}

func (s *stopAfterOutreach) FindOutreach(ctx context.Context, ws, id int64, ch string) (*c360.Outreach, error) {
	o, err := s.MessagingService.FindOutreach(ctx, ws, id, ch)
	if s.hook != nil {
		s.hook()
	}
	return o, err
}

// An opt-out learnt from Twilio's 21610 is a consent decision like a STOP:
// a split rebuilds it with the number it was about. It was stored without
// an event, so every later split of the customer failed ("cannot scan
// NULL"), and a split that had tolerated it would have dropped the
// opt-out, and the next send gone to Twilio again.
func TestUnsubscribedOptOutSurvivesSplit(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	const phone, phone2 = "+14155550171", "+14155550173"
	e.twilio.fail(400, `{"code": 21610, "message": "Attempt to send to unsubscribed recipient", "status": 400}`)

	// The email is split off: the opt-out stays with the phone.
	id := e.identify(t, "id-171", c360.Identity{Type: "phone", Value: phone}, c360.Identity{Type: "email", Value: "x171@example.com"})
	if _, r := e.send(t, e.key, id, "sms", "hi"); r.code() != c360.EFORBIDDEN {
		t.Fatalf("sendMessage: %s", r.raw)
	}
	res, err := e.db.SplitIdentity(ctx, e.ws, id, c360.Identity{Type: "email", Value: "x171@example.com"}, "agent", "two people")
	if err != nil {
		t.Fatalf("split: %v", err)
	}
	if c := e.consent(t, id, "sms"); c == nil || c.Status != c360.ConsentOptedOut || c.Source != "twilio" {
		t.Errorf("sms consent after the split = %+v, want opted_out from twilio", c)
	}
	if c := e.consent(t, res.Split.ID, "sms"); c != nil {
		t.Errorf("the split-off email's customer has sms consent %+v, want none", c)
	}

	// The phone is split off: the opt-out goes with it.
	id2 := e.identify(t, "id-173", c360.Identity{Type: "phone", Value: phone2}, c360.Identity{Type: "email", Value: "x173@example.com"})
	if _, r := e.send(t, e.key, id2, "sms", "hi"); r.code() != c360.EFORBIDDEN {
		t.Fatalf("sendMessage: %s", r.raw)
	}
	res, err = e.db.SplitIdentity(ctx, e.ws, id2, c360.Identity{Type: "phone", Value: phone2}, "agent", "two people")
	if err != nil {
		t.Fatalf("split: %v", err)
	}
	if c := e.consent(t, res.Split.ID, "sms"); c == nil || c.Status != c360.ConsentOptedOut {
		t.Errorf("the split-off phone's sms consent = %+v, want opted_out", c)
	}
	if c := e.consent(t, id2, "sms"); c != nil {
		t.Errorf("the email's customer has sms consent %+v, want none", c)
	}

	e.twilio.fail(0, "")
	if _, r := e.send(t, e.key, id, "sms", "hi again"); r.code() != c360.EFORBIDDEN {
		t.Errorf("send after the split: %s, want FORBIDDEN", r.raw)
	}
	if _, r := e.send(t, e.key, res.Split.ID, "sms", "hi again"); r.code() != c360.EFORBIDDEN {
		t.Errorf("send to the split-off phone: %s, want FORBIDDEN", r.raw)
	}
	if n := len(e.twilio.requests()); n != 2 {
		t.Errorf("Twilio requests = %d, want the 2 refused", n)
	}
}

// A send Twilio refused does not spend its messageId as a success. A
// refusal of the moment (429: rate limited, "try again") frees the key, so
// the retry with it sends; a refusal of the message itself (an invalid
// number, an unsubscribed recipient) is answered again, with its code and
// naming the message, and nothing is sent. Before, every refused send's
// repeat was a success (the failed message, no error) that sent nothing.
func TestSendMessageIDAfterARefusal(t *testing.T) {
	e := newEnv(t)
	id := e.identify(t, "id-172", c360.Identity{Type: "phone", Value: "+14155550172"})
	e.twilio.fail(429, `{"code": 20429, "message": "Too Many Requests", "status": 429}`)
	if _, r := e.sendWithKey(t, id, "sms", "Your code is 1234", "otp-172"); r.code() != c360.ERATELIMITED {
		t.Fatalf("first: %s, want RATE_LIMITED", r.raw)
	}
	e.twilio.fail(0, "")
	m, r := e.sendWithKey(t, id, "sms", "Your code is 1234", "otp-172")
	if m == nil || m.Status != "queued" || m.ProviderID == "" {
		t.Fatalf("retry after RATE_LIMITED = %+v, %s; want the message sent, queued", m, r.raw)
	}
	if again, r := e.sendWithKey(t, id, "sms", "Your code is 1234", "otp-172"); again == nil || again.ID != m.ID {
		t.Errorf("repeat of the sent retry = %+v, %s; want message %s", again, r.raw, m.ID)
	}
	if n := len(e.twilio.requests()); n != 2 {
		t.Errorf("Twilio requests = %d, want 2 (the refused send, the retry)", n)
	}
	if ms := e.messages(t, id, "sms"); len(ms) != 2 || ms[0].Status != "queued" || ms[1].Status != "failed" || ms[1].ErrorCode != "20429" {
		t.Errorf("messages = %+v, want the retry queued and the refused send failed (20429)", ms)
	}

	for _, tc := range []struct {
		name, phone, answer, code, contains string
	}{
		{"invalid number", "+14155550174", `{"code": 21211, "message": "The 'To' number is not a valid phone number.", "status": 400}`, c360.EINVALID, "Twilio error 21211"},
		{"unsubscribed", "+14155550175", `{"code": 21610, "message": "Attempt to send to unsubscribed recipient", "status": 400}`, c360.EFORBIDDEN, "unsubscribed"},
	} {
		cid := e.identify(t, "id-"+tc.phone, c360.Identity{Type: "phone", Value: tc.phone})
		e.twilio.fail(400, tc.answer)
		if _, r := e.sendWithKey(t, cid, "sms", "hi", "k-"+tc.phone); r.code() != tc.code {
			t.Fatalf("%s: first: %s, want %s", tc.name, r.raw, tc.code)
		}
		e.twilio.fail(0, "")
		before := len(e.twilio.requests())
		ms := e.messages(t, cid, "sms")
		if len(ms) != 1 {
			t.Fatalf("%s: messages = %+v, want the refused one", tc.name, ms)
		}
		if m, r := e.sendWithKey(t, cid, "sms", "hi", "k-"+tc.phone); m != nil || r.code() != tc.code ||
			!strings.Contains(r.message(), tc.contains) || !strings.Contains(r.message(), "message "+fmt.Sprint(ms[0].ID)) {
			t.Errorf("%s: repeat = %+v, %s; want %s naming message %d and %q", tc.name, m, r.raw, tc.code, ms[0].ID, tc.contains)
		}
		if n := len(e.twilio.requests()); n != before {
			t.Errorf("%s: the repeat asked Twilio", tc.name)
		}
	}
}

// Twilio answers 400 to refusals that last only a moment too: a full
// sender queue (21611) or too many requests (20429) is RATE_LIMITED, and a
// WhatsApp sender Twilio does not know (63007) is UNAVAILABLE naming the
// workspace's setup; none uses up its messageId, so a retry with it, once
// the queue drained or the sender was fixed, sends the message.
func TestSendMessageIDAfterAQueueFullRefusal(t *testing.T) {
	e := newEnv(t)
	for i, tc := range []struct {
		twilioCode, code, contains string
	}{
		{"21611", c360.ERATELIMITED, "This 'From' number has exceeded the maximum number of queued messages"},
		{"20429", c360.ERATELIMITED, "rate limiting"},
		{"63007", c360.EUNAVAILABLE, "the workspace's Twilio setup, not the message: its WhatsApp sender"},
	} {
		t.Run(tc.twilioCode, func(t *testing.T) {
			phone := fmt.Sprintf("+141555502%02d", i)
			id := e.identify(t, "id-"+phone, c360.Identity{Type: "phone", Value: phone})
			key := "otp-" + tc.twilioCode
			before := len(e.twilio.requests())
			e.twilio.fail(400, `{"code": `+tc.twilioCode+`, "message": "This 'From' number has exceeded the maximum number of queued messages", "status": 400}`)
			if _, r := e.sendWithKey(t, id, "sms", "Your code is 1234", key); r.code() != tc.code || !strings.Contains(r.message(), tc.contains) ||
				!strings.Contains(r.message(), "Twilio error "+tc.twilioCode) {
				t.Fatalf("first: %s, want %s containing %q", r.raw, tc.code, tc.contains)
			}
			e.twilio.fail(0, "")
			m, r := e.sendWithKey(t, id, "sms", "Your code is 1234", key)
			if m == nil || m.Status != "queued" || m.ProviderID == "" {
				t.Errorf("retry after the refusal = %+v, %s; want the message sent", m, r.raw)
			}
			if n := len(e.twilio.requests()) - before; n != 2 {
				t.Errorf("Twilio requests = %d, want 2", n)
			}
			if ms := e.messages(t, id, "sms"); len(ms) != 2 || ms[0].Status != "queued" || ms[1].Status != "failed" || ms[1].ErrorCode != tc.twilioCode {
				t.Errorf("messages = %+v, want the retry queued and the refused send failed (%s)", ms, tc.twilioCode)
			}
		})
	}
}

// Twilio refuses the sender for this recipient with the codes it also
// answers for a sender that is not the account's (21606: "not a valid
// message-capable Twilio phone number for this destination/account", a
// short code to another country; 21659; 21703, no sender of the Messaging
// Service for this destination): the same message to this recipient would
// be refused again, so it is BAD_USER_INPUT with Twilio's text and what it
// may mean, not UNAVAILABLE blaming the setup, and its messageId is spent:
// a repeat answers the refusal again, naming the message, without asking
// Twilio. Before, each was UNAVAILABLE, "an admin must correct the
// workspace's Twilio settings", and every repeat asked Twilio again.
func TestSendRefusedForThisRecipientSpendsItsMessageID(t *testing.T) {
	e := newEnv(t)
	for i, tc := range []struct {
		twilioCode, message, fault string
	}{
		{"21606", "The 'From' phone number provided is not a valid message-capable Twilio phone number for this destination/account",
			"the workspace's sender cannot send to this recipient"},
		{"21659", "'From' is not a Twilio phone number or Short Code country mismatch",
			"the workspace's sender cannot send to this recipient"},
		{"21703", "The Messaging Service does not have a phone number available to send a message to this phone number.",
			"no sender of the workspace's Messaging Service can send to this recipient"},
	} {
		t.Run(tc.twilioCode, func(t *testing.T) {
			phone := fmt.Sprintf("+4420794609%02d", i)
			id := e.identify(t, "id-"+phone, c360.Identity{Type: "phone", Value: phone})
			key := "dest-" + tc.twilioCode
			before := len(e.twilio.requests())
			e.twilio.fail(400, fmt.Sprintf(`{"code": %s, "message": %q, "status": 400}`, tc.twilioCode, tc.message))
			m, r := e.sendWithKey(t, id, "sms", "Your code is 1234", key)
			if m != nil || r.code() != c360.EINVALID || !strings.Contains(r.message(), "Twilio refused the message: "+tc.message+" (Twilio error "+tc.twilioCode+"): "+tc.fault) ||
				strings.Contains(r.message(), "not the message") {
				t.Fatalf("first: %+v, %s; want BAD_USER_INPUT with Twilio's text and %q", m, r.raw, tc.fault)
			}
			e.twilio.fail(0, "")
			ms := e.messages(t, id, "sms")
			if len(ms) != 1 || ms[0].Status != "failed" || ms[0].ErrorCode != tc.twilioCode {
				t.Fatalf("messages = %+v, want the refused one, failed (%s)", ms, tc.twilioCode)
			}
			if m, r := e.sendWithKey(t, id, "sms", "Your code is 1234", key); m != nil || r.code() != c360.EINVALID ||
				!strings.Contains(r.message(), "Twilio error "+tc.twilioCode) || !strings.Contains(r.message(), "message "+fmt.Sprint(ms[0].ID)) {
				t.Errorf("repeat = %+v, %s; want the refusal again, naming message %d", m, r.raw, ms[0].ID)
			}
			if n := len(e.twilio.requests()) - before; n != 1 {
				t.Errorf("Twilio requests = %d, want 1: the repeat does not ask Twilio", n)
			}
		})
	}
}

// A refusal of the workspace's Twilio setup (its credentials, its account,
// its sender or Messaging Service) is not the message's fault: it is
// UNAVAILABLE, saying that the setup is at fault, and does not use up the
// messageId, so once an admin fixes the setup the retry with the same
// messageId sends. So is twilio-go's own refusal of a malformed auth
// token, made before any request. Before, each was BAD_USER_INPUT
// ("Twilio refused the message"), and the retry was refused for good:
// "correct it, and send it with a new messageId".
func TestSendRefusedForTheWorkspaceSetupKeepsItsMessageID(t *testing.T) {
	e := newEnv(t)
	for i, tc := range []struct {
		status     int
		twilioCode string
		message    string
		fault      string
	}{
		{401, "20003", "Authenticate", "its credentials"},
		{404, "20404", "The requested resource was not found", "its Account SID"},
		{400, "21212", "The 'From' number +1415555019 is not a valid phone number, shortcode, or alphanumeric sender ID.", "its sender"},
		{400, "21603", "A 'From' or 'MessagingServiceSid' phone number is required.", "its sender"},
		{400, "21701", "The Messaging Service Sid MG00000000000000000000000000000001 is invalid.", "its Messaging Service"},
		{400, "21704", "The Messaging Service contains no phone numbers", "its Messaging Service"},
	} {
		t.Run(tc.twilioCode, func(t *testing.T) {
			phone := fmt.Sprintf("+141555503%02d", i)
			id := e.identify(t, "id-"+phone, c360.Identity{Type: "phone", Value: phone})
			key := "setup-" + tc.twilioCode
			before := len(e.twilio.requests())
			e.twilio.fail(tc.status, fmt.Sprintf(`{"code": %s, "message": %q, "status": %d}`, tc.twilioCode, tc.message, tc.status))
			if m, r := e.sendWithKey(t, id, "sms", "Your code is 1234", key); m != nil || r.code() != c360.EUNAVAILABLE ||
				!strings.Contains(r.message(), "the message was not sent: Twilio refused the workspace's Twilio setup, not the message: "+tc.fault) ||
				!strings.Contains(r.message(), "Twilio error "+tc.twilioCode) || strings.Contains(r.message(), "refused the message") {
				t.Fatalf("first: %+v, %s; want UNAVAILABLE naming the workspace's setup (%s)", m, r.raw, tc.fault)
			}
			e.twilio.fail(0, "") // an admin fixes the setup
			m, r := e.sendWithKey(t, id, "sms", "Your code is 1234", key)
			if m == nil || m.Status != "queued" || m.ProviderID == "" {
				t.Errorf("retry with the messageId after the setup was fixed = %+v, %s; want the message sent", m, r.raw)
			}
			if n := len(e.twilio.requests()) - before; n != 2 {
				t.Errorf("Twilio requests = %d, want 2", n)
			}
			if ms := e.messages(t, id, "sms"); len(ms) != 2 || ms[0].Status != "queued" || ms[1].Status != "failed" || ms[1].ErrorCode != tc.twilioCode {
				t.Errorf("messages = %+v, want the retry queued and the refused send failed (%s)", ms, tc.twilioCode)
			}
		})
	}

	t.Run("malformed auth token", func(t *testing.T) {
		ctx := context.Background()
		id := e.identify(t, "id-token", c360.Identity{Type: "phone", Value: "+14155550390"})
		before := len(e.twilio.requests())
		if _, err := e.db.UpdateWorkspace(ctx, e.slug, c360.WorkspaceUpdate{TwilioAuthToken: ptr(authToken + " ")}); err != nil {
			t.Fatal(err)
		}
		if m, r := e.sendWithKey(t, id, "sms", "hi", "setup-token"); m != nil || r.code() != c360.EUNAVAILABLE ||
			!strings.Contains(r.message(), "Twilio setup, not the message: its auth token") || strings.Contains(r.message(), authToken) {
			t.Fatalf("send with a malformed auth token = %+v, %s; want UNAVAILABLE naming the auth token", m, r.raw)
		}
		if n := len(e.twilio.requests()) - before; n != 0 {
			t.Errorf("Twilio requests = %d, want 0: twilio-go refuses the token before any request", n)
		}
		if _, err := e.db.UpdateWorkspace(ctx, e.slug, c360.WorkspaceUpdate{TwilioAuthToken: ptr(authToken)}); err != nil {
			t.Fatal(err)
		}
		if m, r := e.sendWithKey(t, id, "sms", "hi", "setup-token"); m == nil || m.Status != "queued" {
			t.Errorf("retry with the messageId after the token was fixed = %+v, %s; want the message sent", m, r.raw)
		}
	})
}

// A message refused for a moment before such refusals freed their key
// (failed with 21611, its key still held) does not hold its messageId
// forever: a repeat frees the key and sends the message; the refused one
// stays failed. A lasting refusal stored the same way still answers the
// refusal again.
func TestSendMessageIDHeldByAnEarlierMomentaryRefusal(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	const phone = "+14155550193"
	id := e.identify(t, "id-193", c360.Identity{Type: "phone", Value: phone})
	refusedLongAgo := func(key, code string) *c360.Message {
		t.Helper()
		m, _, err := e.db.RecordOutbound(ctx, e.ws, c360.OutboundRecord{CustomerID: id, Channel: "sms", To: phone,
			Body: "Your code is 1234", SentBy: "key a90000000001", Source: "twilio", Key: key})
		if err != nil {
			t.Fatal(err)
		}
		// Settled as a refusal was before: failed, the key kept.
		if _, err := e.db.SettleOutbound(ctx, e.ws, m.ID, c360.OutboundOutcome{Status: c360.MessageFailed, ErrorCode: code, Source: "twilio"}); err != nil {
			t.Fatal(err)
		}
		return m
	}
	old := refusedLongAgo("otp-193", "21611")
	m, r := e.sendWithKey(t, id, "sms", "Your code is 1234", "otp-193")
	if m == nil || m.Status != "queued" || m.ID == fmt.Sprint(old.ID) {
		t.Fatalf("repeat of a send refused for a moment = %+v, %s; want the message sent anew", m, r.raw)
	}
	if again, r := e.sendWithKey(t, id, "sms", "Your code is 1234", "otp-193"); again == nil || again.ID != m.ID {
		t.Errorf("repeat of the sent retry = %+v, %s; want message %s", again, r.raw, m.ID)
	}
	if n := len(e.twilio.requests()); n != 1 {
		t.Errorf("Twilio requests = %d, want 1", n)
	}
	if ms := e.messages(t, id, "sms"); len(ms) != 2 || ms[1].ID != old.ID || ms[1].Status != "failed" || ms[1].ErrorCode != "21611" {
		t.Errorf("messages = %+v, want the refused one kept, failed (21611)", ms)
	}

	lasting := refusedLongAgo("otp-194", "21211")
	if m, r := e.sendWithKey(t, id, "sms", "Your code is 1234", "otp-194"); m != nil || r.code() != c360.EINVALID ||
		!strings.Contains(r.message(), fmt.Sprintf("message %d", lasting.ID)) {
		t.Errorf("repeat of a send refused for good = %+v, %s; want BAD_USER_INPUT naming message %d", m, r.raw, lasting.ID)
	}
	if n := len(e.twilio.requests()); n != 1 {
		t.Errorf("Twilio requests = %d, want still 1", n)
	}
}

// A message left pending by a send that never recorded its outcome (its
// server stopped mid-send) is not "still being sent" forever: once
// c360.StalePending has passed, a repeat of its messageId is CONFLICT
// saying its outcome is unknown, and the sweep moves it to unconfirmed, a
// forward move a later status callback still overrides. A message pending
// for less is left alone.
func TestStalePendingMessageIsUnconfirmed(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	const phone = "+14155550176"
	id := e.identify(t, "id-176", c360.Identity{Type: "phone", Value: phone})
	record := func(key string, age time.Duration) *c360.Message {
		t.Helper()
		now := e.db.Now
		e.db.Now = func() time.Time { return now().Add(-age) }
		defer func() { e.db.Now = now }()
		m, _, err := e.db.RecordOutbound(ctx, e.ws, c360.OutboundRecord{CustomerID: id, Channel: "sms", To: phone,
			Body: "Your order shipped", SentBy: "key a90000000001", Source: "twilio", Key: key})
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	stale := record("stale-176", c360.StalePending+time.Minute)
	fresh := record("fresh-176", 0)

	if m, r := e.sendWithKey(t, id, "sms", "Your order shipped", "stale-176"); m != nil || r.code() != c360.ECONFLICT ||
		!strings.Contains(r.message(), "unknown") || !strings.Contains(r.message(), "new messageId") {
		t.Errorf("repeat of a stale pending send = %+v, %s; want CONFLICT, outcome unknown", m, r.raw)
	}
	if m, r := e.sendWithKey(t, id, "sms", "Your order shipped", "fresh-176"); m != nil || r.code() != c360.ECONFLICT ||
		!strings.Contains(r.message(), "still being sent") {
		t.Errorf("repeat of a pending send = %+v, %s; want CONFLICT, still being sent", m, r.raw)
	}

	n, err := e.db.SweepPendingMessages(ctx, e.db.Now().Add(-c360.StalePending))
	if err != nil || n < 1 { // the binary's other tests may leave some too
		t.Fatalf("sweep = %d, %v; want the stale message moved", n, err)
	}
	status := func(m *c360.Message) string {
		t.Helper()
		var s string
		if err := e.db.Pool.QueryRow(ctx, `SELECT status FROM messages WHERE id = $1`, m.ID).Scan(&s); err != nil {
			t.Fatal(err)
		}
		return s
	}
	if s := status(stale); s != c360.MessageUnconfirmed {
		t.Errorf("stale message after the sweep: %s, want unconfirmed", s)
	}
	if s := status(fresh); s != c360.MessagePending {
		t.Errorf("fresh message after the sweep: %s, want pending", s)
	}
	// Twilio's callback naming the message still moves it on.
	e.webhook(t, twilio.StatusCallbackURL("", e.slug, stale.ID), statusForm("SM00000000000000000000000000000176", "delivered", phone), authToken)
	if s := status(stale); s != "delivered" {
		t.Errorf("stale message after its callback: %s, want delivered", s)
	}
	if m, r := e.sendWithKey(t, id, "sms", "Your order shipped", "stale-176"); m == nil || m.Status != "delivered" {
		t.Errorf("repeat after the callback = %+v, %s; want the message, delivered", m, r.raw)
	}
	if n := len(e.twilio.requests()); n != 0 {
		t.Errorf("Twilio requests = %d, want none", n)
	}
}
