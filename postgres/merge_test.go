package postgres_test

import (
	"context"
	"fmt"
	"strings"
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

// A merge leaves the survivor one open conversation per channel and
// thread: where the survivor has one open, the merged customer's closes,
// so the survivor's next message goes on in its own thread, not in the
// other person's (which has the higher id, and was ingest's pick). Where
// the survivor has none, the merged customer's stays open. A split that
// undoes the merge gives each person back their conversations as they
// were before it: the one the merge closed reopens on the side it goes
// back to, whichever side that is, and that person's next message lands
// in it.
func TestMergeKeepsOneOpenConversationPerThread(t *testing.T) {
	db := pgtest.Open(t)
	ws, _, _ := pgtest.Workspace(t, db)
	ctx := context.Background()
	t0 := time.Now().Add(-time.Hour)
	n := 0
	message := func(key, channel, phone string) int64 {
		t.Helper()
		n++
		return ingest1(t, db, ws, &c360.Event{Type: c360.EventMessage, Source: "twilio", DedupeKey: key, Identities: ids("phone", phone),
			OccurredAt: t0.Add(time.Duration(n) * time.Second),
			Message:    &c360.MessageInput{Channel: channel, Direction: "inbound", Body: key, ProviderID: key, Status: "received"}}).CustomerID
	}
	convOf := func(key string) int64 {
		t.Helper()
		var id int64
		if err := db.Pool.QueryRow(ctx, `SELECT conversation_id FROM messages WHERE workspace_id = $1 AND provider_id = $2`, ws, key).Scan(&id); err != nil {
			t.Fatalf("message %s: %v", key, err)
		}
		return id
	}
	type conv struct {
		customer       int64
		status, bodies string
	}
	conversation := func(id int64) conv {
		t.Helper()
		var c conv
		if err := db.Pool.QueryRow(ctx, `SELECT v.customer_id, v.status,
			(SELECT string_agg(m.body, ' ' ORDER BY m.created_at, m.id) FROM messages m WHERE m.workspace_id = v.workspace_id AND m.conversation_id = v.id)
			FROM conversations v WHERE v.workspace_id = $1 AND v.id = $2`, ws, id).Scan(&c.customer, &c.status, &c.bodies); err != nil {
			t.Fatalf("conversation %d: %v", id, err)
		}
		return c
	}
	want := func(step string, id int64, w conv) {
		t.Helper()
		if got := conversation(id); got != w {
			t.Errorf("%s: conversation %d = %+v, want %+v", step, id, got, w)
		}
	}
	openOn := func(customer int64, channel string) int {
		return count(t, db, `SELECT count(*) FROM conversations WHERE workspace_id = $1 AND customer_id = $2 AND channel = $3 AND status = 'open'`,
			ws, customer, channel)
	}
	// Two people, each writing by SMS; the second by WhatsApp too. One
	// email is then given to both (a wrong link): the second is merged
	// into the first, the older.
	merge := func(email, p1, p2, k string) (ann, bea int64) {
		t.Helper()
		ann = message(k+"a1", "sms", p1)
		bea = message(k+"b1", "sms", p2)
		message(k+"b2", "whatsapp", p2)
		ingest1(t, db, ws, &c360.Event{Type: c360.EventIdentify, Source: "t", DedupeKey: k + "l1", Identities: ids("email", email, "phone", p1)})
		if got := ingest1(t, db, ws, &c360.Event{Type: c360.EventIdentify, Source: "t", DedupeKey: k + "l2", Identities: ids("email", email, "phone", p2)}); got.CustomerID != ann {
			t.Fatalf("the link went to customer %d, want the merge into %d", got.CustomerID, ann)
		}
		return ann, bea
	}

	ann, bea := merge("ab@x.io", "+14155550111", "+14155550112", "1")
	annSMS, beaSMS, beaWA := convOf("1a1"), convOf("1b1"), convOf("1b2")
	want("merged: the survivor's thread", annSMS, conv{ann, "open", "1a1"})
	want("merged: the merged one's beside it", beaSMS, conv{ann, "closed", "1b1"})
	want("merged: the merged one's alone on its channel", beaWA, conv{ann, "open", "1b2"})
	if o := openOn(ann, "sms"); o != 1 {
		t.Errorf("open sms conversations = %d, want 1", o)
	}
	message("1a2", "sms", "+14155550111")
	if got := convOf("1a2"); got != annSMS {
		t.Errorf("the survivor's next message went to conversation %d, want its own %d (the merged one's is %d)", got, annSMS, beaSMS)
	}

	// Bea's phone split off: her threads go back to her, the SMS one open
	// again; Ann keeps hers.
	res, err := db.SplitIdentity(ctx, ws, ann, c360.Identity{Type: "phone", Value: "+14155550112"}, "agent", "not the same person")
	if err != nil {
		t.Fatal(err)
	}
	bea = res.Split.ID
	want("split: Ann's", annSMS, conv{ann, "open", "1a1 1a2"})
	want("split: Bea's SMS", beaSMS, conv{bea, "open", "1b1"})
	want("split: Bea's WhatsApp", beaWA, conv{bea, "open", "1b2"})
	message("1b3", "sms", "+14155550112")
	if got := convOf("1b3"); got != beaSMS {
		t.Errorf("Bea's next message went to conversation %d, want her own %d", got, beaSMS)
	}

	// The survivor's phone split off instead: the thread the merge closed
	// is the one left with the original, and it reopens there.
	ann, _ = merge("cd@x.io", "+14155550113", "+14155550114", "2")
	annSMS, beaSMS = convOf("2a1"), convOf("2b1")
	res, err = db.SplitIdentity(ctx, ws, ann, c360.Identity{Type: "phone", Value: "+14155550113"}, "agent", "not the same person")
	if err != nil {
		t.Fatal(err)
	}
	want("split of the survivor's phone: its thread", annSMS, conv{res.Split.ID, "open", "2a1"})
	want("split of the survivor's phone: the merged one's", beaSMS, conv{ann, "open", "2b1"})
	for _, c := range []int64{ann, res.Split.ID} {
		if o := openOn(c, "sms"); o != 1 {
			t.Errorf("customer %d: open sms conversations = %d, want 1", c, o)
		}
	}
}

// A merge or a split whose reason cannot be kept (longer than
// c360.MaxMergeReasonLen bytes, not UTF-8, holding a NUL) is refused with
// BAD_USER_INPUT before anything is done: no ledger row, no change, the
// customers as they were. A reason of exactly the bound is kept whole, and
// a blank one is replaced by the default.
func TestMergeAndSplitRefuseAReasonThatCannotBeKept(t *testing.T) {
	db := pgtest.Open(t)
	ws, _, _ := pgtest.Workspace(t, db)
	ctx := context.Background()
	a := ingest1(t, db, ws, track("a", ids("email", "ann@x.io", "phone", "+14155550101"))).CustomerID
	b := ingest1(t, db, ws, track("b", ids("email", "bob@x.io"))).CustomerID
	state := func() string {
		return fmt.Sprint(
			count(t, db, `SELECT count(*) FROM merges WHERE workspace_id = $1`, ws),
			count(t, db, `SELECT count(*) FROM customer_changes WHERE workspace_id = $1`, ws),
			count(t, db, `SELECT count(*) FROM customers WHERE workspace_id = $1 AND merged_into IS NULL`, ws))
	}
	before := state()
	for _, tc := range []struct{ name, reason string }{
		{"too long", strings.Repeat("x", c360.MaxMergeReasonLen+1)},
		{"about 1 MB", strings.Repeat("x", 1<<20)},
		{"multi-byte runes past the bound", strings.Repeat("é", c360.MaxMergeReasonLen/2+1)},
		{"NUL", "caller\x00 confirmed"},
		{"invalid UTF-8", "caller \xff confirmed"},
	} {
		_, err := db.MergeCustomers(ctx, ws, a, b, true, "admin", tc.reason)
		if c360.ErrorCode(err) != c360.EINVALID || !strings.Contains(c360.ErrorMessage(err), "reason") {
			t.Errorf("merge, reason %s: %v, want BAD_USER_INPUT about the reason", tc.name, err)
		}
		_, err = db.SplitIdentity(ctx, ws, a, c360.Identity{Type: "phone", Value: "+14155550101"}, "admin", tc.reason)
		if c360.ErrorCode(err) != c360.EINVALID || !strings.Contains(c360.ErrorMessage(err), "reason") {
			t.Errorf("split, reason %s: %v, want BAD_USER_INPUT about the reason", tc.name, err)
		}
		if got := state(); got != before {
			t.Fatalf("refused reason %s: ledger, changes, live customers = %s, want %s (nothing done)", tc.name, got, before)
		}
	}
	full := strings.Repeat("y", c360.MaxMergeReasonLen)
	if _, err := db.SplitIdentity(ctx, ws, a, c360.Identity{Type: "phone", Value: "+14155550101"}, "admin", full); err != nil {
		t.Fatalf("split with a reason of exactly %d bytes: %v", c360.MaxMergeReasonLen, err)
	}
	if _, err := db.MergeCustomers(ctx, ws, a, b, true, "admin", "  "); err != nil {
		t.Fatalf("merge with a blank reason: %v", err)
	}
	var reasons []string
	rows, err := db.Pool.Query(ctx, `SELECT reason FROM merges WHERE workspace_id = $1 ORDER BY id`, ws)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var r string
		if err := rows.Scan(&r); err != nil {
			t.Fatal(err)
		}
		reasons = append(reasons, r)
	}
	if rows.Err() != nil {
		t.Fatal(rows.Err())
	}
	if len(reasons) != 2 || reasons[0] != full || reasons[1] != "merged by an operator" {
		t.Errorf("ledger reasons = %.40q, want the %d-byte reason whole, then the default", reasons, c360.MaxMergeReasonLen)
	}
}
