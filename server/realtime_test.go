package server_test

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/c360dev/c360"
	"github.com/c360dev/c360/connectors/whatsapp"
	"github.com/c360dev/c360/internal/pgtest"
	"github.com/c360dev/c360/server"
)

const subCustomer = `subscription($id: ID!, $after: String) { customerChanged(id: $id, after: $after) { ` + changeFields + ` } }`

// A subscriber receives every committed change of its customer, in version
// order, with cursor, kind, diff and the current customer.
func TestSubscriptionDeliversLiveChanges(t *testing.T) {
	e := newRTEnv(t, rtOptions{})
	id := ingest(t, e.db, e.ws, email("ann@example.com"), map[string]any{"name": "Ann"})

	c := dialWS(t, wsURL(e.srv), "graphql-transport-ws", nil)
	c.init(e.key)
	c.subscribe("s1", subCustomer, map[string]any{"id": fmt.Sprint(id)})
	waitFor(t, "subscription", func() bool { return e.hub.Stats().Streams == 1 })

	ingest(t, e.db, e.ws, email("ann@example.com"), map[string]any{"plan": "pro"})
	got := c.nextChange("s1")
	if got.Kind != c360.ChangeTraits || got.Version != 2 || got.CustomerID != fmt.Sprint(id) || got.Cursor == "" {
		t.Fatalf("got %+v, want traits change version 2 of %d", got, id)
	}
	if got.Customer == nil || got.Customer.Traits["plan"] != "pro" || got.Customer.Traits["name"] != "Ann" {
		t.Fatalf("customer = %+v, want the current profile", got.Customer)
	}
	if tr, _ := got.Diff["traits"].(map[string]any); tr["plan"] != "pro" {
		t.Fatalf("diff = %v, want the trait change", got.Diff)
	}

	now := time.Now().UTC()
	if _, err := e.db.Ingest(context.Background(), e.ws, []*c360.Event{{Type: c360.EventTrack, Name: "Order Completed",
		Identities: email("ann@example.com"), Source: "test", DedupeKey: randomID(), OccurredAt: now, ReceivedAt: now}}); err != nil {
		t.Fatal(err)
	}
	if got := c.nextChange("s1"); got.Kind != c360.ChangeEvent || got.Version != 3 {
		t.Fatalf("got %s v%d, want event v3", got.Kind, got.Version)
	}

	// The client stops the subscription: the server sends nothing more for it
	// and unregisters it.
	c.send("complete", "s1", nil)
	waitFor(t, "unsubscribe", func() bool { return e.hub.Stats().Streams == 0 })
}

// A client that resumes with the cursor of the last change it received gets
// every change after it exactly once, also while changes keep coming.
func TestSubscriptionResumesWithoutGapOrDuplicate(t *testing.T) {
	e := newRTEnv(t, rtOptions{})
	addr := email("bob@example.com")
	id := ingest(t, e.db, e.ws, addr, map[string]any{"n": 0})

	c := dialWS(t, wsURL(e.srv), "graphql-transport-ws", nil)
	c.init(e.key)
	c.subscribe("s1", subCustomer, map[string]any{"id": fmt.Sprint(id)})
	waitFor(t, "subscription", func() bool { return e.hub.Stats().Streams == 1 })
	ingest(t, e.db, e.ws, addr, map[string]any{"n": 1})
	last := c.nextChange("s1")
	c.c.Close()
	waitFor(t, "disconnect", func() bool { return e.hub.Stats().Streams == 0 })

	// Missed while disconnected.
	for i := 2; i <= 4; i++ {
		ingest(t, e.db, e.ws, addr, map[string]any{"n": i})
	}
	c2 := dialWS(t, wsURL(e.srv), "graphql-transport-ws", nil)
	c2.init(e.key)
	c2.subscribe("s1", subCustomer, map[string]any{"id": fmt.Sprint(id), "after": last.Cursor})
	// And more, racing the replay.
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 5; i <= 24; i++ {
			ingest(t, e.db, e.ws, addr, map[string]any{"n": i})
		}
	}()
	want := last.Version + 1
	for want <= 25 {
		got := c2.nextChange("s1")
		if got.Version != want {
			t.Fatalf("got version %d, want %d (no gap, no duplicate)", got.Version, want)
		}
		want++
	}
	wg.Wait()

	// Cursors that are not positions of this customer are refused.
	other := ingest(t, e.db, e.ws, email("other@example.com"), nil)
	c2.subscribe("bad", subCustomer, map[string]any{"id": fmt.Sprint(other), "after": last.Cursor})
	wantError(t, c2, "bad", c360.EINVALID)
	c2.subscribe("garbage", subCustomer, map[string]any{"id": fmt.Sprint(id), "after": "not-a-cursor"})
	wantError(t, c2, "garbage", c360.EINVALID)
}

// wantError reads the answer to a refused subscribe: gqlgen reports a
// resolver's refusal as a result with errors, then completes.
func wantError(t *testing.T, c *wsClient, id, code string) {
	t.Helper()
	m := c.read()
	if m.ID != id || (m.Type != "next" && m.Type != "error") {
		t.Fatalf("got %s %q %s, want an error for %q", m.Type, m.ID, m.Payload, id)
	}
	if !strings.Contains(string(m.Payload), `"code":"`+code+`"`) {
		t.Fatalf("payload %s, want code %s", m.Payload, code)
	}
	if m.Type == "next" {
		if m := c.read(); m.Type != "complete" || m.ID != id {
			t.Fatalf("got %s %q, want complete", m.Type, m.ID)
		}
	}
}

// When the customer is merged away, its stream says so and continues with
// the survivor's changes.
func TestSubscriptionFollowsMerge(t *testing.T) {
	e := newRTEnv(t, rtOptions{})
	a := ingest(t, e.db, e.ws, email("carol@example.com"), map[string]any{"name": "Carol"})
	b := ingest(t, e.db, e.ws, []c360.Identity{{Type: "phone", Value: "+14155550123"}}, map[string]any{"city": "Oakland"})

	c := dialWS(t, wsURL(e.srv), "graphql-transport-ws", nil)
	c.init(e.key)
	c.subscribe("a", subCustomer, map[string]any{"id": fmt.Sprint(a)})
	c.subscribe("b", subCustomer, map[string]any{"id": fmt.Sprint(b)})
	waitFor(t, "subscriptions", func() bool { return e.hub.Stats().Streams == 2 })

	// One event names both: they become one customer.
	ingest(t, e.db, e.ws, []c360.Identity{{Type: "email", Value: "carol@example.com"}, {Type: "phone", Value: "+14155550123"}}, nil)
	_, survivor, err := e.db.CustomerState(context.Background(), e.ws, b)
	if err != nil {
		t.Fatal(err)
	}
	merged, kept := "b", "a"
	mergedID, keptID := b, a
	if survivor == 0 {
		merged, kept, mergedID, keptID = "a", "b", a, b
	}

	// The merged-away customer's stream: merged_into, then the survivor's feed.
	into := c.nextByID(merged)
	if into.Kind != c360.ChangeMergedInto || into.CustomerID != fmt.Sprint(mergedID) || into.Diff["survivorId"] != fmt.Sprint(keptID) {
		t.Fatalf("got %+v, want merged_into %d -> %d", into, mergedID, keptID)
	}
	if into.Customer == nil || into.Customer.ID != fmt.Sprint(keptID) {
		t.Fatalf("customer of merged_into = %+v, want the survivor %d", into.Customer, keptID)
	}
	absorbed := c.nextByID(merged)
	if absorbed.CustomerID != fmt.Sprint(keptID) {
		t.Fatalf("after merged_into got %+v, want the survivor's change", absorbed)
	}
	if got := c.nextByID(kept); got.Version != absorbed.Version || got.CustomerID != absorbed.CustomerID {
		t.Fatalf("survivor stream got %+v, want %s v%d", got, absorbed.CustomerID, absorbed.Version)
	}

	// Later changes of the survivor reach both streams.
	ingest(t, e.db, e.ws, email("carol@example.com"), map[string]any{"vip": true})
	g1, g2 := c.nextByID("a"), c.nextByID("b")
	if g1.Version != absorbed.Version+1 || g2.Version != g1.Version || g1.CustomerID != fmt.Sprint(keptID) {
		t.Fatalf("got %+v and %+v, want the survivor's next version on both", g1, g2)
	}

	// Resuming the merged-away id from before the merge replays the merge
	// and the survivor's changes.
	c2 := dialWS(t, wsURL(e.srv), "graphql-transport-ws", nil)
	c2.init(e.key)
	before := hubCursor(mergedID, into.Version-1)
	c2.subscribe("r", subCustomer, map[string]any{"id": fmt.Sprint(mergedID), "after": before})
	if got := c2.nextChange("r"); got.Kind != c360.ChangeMergedInto {
		t.Fatalf("replay got %+v, want merged_into", got)
	}
	if got := c2.nextChange("r"); got.Version != absorbed.Version || got.CustomerID != fmt.Sprint(keptID) {
		t.Fatalf("replay got %+v, want the survivor's v%d", got, absorbed.Version)
	}
	if got := c2.nextChange("r"); got.Version != absorbed.Version+1 {
		t.Fatalf("replay got %+v, want v%d", got, absorbed.Version+1)
	}
}

// nextByID reads changes until one of subscription id arrives; changes of
// other subscriptions are kept for their turn.
func (c *wsClient) nextByID(id string) change {
	c.t.Helper()
	if q := pendingOf(c)[id]; len(q) > 0 {
		pendingOf(c)[id] = q[1:]
		return q[0]
	}
	for {
		m := c.read()
		if m.Type != "next" {
			c.t.Fatalf("got %s %s, want next", m.Type, m.Payload)
		}
		var p struct {
			Data struct {
				C change `json:"customerChanged"`
			} `json:"data"`
		}
		if err := json.Unmarshal(m.Payload, &p); err != nil {
			c.t.Fatal(err)
		}
		if m.ID == id {
			return p.Data.C
		}
		pendingOf(c)[m.ID] = append(pendingOf(c)[m.ID], p.Data.C)
	}
}

var pending sync.Map // *wsClient -> map[string][]change

func pendingOf(c *wsClient) map[string][]change {
	v, _ := pending.LoadOrStore(c, map[string][]change{})
	return v.(map[string][]change)
}

// A subscriber that stops reading is closed with 1013 (try again later) once its queue fills;
// server memory stays bounded, and it resumes by cursor with nothing lost.
func TestSlowSubscriberIsClosedAndResumes(t *testing.T) {
	e := newRTEnv(t, rtOptions{queue: 2})
	addr := email("dave@example.com")
	id := ingest(t, e.db, e.ws, addr, nil)

	c := dialSlowWS(t, wsURL(e.srv))
	c.init(e.key)
	c.subscribe("s1", subCustomer, map[string]any{"id": fmt.Sprint(id)})
	waitFor(t, "subscription", func() bool { return e.hub.Stats().Streams == 1 })

	// The client reads nothing while large changes pile up.
	blob := strings.Repeat("x", 64<<10)
	n := 0
	for e.hub.Stats().Dropped == 0 {
		if n++; n > 200 {
			t.Fatal("the hub never dropped the slow subscriber")
		}
		ingest(t, e.db, e.ws, addr, map[string]any{"blob": blob, "n": n})
		time.Sleep(5 * time.Millisecond)
	}
	last := int64(n + 1)

	// Now it reads: what was in flight, then the close.
	var lastCursor string
	var lastVersion int64
	for {
		c.c.SetReadDeadline(time.Now().Add(15 * time.Second))
		var m wsMsg
		if err := c.c.ReadJSON(&m); err != nil {
			if code := closeCodeOf(err); code != server.CloseTooSlow {
				t.Fatalf("closed with %v, want %d", err, server.CloseTooSlow)
			}
			break
		}
		if m.Type == "next" {
			var p struct {
				Data struct {
					C change `json:"customerChanged"`
				} `json:"data"`
			}
			json.Unmarshal(m.Payload, &p)
			if lastVersion != 0 && p.Data.C.Version != lastVersion+1 {
				t.Fatalf("got version %d after %d", p.Data.C.Version, lastVersion)
			}
			lastCursor, lastVersion = p.Data.C.Cursor, p.Data.C.Version
		}
	}
	if lastCursor == "" {
		t.Fatal("received no change before the close")
	}

	// Resume from the last cursor received: the rest, in order.
	c2 := dialWS(t, wsURL(e.srv), "graphql-transport-ws", nil)
	c2.init(e.key)
	c2.subscribe("s1", subCustomer, map[string]any{"id": fmt.Sprint(id), "after": lastCursor})
	for v := lastVersion + 1; v <= last; v++ {
		if got := c2.nextChange("s1"); got.Version != v {
			t.Fatalf("after resume got version %d, want %d", got.Version, v)
		}
	}
}

// A subscription of one workspace never sees another workspace's changes.
func TestSubscriptionWorkspaceIsolation(t *testing.T) {
	e := newRTEnv(t, rtOptions{})
	wsB, _, keyB := pgtest.Workspace(t, e.db)
	inB := ingest(t, e.db, wsB, email("eve@example.com"), nil)

	c := dialWS(t, wsURL(e.srv), "graphql-transport-ws", nil)
	c.init(e.key)
	c.subscribe("all", `subscription { customerChanges { `+changeFields+` } }`, nil)
	c.subscribe("theirs", subCustomer, map[string]any{"id": fmt.Sprint(inB)})
	wantError(t, c, "theirs", c360.ENOTFOUND)
	waitFor(t, "subscription", func() bool { return e.hub.Stats().Streams == 1 })

	// B's own subscriber, on the same server, sees B's changes.
	cb := dialWS(t, wsURL(e.srv), "graphql-transport-ws", nil)
	cb.init(keyB)
	cb.subscribe("b", subCustomer, map[string]any{"id": fmt.Sprint(inB)})
	waitFor(t, "subscription", func() bool { return e.hub.Stats().Streams == 2 })
	for i := 0; i < 5; i++ {
		ingest(t, e.db, wsB, email("eve@example.com"), map[string]any{"n": i})
	}
	for i := 0; i < 5; i++ {
		cb.nextChange("b")
	}
	ours := ingest(t, e.db, e.ws, email("frank@example.com"), nil)
	var got change
	c.next("all", "customerChanges", &got)
	if got.CustomerID != fmt.Sprint(ours) {
		t.Fatalf("workspace stream got customer %s, want only %d (B's %d must never appear)", got.CustomerID, ours, inB)
	}

	// A cursor of B's feed is not a position A may resume from.
	c.subscribe("cursor", subCustomer, map[string]any{"id": fmt.Sprint(ours), "after": hubCursor(inB, 1)})
	wantError(t, c, "cursor", c360.EINVALID)
}

// The workspace stream filters by kind: it takes the changes that include
// one of the kinds, of that kind or not.
func TestCustomerChangesFilter(t *testing.T) {
	e := newRTEnv(t, rtOptions{})
	c := dialWS(t, wsURL(e.srv), "graphql-transport-ws", nil)
	c.init(e.key)
	c.subscribe("t", `subscription { customerChanges(filter: {kinds: ["traits"]}) { kind customerId version } }`, nil)
	waitFor(t, "subscription", func() bool { return e.hub.Stats().Streams == 1 })
	id := ingest(t, e.db, e.ws, email("gina@example.com"), nil)              // created without traits: filtered out
	ingest(t, e.db, e.ws, email("gina@example.com"), map[string]any{"a": 2}) // traits
	other := ingest(t, e.db, e.ws, email("hugo@example.com"), map[string]any{"a": 1})
	// Changes of different customers may arrive in either order.
	got := map[string]bool{}
	for range 2 {
		var ch change
		c.next("t", "customerChanges", &ch)
		got[fmt.Sprintf("%s v%d %s", ch.CustomerID, ch.Version, ch.Kind)] = true
	}
	if want := fmt.Sprintf("%d v2 traits", id); !got[want] {
		t.Errorf("got %v, want %s", got, want)
	}
	if want := fmt.Sprintf("%d v1 created", other); !got[want] {
		t.Errorf("got %v, want %s: it set traits", got, want)
	}
	// A kind no change has would select nothing: it is refused, on either
	// subscription.
	c.subscribe("typo", `subscription { customerChanges(filter: {kinds: ["messages"]}) { kind } }`, nil)
	wantError(t, c, "typo", c360.EINVALID)
	c.subscribe("typo2", `subscription($id: ID!) { customerChanged(id: $id, kinds: ["traits", "Message"]) { kind } }`,
		map[string]any{"id": fmt.Sprint(id)})
	wantError(t, c, "typo2", c360.EINVALID)
}

// conversationMessages delivers a customer's new messages as they are now.
func TestConversationMessages(t *testing.T) {
	e := newRTEnv(t, rtOptions{})
	phone := []c360.Identity{{Type: "phone", Value: "+14155550199"}}
	id := ingest(t, e.db, e.ws, phone, nil)
	c := dialWS(t, wsURL(e.srv), "graphql-transport-ws", nil)
	c.init(e.key)
	c.subscribe("m", `subscription($c: ID) { conversationMessages(customerId: $c) { id body direction channel status } }`,
		map[string]any{"c": fmt.Sprint(id)})
	waitFor(t, "subscription", func() bool { return e.hub.Stats().Streams == 1 })
	now := time.Now().UTC()
	if _, err := e.db.Ingest(context.Background(), e.ws, []*c360.Event{{Type: c360.EventMessage, Identities: phone,
		Source: "test", DedupeKey: randomID(), OccurredAt: now, ReceivedAt: now,
		Message: &c360.MessageInput{Channel: "sms", Direction: "inbound", Body: "hello", Status: "received", ProviderID: "SM" + randomID()}}}); err != nil {
		t.Fatal(err)
	}
	var m struct{ ID, Body, Direction, Channel string }
	c.next("m", "conversationMessages", &m)
	if m.Body != "hello" || m.Direction != "inbound" || m.Channel != "sms" || m.ID == "" {
		t.Fatalf("got %+v, want the inbound sms", m)
	}
	c.subscribe("bad", `subscription { conversationMessages { id } }`, nil)
	wantError(t, c, "bad", c360.EINVALID)
}

// A conversationMessages client that resumes with the changeCursor of the
// last message it received gets every message after it exactly once, by
// customer and by conversation, also while messages keep coming; a change
// that is no message (traits) is not delivered, and a cursor of another
// customer is refused.
func TestConversationMessagesResumeWithoutGapOrDuplicate(t *testing.T) {
	e := newRTEnv(t, rtOptions{})
	ctx := context.Background()
	phone := []c360.Identity{{Type: "phone", Value: "+14155550166"}}
	id := ingest(t, e.db, e.ws, phone, nil)
	sms := func(body string) {
		t.Helper()
		now := time.Now().UTC()
		if _, err := e.db.Ingest(ctx, e.ws, []*c360.Event{{Type: c360.EventMessage, Identities: phone,
			Source: "test", DedupeKey: randomID(), OccurredAt: now, ReceivedAt: now,
			Message: &c360.MessageInput{Channel: "sms", Direction: "inbound", Body: body, Status: "received", ProviderID: "SM" + randomID()}}}); err != nil {
			t.Fatal(err)
		}
	}
	type msg struct {
		Body         string
		ChangeCursor *string
	}
	const byCustomer = `subscription($c: ID, $after: String) { conversationMessages(customerId: $c, after: $after) { body changeCursor } }`
	const byConversation = `subscription($c: ID, $after: String) { conversationMessages(conversationId: $c, after: $after) { body changeCursor } }`
	next := func(c *wsClient, want string) string {
		t.Helper()
		var m msg
		c.next("m", "conversationMessages", &m)
		if m.Body != want || m.ChangeCursor == nil || *m.ChangeCursor == "" {
			t.Fatalf("got %q (cursor %v), want %q with its changeCursor", m.Body, m.ChangeCursor, want)
		}
		return *m.ChangeCursor
	}

	c := dialWS(t, wsURL(e.srv), "graphql-transport-ws", nil)
	c.init(e.key)
	c.subscribe("m", byCustomer, map[string]any{"c": fmt.Sprint(id)})
	waitFor(t, "subscription", func() bool { return e.hub.Stats().Streams == 1 })
	sms("one")
	last := next(c, "one")
	c.c.Close()
	waitFor(t, "disconnect", func() bool { return e.hub.Stats().Streams == 0 })

	// Missed while disconnected: two messages, and a change that is none.
	sms("two")
	ingest(t, e.db, e.ws, phone, map[string]any{"plan": "gold"})
	sms("three")
	c2 := dialWS(t, wsURL(e.srv), "graphql-transport-ws", nil)
	c2.init(e.key)
	c2.subscribe("m", byCustomer, map[string]any{"c": fmt.Sprint(id), "after": last})
	next(c2, "two")
	afterThree := next(c2, "three")
	sms("four") // live, after the replay
	next(c2, "four")

	// By conversation, from the cursor of "three": "four" again, then on.
	var conv int64
	if err := e.db.Pool.QueryRow(ctx, `SELECT conversation_id FROM messages WHERE workspace_id = $1 AND body = 'one'`,
		e.ws).Scan(&conv); err != nil {
		t.Fatal(err)
	}
	c3 := dialWS(t, wsURL(e.srv), "graphql-transport-ws", nil)
	c3.init(e.key)
	c3.subscribe("m", byConversation, map[string]any{"c": fmt.Sprint(conv), "after": afterThree})
	next(c3, "four")
	sms("five")
	next(c3, "five")
	next(c2, "five")

	// Outside a subscription, a message has no changeCursor.
	res := gql(t, e.srv, e.key, `query($id: ID!) { customer(id: $id) { conversations(first: 1) { edges { node {
		messages(first: 1) { edges { node { body changeCursor } } } } } } } }`, map[string]any{"id": fmt.Sprint(id)})
	if len(res.Errors) > 0 || !strings.Contains(string(res.Data), `{"body":"five","changeCursor":null}`) {
		t.Fatalf("got %s %+v, want the newest message without a changeCursor", res.Data, res.Errors)
	}

	// A cursor that is not a position of the customer is refused.
	other := ingest(t, e.db, e.ws, email("other-sms@example.com"), nil)
	c3.subscribe("bad", byCustomer, map[string]any{"c": fmt.Sprint(other), "after": afterThree})
	wantError(t, c3, "bad", c360.EINVALID)
	c3.subscribe("garbage", byConversation, map[string]any{"c": fmt.Sprint(conv), "after": "not-a-cursor"})
	wantError(t, c3, "garbage", c360.EINVALID)
}

// conversationMessages(conversationId) follows its conversation when a
// split moves it to a new customer: the messages that arrive afterwards
// are in that customer's feed, which the old owner's never shows.
func TestConversationMessagesFollowASplit(t *testing.T) {
	e := newRTEnv(t, rtOptions{})
	ctx := context.Background()
	phone := []c360.Identity{{Type: "phone", Value: "+14155550177"}}
	owner := ingest(t, e.db, e.ws, []c360.Identity{{Type: "email", Value: "ann@example.com"}, phone[0]}, nil)
	sms := func(body string) string {
		now, sid := time.Now().UTC(), "SM"+randomID()
		if _, err := e.db.Ingest(ctx, e.ws, []*c360.Event{{Type: c360.EventMessage, Identities: phone,
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

	res, err := e.db.SplitIdentity(ctx, e.ws, owner, phone[0], "agent", "family phone")
	if err != nil || res.MovedConversations != 1 {
		t.Fatalf("split: %+v, %v; want the conversation moved", res, err)
	}
	sms("after the split")
	var m struct{ Body string }
	c.next("m", "conversationMessages", &m)
	if m.Body != "after the split" {
		t.Fatalf("got %+v, want the message after the split", m)
	}
}

// Each change is executed and marshaled once per distinct operation, and
// its bytes shared by every subscriber of that operation.
func TestSubscriptionPayloadRenderedOncePerSelection(t *testing.T) {
	e := newRTEnv(t, rtOptions{})
	id := ingest(t, e.db, e.ws, email("hal@example.com"), nil)
	const same, other = 12, 4
	var clients []*wsClient
	for i := 0; i < same+other; i++ {
		c := dialWS(t, wsURL(e.srv), "graphql-transport-ws", nil)
		c.init(e.key)
		q := subCustomer
		if i >= same {
			q = `subscription($id: ID!) { customerChanged(id: $id) { version kind } }`
		}
		c.subscribe("s", q, map[string]any{"id": fmt.Sprint(id)})
		clients = append(clients, c)
	}
	waitFor(t, "subscriptions", func() bool { return e.hub.Stats().Streams == same+other })
	// A first change brings every stream past its initial catch-up read,
	// which renders for its subscriber alone what it finds.
	ingest(t, e.db, e.ws, email("hal@example.com"), map[string]any{"warm": true})
	for _, c := range clients {
		c.read()
	}
	before := e.s.SubscriptionRenders()
	const changes = 3
	for i := 0; i < changes; i++ {
		ingest(t, e.db, e.ws, email("hal@example.com"), map[string]any{"i": i})
	}
	for i := 0; i < changes; i++ {
		var first []byte
		for j, c := range clients {
			m := c.read()
			if m.Type != "next" {
				t.Fatalf("got %s", m.Type)
			}
			if j == 0 {
				first = m.Payload
			} else if j < same && !bytes.Equal(m.Payload, first) {
				t.Fatalf("subscriber %d got %s, want the same bytes as %s", j, m.Payload, first)
			}
		}
	}
	if got, want := e.s.SubscriptionRenders()-before, int64(changes*2); got != want {
		t.Fatalf("renders = %d, want %d (one per change and distinct selection, for %d subscribers)", got, want, same+other)
	}
}

// SSE serves the same subscriptions with HTTP Bearer authentication.
func TestSubscriptionOverSSE(t *testing.T) {
	e := newRTEnv(t, rtOptions{})
	id := ingest(t, e.db, e.ws, email("ivy@example.com"), nil)
	vars := map[string]any{"id": fmt.Sprint(id)}
	resp := postSSE(t, context.Background(), e.srv.URL, "", subCustomer, vars)
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("without key: status %d, want 401", resp.StatusCode)
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	resp = postSSE(t, ctx, e.srv.URL, e.key, subCustomer, vars)
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
		t.Fatalf("status %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	waitFor(t, "subscription", func() bool { return e.hub.Stats().Streams == 1 })
	ingest(t, e.db, e.ws, email("ivy@example.com"), map[string]any{"x": 1})
	sse := newSSEReader(resp.Body)
	data, ok := sse.next()
	if !ok {
		t.Fatalf("stream ended: %v", sse.err())
	}
	var p struct {
		Data struct {
			C change `json:"customerChanged"`
		} `json:"data"`
	}
	if err := json.Unmarshal([]byte(data), &p); err != nil {
		t.Fatalf("decode %s: %v", data, err)
	}
	if p.Data.C.Version != 2 || p.Data.C.Kind != c360.ChangeTraits {
		t.Fatalf("got %+v, want traits v2", p.Data.C)
	}
}

// Each change is rendered with the customer as it is then: over SSE, where
// one HTTP request carries every change, the request's loaders must not
// answer a later change with what an earlier one loaded.
func TestSubscriptionChildrenAreCurrentForEachChange(t *testing.T) {
	e := newRTEnv(t, rtOptions{})
	phone := []c360.Identity{{Type: "phone", Value: "+14155550177"}}
	id := ingest(t, e.db, e.ws, phone, nil)
	const sub = `subscription($id: ID!) { customerChanged(id: $id) { version
		customer { identities { value } conversations(first: 5) { edges { node { channel } } } } } }`
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	resp := postSSE(t, ctx, e.srv.URL, e.key, sub, map[string]any{"id": fmt.Sprint(id)})
	waitFor(t, "subscription", func() bool { return e.hub.Stats().Streams == 1 })
	sse := newSSEReader(resp.Body)
	// at reads payloads until the one of version v, and returns how many
	// identities and conversations it showed.
	at := func(v int64) (idents, convs int) {
		t.Helper()
		for data, ok := sse.next(); ok; data, ok = sse.next() {
			var p struct {
				Data struct {
					C struct {
						Version  int64
						Customer struct {
							Identities    []struct{ Value string }
							Conversations struct {
								Edges []struct{ Node struct{ Channel string } }
							}
						}
					} `json:"customerChanged"`
				} `json:"data"`
			}
			if err := json.Unmarshal([]byte(data), &p); err != nil {
				t.Fatalf("decode %s: %v", data, err)
			}
			if p.Data.C.Version == v {
				return len(p.Data.C.Customer.Identities), len(p.Data.C.Customer.Conversations.Edges)
			}
		}
		t.Fatalf("stream ended before version %d: %v", v, sse.err())
		return 0, 0
	}
	version := func() int64 {
		var v int64
		if err := e.db.Pool.QueryRow(ctx, `SELECT version FROM customers WHERE id = $1`, id).Scan(&v); err != nil {
			t.Fatal(err)
		}
		return v
	}
	for i, ch := range []string{"sms", "whatsapp"} {
		now := time.Now().UTC()
		ids := append(phone, c360.Identity{Type: "email", Value: fmt.Sprintf("una%d@example.com", i)})
		if _, err := e.db.Ingest(ctx, e.ws, []*c360.Event{{Type: c360.EventMessage, Identities: ids, Source: "test",
			DedupeKey: randomID(), OccurredAt: now, ReceivedAt: now,
			Message: &c360.MessageInput{Channel: ch, Direction: "inbound", Body: "hello", Status: "received"}}}); err != nil {
			t.Fatal(err)
		}
		if idents, convs := at(version()); idents != i+2 || convs != i+1 {
			t.Fatalf("after a message on %s: the change's customer shows %d identities and %d conversations, want %d and %d",
				ch, idents, convs, i+2, i+1)
		}
	}
}

// An SSE client that stops reading does not hold its stream: once a write
// to it times out, the stream ends and the server lets its subscription go.
func TestSSEClientThatStopsReadingIsLetGo(t *testing.T) {
	e := newRTEnv(t, rtOptions{queue: 4, cfg: server.Config{Websocket: server.WebsocketConfig{WriteTimeout: 300 * time.Millisecond}}})
	id := ingest(t, e.db, e.ws, email("stalls@example.com"), nil)
	body, _ := json.Marshal(map[string]any{"query": subCustomer, "variables": map[string]any{"id": fmt.Sprint(id)}})
	conn, err := net.Dial("tcp", strings.TrimPrefix(e.srv.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	// A small receive buffer, never read: the server's writes soon block.
	conn.(*net.TCPConn).SetReadBuffer(4 << 10)
	fmt.Fprintf(conn, "POST /graphql HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nAccept: text/event-stream\r\n"+
		"Authorization: Bearer %s\r\nContent-Length: %d\r\n\r\n%s", e.key, len(body), body)
	waitFor(t, "subscription", func() bool { return e.hub.Stats().Streams == 1 })
	big := strings.Repeat("x", 32<<10)
	for i := range 100 {
		ingest(t, e.db, e.ws, email("stalls@example.com"), map[string]any{"blob": fmt.Sprint(i, big)})
		if e.hub.Stats().Streams == 0 {
			break
		}
	}
	waitFor(t, "the stalled stream let go", func() bool { return e.hub.Stats().Streams == 0 })
}

// A key revoked while its SSE stream is open ends the stream at the next
// change, with UNAUTHENTICATED, instead of delivering it.
func TestSSEStreamEndsWhenItsKeyIsRevoked(t *testing.T) {
	e := newRTEnv(t, rtOptions{})
	ctx := context.Background()
	key, k, err := e.db.IssueAPIKey(ctx, e.ws, c360.RoleAdmin, nil)
	if err != nil {
		t.Fatal(err)
	}
	id := ingest(t, e.db, e.ws, email("sse-revoked@example.com"), nil)
	resp := postSSE(t, ctx, e.srv.URL, key, subCustomer, map[string]any{"id": fmt.Sprint(id)})
	waitFor(t, "subscription", func() bool { return e.hub.Stats().Streams == 1 })
	if _, _, err := e.db.RevokeAPIKey(ctx, e.ws, k.Prefix); err != nil {
		t.Fatal(err)
	}
	ingest(t, e.db, e.ws, email("sse-revoked@example.com"), map[string]any{"after": "revocation"})
	sse := newSSEReader(resp.Body)
	for data, ok := sse.next(); ok; data, ok = sse.next() {
		if strings.Contains(data, "revocation") {
			t.Fatalf("a change after the revocation was delivered: %s", data)
		}
		if !strings.Contains(data, c360.EUNAUTHENTICATED) {
			t.Fatalf("got %s, want the stream ended with %s", data, c360.EUNAUTHENTICATED)
		}
		waitFor(t, "the stream let go", func() bool { return e.hub.Stats().Streams == 0 })
		return
	}
	t.Fatalf("stream ended without a word: %v", sse.err())
}

// A query persisted over HTTP (automatic persisted queries) is known over
// websockets too: both run on one persisted-query cache.
func TestPersistedQueryKnownOverWebsockets(t *testing.T) {
	e := newRTEnv(t, rtOptions{})
	const query = `{ customers(first: 1) { edges { node { id } } } }`
	sum := sha256.Sum256([]byte(query))
	ext := map[string]any{"persistedQuery": map[string]any{"version": 1, "sha256Hash": hex.EncodeToString(sum[:])}}
	body, _ := json.Marshal(map[string]any{"query": query, "extensions": ext})
	req, _ := http.NewRequest(http.MethodPost, e.srv.URL+"/graphql", bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+e.key)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != 200 || !bytes.Contains(b, []byte(`"customers"`)) {
		t.Fatalf("persisting over HTTP: %d %s", res.StatusCode, b)
	}

	c := dialWS(t, wsURL(e.srv), "graphql-transport-ws", nil)
	c.init(e.key)
	c.send("subscribe", "1", map[string]any{"extensions": ext}) // the hash alone
	m := c.read()
	if m.Type != "next" || !bytes.Contains(m.Payload, []byte(`"customers"`)) {
		t.Fatalf("the hash alone over a websocket: %s %s, want the query's data", m.Type, m.Payload)
	}
}

// A message that also changes something else is still a message. A first
// WhatsApp message from a customer without a name gives the sender's
// profile name, so its change is of kind traits; a first contact creates
// its customer, a change of kind created. conversationMessages and the
// kinds filters that ask for messages get them all, live and on resume,
// and a change without a message is still filtered out.
func TestMessagesThatChangeMoreReachMessageSubscribers(t *testing.T) {
	e := newRTEnv(t, rtOptions{})
	ctx := context.Background()
	slug, secret := workspaceSlug(t, e), "whatsapp-app-secret"
	if _, err := e.db.UpdateWorkspace(ctx, slug, c360.WorkspaceUpdate{WhatsAppAppSecret: &secret}); err != nil {
		t.Fatal(err)
	}
	(&whatsapp.Handler{Workspaces: e.db, Ingester: e.db, StatusOf: server.StatusOf,
		Logger: slog.New(slog.DiscardHandler), Now: e.db.Now}).Register(e.s)
	n := 0
	whatsApp := func(from, body string) {
		t.Helper()
		n++
		payload := fmt.Sprintf(`{"object":"whatsapp_business_account","entry":[{"id":"1","changes":[{"field":"messages","value":`+
			`{"messaging_product":"whatsapp","metadata":{"display_phone_number":"15550783881","phone_number_id":"1"},`+
			`"contacts":[{"profile":{"name":"Kerry"},"wa_id":%q}],`+
			`"messages":[{"from":%q,"id":"wamid.MC%d","timestamp":"%d","type":"text","text":{"body":%q}}]}}]}]}`,
			from, from, n, time.Now().Unix(), body)
		mac := hmac.New(sha256.New, []byte(secret))
		mac.Write([]byte(payload))
		req, _ := http.NewRequest(http.MethodPost, e.srv.URL+"/webhooks/whatsapp/"+slug, strings.NewReader(payload))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("X-Hub-Signature-256", "sha256="+hex.EncodeToString(mac.Sum(nil)))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("whatsapp webhook: status %d", resp.StatusCode)
		}
	}
	phone := []c360.Identity{{Type: "phone", Value: "+16505551234"}}
	cust := ingest(t, e.db, e.ws, phone, nil) // known by phone, without a name
	subscribe := func(query string, vars map[string]any) *wsClient {
		t.Helper()
		c := dialWS(t, wsURL(e.srv), "graphql-transport-ws", nil)
		c.init(e.key)
		c.subscribe("s", query, vars)
		return c
	}
	const messageKinds = `subscription($id: ID!, $after: String) { customerChanged(id: $id, after: $after, kinds: ["message"]) { cursor kind version diff } }`
	messages := subscribe(`subscription($c: ID) { conversationMessages(customerId: $c) { body } }`, map[string]any{"c": fmt.Sprint(cust)})
	changed := subscribe(messageKinds, map[string]any{"id": fmt.Sprint(cust)})
	workspace := subscribe(`subscription { customerChanges(filter: {kinds: ["message"]}) { kind customerId version diff } }`, nil)
	waitFor(t, "the subscriptions to start", func() bool { return e.hub.Stats().Streams == 3 })

	whatsApp("16505551234", "first")                             // v2: gives the name, kind traits
	ingest(t, e.db, e.ws, phone, map[string]any{"plan": "gold"}) // v3: no message
	whatsApp("16505551234", "second")                            // v4: kind message
	whatsApp("16505551299", "hello")                             // a new customer's v1: kind created

	for _, want := range []string{"first", "second"} {
		var m struct{ Body string }
		messages.next("s", "conversationMessages", &m)
		if m.Body != want {
			t.Fatalf("conversationMessages got %q, want %q", m.Body, want)
		}
	}
	wantMessages := func(c *wsClient, what string) {
		t.Helper()
		for _, want := range []struct {
			version int64
			kind    string
		}{{2, c360.ChangeTraits}, {4, c360.ChangeMessage}} {
			got := c.nextChange("s")
			if got.Version != want.version || got.Kind != want.kind || got.Diff["message"] == nil {
				t.Fatalf("%s got %s v%d %v, want the %s change v%d with its message", what, got.Kind, got.Version, got.Diff, want.kind, want.version)
			}
		}
	}
	wantMessages(changed, "customerChanged(kinds: message)")

	got := map[string]bool{}
	for range 3 {
		var ch change
		workspace.next("s", "customerChanges", &ch)
		if ch.Diff["message"] == nil {
			t.Fatalf("customerChanges(kinds: message) got %+v, want a change with a message", ch)
		}
		got[fmt.Sprintf("%s v%d %s", ch.CustomerID, ch.Version, ch.Kind)] = true
	}
	for _, want := range []string{fmt.Sprintf("%d v2 traits", cust), fmt.Sprintf("%d v4 message", cust)} {
		if !got[want] {
			t.Errorf("customerChanges(kinds: message) got %v, want %s among them", got, want)
		}
	}
	var created bool
	for k := range got {
		created = created || strings.HasSuffix(k, " v1 created")
	}
	if !created {
		t.Errorf("customerChanges(kinds: message) got %v, want the first contact's created change", got)
	}

	// Resuming replays through the same filter.
	resumed := subscribe(messageKinds, map[string]any{"id": fmt.Sprint(cust), "after": hubCursor(cust, 1)})
	wantMessages(resumed, "customerChanged(after: v1, kinds: message)")
}

// A dialer watching a customer's consent (kinds: ["consent"]) is told when
// a merge opts the customer's SMS in and when a split opts it out again:
// merges and splits record the consents they change (docs/realtime.md,
// "Kinds").
func TestMergesAndSplitsReachConsentSubscribers(t *testing.T) {
	e := newRTEnv(t, rtOptions{})
	ctx := context.Background()
	t0 := time.Now().Add(-time.Hour)
	event := func(key string, at time.Duration, consent string, ids ...c360.Identity) int64 {
		t.Helper()
		ev := &c360.Event{Type: c360.EventTrack, Name: "Seen", Source: "test", DedupeKey: key, OccurredAt: t0.Add(at), Identities: ids}
		if consent != "" {
			ev.Consent = &c360.ConsentInput{Channel: "sms", Status: consent}
		}
		res, err := e.db.Ingest(ctx, e.ws, []*c360.Event{ev})
		if err != nil {
			t.Fatalf("ingest %s: %v", key, err)
		}
		return res[0].CustomerID
	}
	q, p := c360.Identity{Type: "phone", Value: "+14155550141"}, c360.Identity{Type: "phone", Value: "+14155550142"}
	u := c360.Identity{Type: "user_id", Value: "u-dial"}
	s := event("s", 0, "", u, q)
	event("s-stop", time.Minute, c360.ConsentOptedOut, q)
	event("m-start", 5*time.Minute, c360.ConsentOptedIn, p)

	c := dialWS(t, wsURL(e.srv), "graphql-transport-ws", nil)
	c.init(e.key)
	c.subscribe("s", `subscription($id: ID!) { customerChanged(id: $id, kinds: ["consent"]) { kind version diff } }`,
		map[string]any{"id": fmt.Sprint(s)})
	waitFor(t, "the subscription to start", func() bool { return e.hub.Stats().Streams == 1 })

	smsStatus := func(ch change) any {
		list, _ := ch.Diff["consents"].([]any)
		for _, x := range list {
			if m, _ := x.(map[string]any); m["channel"] == "sms" {
				return m["status"]
			}
		}
		return nil
	}
	if got := event("link", 6*time.Minute, "", u, p); got != s {
		t.Fatalf("linking event went to %d, want %d", got, s)
	}
	if ch := c.nextChange("s"); ch.Kind != c360.ChangeMerged || smsStatus(ch) != c360.ConsentOptedIn {
		t.Fatalf("after the merge got %s %v, want the merged change with sms opted_in", ch.Kind, ch.Diff)
	}
	if _, err := e.db.SplitIdentity(ctx, e.ws, s, p, "agent", "two people"); err != nil {
		t.Fatal(err)
	}
	if ch := c.nextChange("s"); ch.Kind != c360.ChangeSplit || smsStatus(ch) != c360.ConsentOptedOut {
		t.Fatalf("after the split got %s %v, want the split change with sms opted_out", ch.Kind, ch.Diff)
	}
}
