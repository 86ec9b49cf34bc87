package server_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/c360dev/c360"
	"github.com/c360dev/c360/postgres"
	"github.com/c360dev/c360/resolver"
)

// gatedMessages holds MessageOfChange, once armed, until released: a
// conversationMessages stream that lags behind the writes.
type gatedMessages struct {
	*postgres.DB
	mu      sync.Mutex
	armed   bool
	held    chan struct{}
	release chan struct{}
}

func (g *gatedMessages) MessageOfChange(ctx context.Context, ws, id int64) (*c360.Message, error) {
	g.mu.Lock()
	armed := g.armed
	g.armed = false
	g.mu.Unlock()
	if armed {
		close(g.held)
		<-g.release
	}
	return g.DB.MessageOfChange(ctx, ws, id)
}

// A split moves the conversation to a new customer N, N gets messages of
// it, and N is merged into S2, all before conversationMessages(conversationId)
// handles the split: the stream still delivers N's messages (in N's feed,
// not S2's), then S2's, each once. A split that did not move the
// conversation, followed by a merge of its owner into S2, leaves the
// stream on the owner's feed until the merge: the owner's messages
// between the two are delivered too.
func TestConversationMessagesFollowASplitThenAMerge(t *testing.T) {
	for _, moved := range []bool{true, false} {
		t.Run(fmt.Sprint("conversation moved: ", moved), func(t *testing.T) { splitThenMerge(t, moved) })
	}
}

func splitThenMerge(t *testing.T, moved bool) {
	var store *gatedMessages
	e := newRTEnv(t, rtOptions{realtime: func(db *postgres.DB) resolver.RealtimeStore {
		store = &gatedMessages{DB: db, held: make(chan struct{}), release: make(chan struct{})}
		return store
	}})
	ctx := context.Background()
	phone := c360.Identity{Type: "phone", Value: "+14155550188"}
	owner := ingest(t, e.db, e.ws, []c360.Identity{{Type: "email", Value: "una@example.com"}, phone}, nil)
	s2 := ingest(t, e.db, e.ws, email("s2@example.com"), nil)
	sms := func(body string) string {
		t.Helper()
		now, sid := time.Now().UTC(), "SM"+randomID()
		if _, err := e.db.Ingest(ctx, e.ws, []*c360.Event{{Type: c360.EventMessage, Identities: []c360.Identity{phone},
			Source: "test", DedupeKey: randomID(), OccurredAt: now, ReceivedAt: now,
			Message: &c360.MessageInput{Channel: "sms", Direction: "inbound", Body: body, Status: "received", ProviderID: sid}}}); err != nil {
			t.Fatal(err)
		}
		return sid
	}
	var conv int64
	if err := e.db.Pool.QueryRow(ctx, `SELECT conversation_id FROM messages WHERE workspace_id = $1 AND provider_id = $2`,
		e.ws, sms("before")).Scan(&conv); err != nil {
		t.Fatal(err)
	}
	c := dialWS(t, wsURL(e.srv), "graphql-transport-ws", nil)
	c.init(e.key)
	c.subscribe("m", `subscription($c: ID) { conversationMessages(conversationId: $c) { body } }`, map[string]any{"c": fmt.Sprint(conv)})
	waitFor(t, "subscription", func() bool { return e.hub.Stats().Streams == 1 })

	// The stream is held reading the message of "held", while the
	// conversation is split to N, N gets a message, and N is merged into
	// S2.
	store.mu.Lock()
	store.armed = true
	store.mu.Unlock()
	sms("held")
	select {
	case <-store.held:
	case <-time.After(10 * time.Second):
		t.Fatal("the stream did not read the message")
	}
	splitOut, mergeFrom := phone, int64(0)
	if !moved {
		splitOut = c360.Identity{Type: "email", Value: "una@example.com"}
	}
	res, err := e.db.SplitIdentity(ctx, e.ws, owner, splitOut, "agent", "family phone")
	if err != nil || (res.MovedConversations == 1) != moved {
		t.Fatalf("split: %+v, %v; want the conversation moved: %v", res, err, moved)
	}
	if mergeFrom = owner; moved {
		mergeFrom = res.Split.ID
	}
	sms("between the split and the merge")
	if _, err := e.db.MergeCustomers(ctx, e.ws, s2, mergeFrom, true, "agent", "same person"); err != nil {
		t.Fatalf("merge: %v", err)
	}
	sms("after the merge")
	close(store.release)

	for _, want := range []string{"held", "between the split and the merge", "after the merge"} {
		var m struct{ Body string }
		c.next("m", "conversationMessages", &m)
		if m.Body != want {
			t.Fatalf("got %q, want %q", m.Body, want)
		}
	}
}
