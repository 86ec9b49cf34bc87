package whatsapp_test

import (
	"context"
	"testing"

	"github.com/c360dev/c360"
)

// A message that fails inside ingest (a NUL character, which PostgreSQL
// refuses) is kept as a dead letter and skipped: the notification is
// answered 200 and the message after it is stored.
func TestPoisonMessageIsKeptAsDeadLetter(t *testing.T) {
	e := newEnv(t)
	e.deliver(t, notification(inboundValue("16505551239", "Poison Test",
		`{"from":"16505551239","id":"wamid.POISON","timestamp":"1700000000","type":"text","text":{"body":"nul \u0000 body"}},
		 {"from":"16505551239","id":"wamid.AFTER","timestamp":"1700000001","type":"text","text":{"body":"after"}}`)))
	if m := e.message(t, "wamid.AFTER"); m.Body != "after" {
		t.Errorf("message after the poison = %+v", m)
	}
	p, err := e.db.DeadLetters(context.Background(), e.ws, c360.DeadLetterFilter{PageArgs: c360.PageArgs{First: 10}})
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Items) != 1 || p.Items[0].DedupeKey != "wamid.POISON" || p.Items[0].Source != "whatsapp" {
		t.Fatalf("dead letters = %+v, want wamid.POISON", p.Items)
	}
}
