package postgres_test

import (
	"context"
	"testing"
	"time"

	"github.com/c360dev/c360"
	"github.com/c360dev/c360/internal/pgtest"
)

// A customer's page of conversations and their messages are read by two
// statements of one batch, each with a snapshot of its own. A message
// landing between them on a conversation off the page makes the messages
// statement pick other conversations than the page's: the page's
// conversation must still come with its messages, not with an empty page.
func TestConversationsWithMessagesRaceWithANewMessage(t *testing.T) {
	counter := &pgtest.StatementCounter{}
	db := pgtest.Open(t, counter.Install)
	ws, _, _ := pgtest.Workspace(t, db)
	ctx := context.Background()
	base := time.Now().Add(-time.Hour)
	var a int64
	for i, ch := range []string{"sms", "whatsapp"} {
		a = ingest1(t, db, ws, &c360.Event{Type: c360.EventMessage, Source: "test", DedupeKey: ch,
			Identities: ids("phone", "+14155550161"), OccurredAt: base.Add(time.Duration(i) * time.Minute),
			Message: &c360.MessageInput{Channel: ch, Direction: "inbound", Body: map[string]string{"sms": "sms one", "whatsapp": "wa one"}[ch], Status: "received"}}).CustomerID
	}
	msgs := c360.PageArgs{First: 5}
	req := c360.ProfileRequest{Conversations: []c360.PageArgs{{First: 1}}, Messages: &msgs}
	check := func(name string, c *c360.Customer, p *c360.Profiles, err error) {
		t.Helper()
		if err != nil || c == nil || p == nil {
			t.Fatalf("%s: %v %v %v", name, c, p, err)
		}
		pg := p.Conversations[c360.PageArgs{First: 1}][a]
		if pg == nil || len(pg.Items) != 1 || pg.Items[0].Channel != "whatsapp" {
			t.Fatalf("%s: conversations %s, want the whatsapp one", name, js(p))
		}
		m := p.Messages[pg.Items[0].ID]
		if m == nil || len(m.Items) != 1 || m.Items[0].Body != "wa one" || m.HasNext {
			t.Errorf("%s: messages of the page's conversation %s, want \"wa one\"", name, js(p))
		}
	}
	// Before: the whatsapp conversation with its message (and the batch's
	// statements prepared, so that only the messages statement waits for
	// the lock below, the conversations statement having run).
	c, p, err := db.FindProfile(ctx, ws, c360.CustomerKey{ID: a}, req)
	check("before", c, p, err)
	counter.Reset()
	c, p, err = db.FindProfile(ctx, ws, c360.CustomerKey{ID: a}, req)
	check("again", c, p, err)
	if trips := counter.RoundTrips(); trips != 1 {
		t.Errorf("%d round trips, want 1:\n%s", trips, counter.Statements())
	}

	var sms int64
	if err := db.Pool.QueryRow(ctx, `SELECT id FROM conversations WHERE workspace_id = $1 AND customer_id = $2 AND channel = 'sms'`, ws, a).Scan(&sms); err != nil {
		t.Fatal(err)
	}
	tx, err := db.Pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	if _, err := tx.Exec(ctx, `LOCK TABLE messages IN ACCESS EXCLUSIVE MODE`); err != nil {
		t.Fatal(err)
	}
	type result struct {
		c   *c360.Customer
		p   *c360.Profiles
		err error
	}
	done := make(chan result, 1)
	go func() {
		c, p, err := db.FindProfile(ctx, ws, c360.CustomerKey{ID: a}, req)
		done <- result{c, p, err}
	}()
	pgtest.WaitForLockWait(t, db, "messages")
	// The customer writes on SMS meanwhile: that conversation is now the
	// newest, for the messages statement's snapshot only.
	if _, err := tx.Exec(ctx, `INSERT INTO messages (workspace_id, conversation_id, customer_id, channel, direction, body, status)
		VALUES ($1, $2, $3, 'sms', 'inbound', 'sms two', 'received')`, ws, sms, a); err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, `UPDATE conversations SET last_message_at = now() WHERE workspace_id = $1 AND id = $2`, ws, sms); err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	r := <-done
	check("with a message landing between the statements", r.c, r.p, r.err)

	// The same through LoadProfiles is the same code; and after, the SMS
	// conversation leads with its new message.
	p, err = db.LoadProfiles(ctx, ws, []int64{a}, req)
	if err != nil {
		t.Fatal(err)
	}
	pg := p.Conversations[c360.PageArgs{First: 1}][a]
	if len(pg.Items) != 1 || pg.Items[0].ID != sms || len(p.Messages[sms].Items) != 2 || p.Messages[sms].Items[0].Body != "sms two" {
		t.Errorf("after: %s, want the sms conversation with its two messages", js(p))
	}

	// A conversation with no messages is found empty by the messages
	// statement, and read no second time; so is one with none past a
	// messages cursor.
	var empty int64
	if err := db.Pool.QueryRow(ctx, `INSERT INTO conversations (workspace_id, customer_id, channel, thread_key) VALUES ($1, $2, 'chat', 'x') RETURNING id`, ws, a).Scan(&empty); err != nil {
		t.Fatal(err)
	}
	cursor := p.Messages[sms].Cursors[1]
	for _, m := range []c360.PageArgs{{First: 5}, {First: 5, After: cursor}} {
		two := c360.ProfileRequest{Conversations: []c360.PageArgs{{First: 2}}, Messages: &m}
		counter.Reset()
		_, p, err := db.FindProfile(ctx, ws, c360.CustomerKey{ID: a}, two)
		if err != nil {
			t.Fatal(err)
		}
		if trips := counter.RoundTrips(); trips != 1 {
			t.Errorf("after %q: %d round trips, want 1:\n%s", m.After, trips, counter.Statements())
		}
		pg := p.Conversations[c360.PageArgs{First: 2}][a]
		if len(pg.Items) != 2 || pg.Items[0].ID != empty || pg.Items[1].ID != sms ||
			p.Messages[empty] == nil || len(p.Messages[empty].Items) != 0 || p.Messages[sms] == nil || len(p.Messages[sms].Items) != map[string]int{"": 2}[m.After] {
			t.Errorf("after %q: %s, want the empty chat conversation and the sms one", m.After, js(p))
		}
	}
}
