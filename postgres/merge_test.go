package postgres_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/c360dev/c360"
	"github.com/c360dev/c360/internal/pgtest"
)

// A merge moves every message of the merged customer to the survivor,
// though it finds them through the customer's conversations: a message
// always belongs to its conversation's customer, whether it arrived by
// ingest (one event at a time or in a group), or moved in a split or an
// earlier merge. The customers merged into the merged one now point at
// the survivor.
func TestMergeMovesEveryMessage(t *testing.T) {
	db := pgtest.Open(t)
	ws, _, _ := pgtest.Workspace(t, db)
	ctx := context.Background()
	t0 := time.Now().Add(-time.Hour)
	n := 0
	message := func(channel, thread string, who ...string) *c360.Event {
		n++
		ev := &c360.Event{Type: c360.EventMessage, Source: "test", DedupeKey: fmt.Sprintf("m%d", n),
			OccurredAt: t0.Add(time.Duration(n) * time.Second), Identities: ids(who...),
			Message: &c360.MessageInput{Channel: channel, Direction: c360.DirectionInbound, Body: fmt.Sprint("hi ", n), Status: "received"}}
		if thread != "" {
			ev.Properties = map[string]any{"threadKey": thread}
		}
		return ev
	}
	// Ann: sms through two phones (one of them split off later), whatsapp,
	// and two chat threads, some sent one by one, some as one batch.
	ann := ingest1(t, db, ws, message("sms", "", "email", "ann@x.io", "phone", "+14155550101")).CustomerID
	ingest1(t, db, ws, message("sms", "", "email", "ann@x.io", "phone", "+14155550102"))
	if _, err := db.Ingest(ctx, ws, []*c360.Event{
		message("whatsapp", "", "email", "ann@x.io"),
		message("chat", "t1", "email", "ann@x.io"),
		message("chat", "t2", "email", "ann@x.io"),
		message("chat", "t1", "email", "ann@x.io"),
	}); err != nil {
		t.Fatal(err)
	}
	ingest1(t, db, ws, message("chat", "t9", "phone", "+14155550102"))
	// Cid, merged into Ann, with a message of its own.
	cid := ingest1(t, db, ws, message("sms", "", "email", "cid@x.io")).CustomerID
	if _, err := db.MergeCustomers(ctx, ws, ann, cid, true, "admin", ""); err != nil {
		t.Fatal(err)
	}
	// One of Ann's phones split off with what came through it alone.
	split, err := db.SplitIdentity(ctx, ws, ann, c360.Identity{Type: "phone", Value: "+14155550102"}, "admin", "")
	if err != nil {
		t.Fatal(err)
	}
	if count(t, db, `SELECT count(*) FROM messages WHERE workspace_id = $1 AND customer_id = $2`, ws, split.Split.ID) == 0 {
		t.Fatal("the split moved no message: the test would not cover split messages")
	}
	bob := ingest1(t, db, ws, message("sms", "", "email", "bob@x.io")).CustomerID
	total := count(t, db, `SELECT count(*) FROM messages WHERE workspace_id = $1`, ws)

	// Ann, then the split-off customer, merged into Bob.
	for _, m := range []int64{ann, split.Split.ID} {
		if _, err := db.MergeCustomers(ctx, ws, bob, m, true, "admin", ""); err != nil {
			t.Fatal(err)
		}
	}
	if got := count(t, db, `SELECT count(*) FROM messages WHERE workspace_id = $1 AND customer_id = $2`, ws, bob); got != total {
		t.Errorf("Bob has %d messages, want all %d", got, total)
	}
	if got := count(t, db, `SELECT count(*) FROM conversations WHERE workspace_id = $1 AND customer_id <> $2`, ws, bob); got != 0 {
		t.Errorf("%d conversations are not Bob's", got)
	}
	if got := count(t, db, `SELECT count(*) FROM messages m JOIN conversations c ON c.workspace_id = m.workspace_id AND c.id = m.conversation_id
		WHERE m.workspace_id = $1 AND m.customer_id <> c.customer_id`, ws); got != 0 {
		t.Errorf("%d messages belong to another customer than their conversation", got)
	}
	// Cid, merged into Ann before, now points at Bob: one hop.
	if got := count(t, db, `SELECT count(*) FROM customers WHERE workspace_id = $1 AND id = $2 AND merged_into = $3`, ws, cid, bob); got != 1 {
		t.Errorf("Cid does not point at Bob")
	}
	if c, err := db.FindCustomerByID(ctx, ws, cid); err != nil || c.ID != bob {
		t.Errorf("Cid resolves to %v (%v), want Bob (%d)", c, err, bob)
	}
}
