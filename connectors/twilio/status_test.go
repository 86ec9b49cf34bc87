package twilio_test

import (
	"context"
	"net/http"
	"strings"
	"testing"

	"github.com/c360dev/c360"
)

// outbound records an outbound message as sendMessage does, through ingest.
func (e *env) outbound(t *testing.T, sid, phone, channel, status string) {
	t.Helper()
	_, err := e.db.Ingest(context.Background(), e.ws, []*c360.Event{{
		Type: c360.EventMessage, Source: "twilio", DedupeKey: sid,
		Identities: []c360.Identity{{Type: "phone", Value: phone}},
		Message: &c360.MessageInput{Channel: channel, Direction: c360.DirectionOutbound, Body: "your order shipped",
			ProviderID: sid, Status: status},
	}})
	if err != nil {
		t.Fatal(err)
	}
}

func (e *env) message(t *testing.T, sid string) *c360.Message {
	t.Helper()
	m, err := e.db.FindMessageByProviderID(context.Background(), e.ws, sid)
	if err != nil {
		t.Fatalf("message %s: %v", sid, err)
	}
	return m
}

func (e *env) status(t *testing.T, f map[string][]string) {
	t.Helper()
	if status, _, body := e.webhook(t, e.statusPath(), f, authToken); status != http.StatusOK {
		t.Fatalf("status callback %v: %d (%s), want 200", f["MessageStatus"], status, body)
	}
}

func TestStatusMovesForwardOnly(t *testing.T) {
	e := newEnv(t)
	const sid, phone = "SM00000000000000000000000000000100", "+14155550110"
	e.outbound(t, sid, phone, "sms", "queued")
	for _, step := range []struct{ status, want string }{
		{"sending", "sending"},
		{"sent", "sent"},
		{"delivered", "delivered"},
		{"sent", "delivered"}, // late: never undoes delivered
		{"queued", "delivered"},
		{"read", "read"},
		{"delivered", "read"},
	} {
		e.status(t, statusForm(sid, step.status, phone))
		if got := e.message(t, sid).Status; got != step.want {
			t.Errorf("after %s: status = %s, want %s", step.status, got, step.want)
		}
	}
	// Each distinct status is one event; a repeat is stored once.
	e.status(t, statusForm(sid, "read", phone))
	if n := count(t, e.db, `SELECT count(*) FROM events WHERE workspace_id = $1 AND type = 'message_status'`, e.ws); n != 5 {
		t.Errorf("status events = %d, want 5 (sending, sent, delivered, queued, read)", n)
	}
}

func TestStatusFailedIsFinalAndKeepsErrorCode(t *testing.T) {
	e := newEnv(t)
	const sid, phone = "SM00000000000000000000000000000101", "+14155550111"
	e.outbound(t, sid, phone, "sms", "queued")
	e.status(t, statusForm(sid, "sent", phone))
	e.status(t, statusForm(sid, "undelivered", phone, "ErrorCode", "30003"))
	e.status(t, statusForm(sid, "delivered", phone))
	e.status(t, statusForm(sid, "failed", phone, "ErrorCode", "30005"))
	m := e.message(t, sid)
	if m.Status != "undelivered" || m.ErrorCode != "30003" {
		t.Errorf("message = %s/%s, want undelivered/30003", m.Status, m.ErrorCode)
	}
	// The code reaches the API.
	c := e.customerByPhone(t, phone)
	r := e.gql(t, e.key, `query($id: ID!) { customer(id: $id) { conversations { edges { node {
		messages { edges { node { status errorCode providerId } } } } } } } }`, map[string]any{"id": c.ID})
	if len(r.Errors) > 0 || !strings.Contains(r.raw, `"status":"undelivered","errorCode":"30003"`) {
		t.Errorf("GraphQL = %s", r.raw)
	}
}

func TestStatusUnknownSID(t *testing.T) {
	e := newEnv(t)
	const sid, phone = "SM00000000000000000000000000000102", "+14155550112"
	e.status(t, statusForm(sid, "delivered", phone))
	if n := count(t, e.db, `SELECT count(*) FROM messages WHERE workspace_id = $1`, e.ws); n != 0 {
		t.Errorf("messages = %d, want 0", n)
	}
	// The callback beat sendMessage's record: the message starts from it.
	e.outbound(t, sid, phone, "sms", "queued")
	if got := e.message(t, sid).Status; got != "delivered" {
		t.Errorf("status of a message recorded after its callback = %s, want delivered", got)
	}
}

func TestStatusRefusedBeforeAnyWrite(t *testing.T) {
	e := newEnv(t)
	const sid, phone = "SM00000000000000000000000000000103", "+14155550113"
	e.outbound(t, sid, phone, "sms", "sent")
	before := count(t, e.db, `SELECT count(*) FROM events WHERE workspace_id = $1`, e.ws)
	f := statusForm(sid, "failed", phone, "ErrorCode", "30007")
	if status, _, _ := e.webhook(t, e.statusPath(), f, "wrong-token-0000000000000000000"); status != http.StatusForbidden {
		t.Errorf("forged: status = %d, want 403", status)
	}
	if status, _, _ := e.webhook(t, e.statusPath(), f, ""); status != http.StatusForbidden {
		t.Errorf("unsigned: status = %d, want 403", status)
	}
	if status, _, _ := e.webhook(t, "/webhooks/twilio/nope/status", f, authToken); status != http.StatusNotFound {
		t.Errorf("unknown workspace: status = %d, want 404", status)
	}
	if got := count(t, e.db, `SELECT count(*) FROM events WHERE workspace_id = $1`, e.ws); got != before {
		t.Errorf("events = %d, want %d", got, before)
	}
	if got := e.message(t, sid).Status; got != "sent" {
		t.Errorf("status = %s, want sent", got)
	}
}

// A status needs only its MessageSid: a To that is no phone number c360
// can read does not get the callback refused (Twilio does not retry a
// 400, so the status would be lost), and the status is applied.
func TestStatusToUnparsableNumberIsApplied(t *testing.T) {
	e := newEnv(t)
	const sid, phone = "SM00000000000000000000000000000104", "+14155550114"
	e.outbound(t, sid, phone, "whatsapp", "accepted")
	for _, step := range []struct{ status, to string }{
		// No number at all, another channel's address, one too long to be
		// an address: the parser leaves them out, as it does an inbound To.
		{"queued", ""},
		{"sending", "rcs:+14155550114"},
		{"sent", "+1" + strings.Repeat("4", 70)},
		// Numbers ingest cannot normalize: it drops them.
		{"delivered", "+1 234"},
		{"read", "whatsapp:+99912345"},
	} {
		e.status(t, statusForm(sid, step.status, step.to))
		if got := e.message(t, sid).Status; got != step.status {
			t.Errorf("after %s to %s: status = %s, want %s", step.status, step.to, got, step.status)
		}
	}
	if n := count(t, e.db, `SELECT count(*) FROM customers WHERE workspace_id = $1`, e.ws); n != 1 {
		t.Errorf("customers = %d, want 1", n)
	}
}
