package whatsapp_test

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/c360dev/c360"
)

// One item of an unexpected shape costs only itself. A system message
// whose new_wa_id is a number (as Meta has been seen sending it) is read,
// and the good message beside it is stored: the whole notification used
// to be refused with 400, and Meta's retries for days with it. An item
// that still cannot be read is kept as a dead letter under its wamid, with
// the reason; one whose id cannot be read either is logged by its place,
// without its text. The log holds no secret.
func TestNotificationItemsAreReadOneByOne(t *testing.T) {
	e := newEnv(t)
	e.deliver(t, notification(`{"messaging_product":"whatsapp","metadata":{"display_phone_number":"15550783881","phone_number_id":"1"},
		"contacts":[{"profile":{"name":"Sam"},"wa_id":"16505551243"}],
		"messages":[
			{"from":"16505551243","id":"wamid.ITEMGOOD","timestamp":"1700000000","type":"text","text":{"body":"Where is my order?"}},
			{"from":"16505551243","id":"wamid.ITEMSYS","timestamp":"1700000001","type":"system",
			 "system":{"body":"Sam changed from 16505551243 to 16505551297","type":"user_changed_number","new_wa_id":16505551297}},
			{"from":"16505551243","id":"wamid.ITEMODD","timestamp":"1700000002","type":"text","text":"private words"},
			{"from":"16505551243","id":["x"],"type":"text","text":{"body":{"more":"hidden words"}}}]}`))
	if m := e.message(t, "wamid.ITEMGOOD"); m.Body != "Where is my order?" {
		t.Errorf("good message = %+v", m)
	}
	old, moved := e.customer(t, "+16505551243"), e.customer(t, "+16505551297")
	if moved.ID != old.ID {
		t.Errorf("the numeric new_wa_id's customer = %d, want %d", moved.ID, old.ID)
	}
	d := e.deadLetters(t)
	if len(d) != 1 || d[0].DedupeKey != "wamid.ITEMODD" || d[0].Source != "whatsapp" ||
		!strings.Contains(d[0].Error, "refused as invalid before ingest: the message could not be read: text: want an object, got string") {
		t.Fatalf("dead letters = %+v, want wamid.ITEMODD", d)
	}
	if item := fmt.Sprint(d[0].Event["properties"]); !strings.Contains(item, "private words") {
		t.Errorf("dead letter's properties = %s, want the item as sent", item)
	}
	// A replay cannot read the item any better: it is refused again, and
	// stores no empty message in its place.
	if _, _, err := e.db.ReplayDeadLetter(context.Background(), e.ws, d[0].ID); c360.ErrorCode(err) != c360.EINVALID {
		t.Errorf("replay = %v, want it refused as invalid", err)
	}
	if n := count(t, e.db, `SELECT count(*) FROM messages WHERE workspace_id = $1 AND provider_id = 'wamid.ITEMODD'`, e.ws); n != 0 {
		t.Errorf("messages of the unreadable item = %d, want 0", n)
	}
	logs := e.logs.String()
	for _, want := range []string{"wamid.ITEMODD", "entry[0].changes[0].value.messages[3]", "id: want a string or a number, got array"} {
		if !strings.Contains(logs, want) {
			t.Errorf("logs miss %q:\n%s", want, logs)
		}
	}
	for _, secret := range []string{"private words", "hidden words", appSecret} {
		if strings.Contains(logs, secret) {
			t.Errorf("logs hold %q:\n%s", secret, logs)
		}
	}
	// The good message and the number change; nothing of the others.
	if n := count(t, e.db, `SELECT count(*) FROM events WHERE workspace_id = $1`, e.ws); n != 2 {
		t.Errorf("events = %d, want 2", n)
	}
	// The dead letter names its sender, so erasing the person erases it.
	if _, err := e.db.EraseCustomer(context.Background(), e.ws, old.ID, "admin", "ticket 7"); err != nil {
		t.Fatal(err)
	}
	if d := e.deadLetters(t); len(d) != 0 {
		t.Errorf("dead letters after erasing their sender = %+v, want none", d)
	}
}

// A message naming no sender of its own is hers through the notification's
// only contact (its user_id), whether or not it can be read: one that
// cannot is kept as a dead letter under her identities, with the contact,
// so that erasing her erases the dead letter holding her words.
func TestUnreadableContactOnlyMessageIsErasedWithItsSender(t *testing.T) {
	e := newEnv(t)
	e.deliver(t, notification(`{"messaging_product":"whatsapp","contacts":[{"profile":{"name":"Sheena"},"user_id":"`+bsuid+`"}],
		"messages":[{"id":"wamid.OK","timestamp":"1700000001","type":"text","text":{"body":"hello?"}}]}`))
	c := e.customerByUserID(t, bsuid)
	e.deliver(t, notification(`{"messaging_product":"whatsapp","contacts":[{"profile":{"name":"Sheena"},"user_id":"`+bsuid+`"}],
		"messages":[{"id":"wamid.BAD","timestamp":"1700000002","type":"text","text":"my secret words","context":"x"}]}`))
	d := e.deadLetters(t)
	if len(d) != 1 {
		t.Fatalf("dead letters = %+v, want 1", d)
	}
	if props := fmt.Sprint(d[0].Event["properties"]); !strings.Contains(props, "Sheena") {
		t.Errorf("dead letter's properties = %s, want the contact", props)
	}
	if _, err := e.db.EraseCustomer(context.Background(), e.ws, c.ID, "test", "ticket 1"); err != nil {
		t.Fatal(err)
	}
	if n := len(e.deadLetters(t)); n != 0 {
		t.Errorf("after erasing the customer of %s, %d dead letter(s) holding her message remain", bsuid, n)
	}
}
