package whatsapp_test

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/c360dev/c360"
	"github.com/c360dev/c360/connectors/whatsapp"
)

const bsuid = "US.13491208655302741918"

func (e *env) customerByUserID(t *testing.T, userID string) *c360.Customer {
	t.Helper()
	c, err := e.db.FindCustomerByIdentity(context.Background(), e.ws, c360.Identity{Type: whatsapp.UserIDType, Value: userID})
	if err != nil {
		t.Fatalf("customer %s: %v", userID, err)
	}
	return c
}

func (e *env) deadLetters(t *testing.T) []*c360.DeadLetter {
	t.Helper()
	p, err := e.db.DeadLetters(context.Background(), e.ws, c360.DeadLetterFilter{PageArgs: c360.PageArgs{First: 10}})
	if err != nil {
		t.Fatal(err)
	}
	return p.Items
}

// A user who adopted a username writes with no number: Meta leaves out
// from and wa_id and names the sender by BSUID only. The message is stored
// on the customer of that BSUID (a whatsapp_user_id identity); once a
// message carries both the number and the BSUID, the customer known by
// the number and the one known by the BSUID are one.
func TestInboundFromUserWithoutNumber(t *testing.T) {
	e := newEnv(t)
	e.deliver(t, notification(`{"messaging_product":"whatsapp","metadata":{"display_phone_number":"15550783881","phone_number_id":"106540352242922"},
		"contacts":[{"profile":{"name":"Sheena","username":"@sheena"},"user_id":"`+bsuid+`"}],
		"messages":[{"from_user_id":"`+bsuid+`","id":"wamid.NOFROM","timestamp":"1700000000","type":"text","text":{"body":"Where is my order?"}}]}`))
	c := e.customerByUserID(t, bsuid)
	m := e.message(t, "wamid.NOFROM")
	if m.Body != "Where is my order?" || m.Channel != "whatsapp" || m.Direction != "inbound" || m.CustomerID != c.ID {
		t.Errorf("message = %+v, want it on customer %d", m, c.ID)
	}
	if c.Traits["name"] != "Sheena" {
		t.Errorf("name = %v, want Sheena", c.Traits["name"])
	}
	if p := e.properties(t, "wamid.NOFROM"); !strings.Contains(p, `"userId": "`+bsuid+`"`) || !strings.Contains(p, `"username": "@sheena"`) {
		t.Errorf("properties = %s, want the BSUID and the username", p)
	}
	// A message with no from_user_id is the only contact's.
	e.deliver(t, notification(`{"messaging_product":"whatsapp","contacts":[{"profile":{"name":"Sheena"},"user_id":"`+bsuid+`"}],
		"messages":[{"id":"wamid.CONTACTONLY","timestamp":"1700000001","type":"text","text":{"body":"hello?"}}]}`))
	if m := e.message(t, "wamid.CONTACTONLY"); m.CustomerID != c.ID {
		t.Errorf("message naming its sender by contact only went to %d, want %d", m.CustomerID, c.ID)
	}

	// The same person is known by her number from before she took a username.
	e.deliver(t, notification(inboundValue("16505551241", "Sheena",
		`{"from":"16505551241","id":"wamid.BYPHONE","timestamp":"1699990000","type":"text","text":{"body":"earlier"}}`)))
	if byPhone := e.customer(t, "+16505551241"); byPhone.ID == c.ID {
		t.Fatalf("number and BSUID on one customer before anything linked them")
	}
	// A message carrying both links them.
	e.deliver(t, notification(`{"messaging_product":"whatsapp","contacts":[{"profile":{"name":"Sheena"},"wa_id":"16505551241","user_id":"`+bsuid+`"}],
		"messages":[{"from":"16505551241","from_user_id":"`+bsuid+`","id":"wamid.BOTH","timestamp":"1700000002","type":"text","text":{"body":"both"}}]}`))
	byPhone, byUserID := e.customer(t, "+16505551241"), e.customerByUserID(t, bsuid)
	if byPhone.ID != byUserID.ID {
		t.Errorf("customer by number = %d, by BSUID = %d; want one", byPhone.ID, byUserID.ID)
	}
	for _, wamid := range []string{"wamid.NOFROM", "wamid.BYPHONE", "wamid.BOTH"} {
		if m := e.message(t, wamid); m.CustomerID != byPhone.ID {
			t.Errorf("%s on customer %d, want %d", wamid, m.CustomerID, byPhone.ID)
		}
	}
	if n := len(e.deadLetters(t)); n != 0 {
		t.Errorf("dead letters = %d, want 0", n)
	}
}

// A message with a wamid but no sender at all (no from, no from_user_id,
// no contact) cannot be attached to anyone. It is not acknowledged and
// lost: it is kept as a dead letter under its wamid and logged, without
// its text, and the message beside it is stored.
func TestInboundWithoutSenderIsKeptAsDeadLetter(t *testing.T) {
	e := newEnv(t)
	e.deliver(t, notification(`{"messaging_product":"whatsapp","contacts":[],"messages":[
		{"id":"wamid.NOSENDER","timestamp":"1700000000","type":"text","text":{"body":"secret words"}},
		{"from":"16505551242","id":"wamid.WITHSENDER","timestamp":"1700000001","type":"text","text":{"body":"fine"}}]}`))
	if m := e.message(t, "wamid.WITHSENDER"); m.Body != "fine" {
		t.Errorf("message beside it = %+v", m)
	}
	d := e.deadLetters(t)
	if len(d) != 1 || d[0].DedupeKey != "wamid.NOSENDER" || d[0].Source != "whatsapp" || d[0].EventType != c360.EventMessage ||
		!strings.Contains(d[0].Error, "no usable identity") {
		t.Fatalf("dead letters = %+v, want wamid.NOSENDER", d)
	}
	if body := fmt.Sprint(d[0].Event["message"]); !strings.Contains(body, "secret words") {
		t.Errorf("dead letter's message = %s, want the text kept for the admin", body)
	}
	logs := e.logs.String()
	if !strings.Contains(logs, "wamid.NOSENDER") || strings.Contains(logs, "secret words") {
		t.Errorf("log lines miss the wamid, or hold the text:\n%s", logs)
	}
	if n := count(t, e.db, `SELECT count(*) FROM messages WHERE workspace_id = $1`, e.ws); n != 1 {
		t.Errorf("messages = %d, want 1", n)
	}
}

// A status to a user known by BSUID may come without recipient_id: it
// finds its message by the wamid, with recipient_user_id or without any
// recipient.
func TestStatusWithoutRecipientID(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	for _, wamid := range []string{"wamid.OUTB1", "wamid.OUTB2"} {
		if _, err := e.db.Ingest(ctx, e.ws, []*c360.Event{{Type: c360.EventMessage, Source: "whatsapp", DedupeKey: wamid,
			Identities: []c360.Identity{{Type: whatsapp.UserIDType, Value: bsuid}},
			Message:    &c360.MessageInput{Channel: "whatsapp", Direction: "outbound", Body: "shipped", ProviderID: wamid, Status: "accepted"}}}); err != nil {
			t.Fatal(err)
		}
	}
	e.deliver(t, notification(`{"messaging_product":"whatsapp","metadata":{"display_phone_number":"15550783881","phone_number_id":"1"},
		"contacts":[{"profile":{"name":"Pablo M.","username":"@pablo"},"user_id":"`+bsuid+`"}],
		"statuses":[{"id":"wamid.OUTB1","status":"delivered","timestamp":"1700000000","recipient_user_id":"`+bsuid+`"},
			{"id":"wamid.OUTB2","status":"read","timestamp":"1700000000"}]}`))
	if got := e.message(t, "wamid.OUTB1").Status; got != "delivered" {
		t.Errorf("status with recipient_user_id only = %s, want delivered", got)
	}
	if got := e.message(t, "wamid.OUTB2").Status; got != "read" {
		t.Errorf("status without recipient = %s, want read", got)
	}
	if n := len(e.deadLetters(t)); n != 0 {
		t.Errorf("dead letters = %d, want 0", n)
	}
}
