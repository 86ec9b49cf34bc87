package server_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/c360dev/c360"
)

// conversationMessages(conversationId) follows a split that moved its
// conversation although the split's change could not list it: past 100
// moved conversations the list is cut (movedConversationIdsTruncated), and
// a stream of a conversation above its last id looks the owner up.
func TestConversationMessagesFollowASplitPastTheListsBound(t *testing.T) {
	e := newRTEnv(t, rtOptions{})
	ctx := context.Background()
	phone := c360.Identity{Type: "phone", Value: "+14155550144"}
	owner := ingest(t, e.db, e.ws, []c360.Identity{{Type: "email", Value: "threads@example.com"}, phone}, nil)
	chat := func(thread int, body string) {
		now := time.Now().UTC()
		if _, err := e.db.Ingest(ctx, e.ws, []*c360.Event{{Type: c360.EventMessage, Identities: []c360.Identity{phone},
			Source: "test", DedupeKey: randomID(), OccurredAt: now, ReceivedAt: now,
			Properties: map[string]any{"threadKey": fmt.Sprint("thread-", thread)},
			Message:    &c360.MessageInput{Channel: "chat", Direction: "inbound", Body: body, Status: "received"}}}); err != nil {
			t.Fatal(err)
		}
	}
	const threads = 102
	for i := range threads {
		chat(i, "before")
	}
	var last int64 // the highest id: not listed by the split's change
	if err := e.db.Pool.QueryRow(ctx, `SELECT max(id) FROM conversations WHERE workspace_id = $1 AND customer_id = $2`,
		e.ws, owner).Scan(&last); err != nil {
		t.Fatal(err)
	}
	c := dialWS(t, wsURL(e.srv), "graphql-transport-ws", nil)
	c.init(e.key)
	c.subscribe("m", `subscription($c: ID) { conversationMessages(conversationId: $c) { body } }`, map[string]any{"c": fmt.Sprint(last)})
	waitFor(t, "subscription", func() bool { return e.hub.Stats().Streams == 1 })

	res, err := e.db.SplitIdentity(ctx, e.ws, owner, phone, "agent", "many threads")
	if err != nil || res.MovedConversations != threads {
		t.Fatalf("split: %+v, %v; want %d conversations moved", res, err, threads)
	}
	chat(threads-1, "after the split")
	var m struct{ Body string }
	c.next("m", "conversationMessages", &m)
	if m.Body != "after the split" {
		t.Fatalf("got %+v, want the message after the split", m)
	}
}
