package server_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/c360dev/c360"
	"github.com/c360dev/c360/hub"
	"github.com/c360dev/c360/postgres"
	"github.com/c360dev/c360/resolver"
	"github.com/c360dev/c360/server"
)

// downFeed is the store as the hub reads it, whose reads of a customer's
// state (CustomerState, MergeVersion: a stream's, never the hub's own)
// fail with UNAVAILABLE while down is set, as during a PostgreSQL restart.
type downFeed struct {
	*postgres.DB
	down   atomic.Bool
	failed atomic.Int64
}

func (f *downFeed) unavailable() error {
	f.failed.Add(1)
	return c360.Errorf(c360.EUNAVAILABLE, "the database is unavailable; retry")
}

func (f *downFeed) CustomerState(ctx context.Context, ws, id int64) (int64, int64, error) {
	if f.down.Load() {
		return 0, 0, f.unavailable()
	}
	return f.DB.CustomerState(ctx, ws, id)
}

func (f *downFeed) MergeVersion(ctx context.Context, ws, survivor, merged int64) (int64, error) {
	if f.down.Load() {
		return 0, f.unavailable()
	}
	return f.DB.MergeVersion(ctx, ws, survivor, merged)
}

// outageEnv is a real-time server whose feed can be taken down, with two
// customers subscribed to on one websocket, a and b, about to be merged.
type outageEnv struct {
	*rtEnv
	feed *downFeed
	c    *wsClient
	a, b int64
}

func newOutageEnv(t *testing.T, readRetry time.Duration) *outageEnv {
	t.Helper()
	var feed *downFeed
	e := newRTEnv(t, rtOptions{readRetry: readRetry, feed: func(db *postgres.DB) hub.Feed {
		feed = &downFeed{DB: db}
		return feed
	}})
	o := &outageEnv{rtEnv: e, feed: feed}
	o.a = ingest(t, e.db, e.ws, email("olga@example.com"), map[string]any{"name": "Olga"})
	o.b = ingest(t, e.db, e.ws, []c360.Identity{{Type: "phone", Value: "+14155550188"}}, nil)
	o.c = dialWS(t, wsURL(e.srv), "graphql-transport-ws", nil)
	o.c.init(e.key)
	o.c.subscribe("a", subCustomer, map[string]any{"id": fmt.Sprint(o.a)})
	o.c.subscribe("b", subCustomer, map[string]any{"id": fmt.Sprint(o.b)})
	waitFor(t, "subscriptions", func() bool { return e.hub.Stats().Streams == 2 })
	return o
}

// merge merges b into a (the oldest survives) while the feed is down.
// b's stream must read the merge (MergeVersion) to go on with a's changes.
func (o *outageEnv) merge(t *testing.T) {
	t.Helper()
	o.feed.down.Store(true)
	ingest(t, o.db, o.ws, []c360.Identity{{Type: "email", Value: "olga@example.com"}, {Type: "phone", Value: "+14155550188"}}, nil)
	if _, survivor, err := o.db.CustomerState(context.Background(), o.ws, o.b); err != nil || survivor != o.a {
		t.Fatalf("b's survivor = %d, %v, want a (%d)", survivor, err, o.a)
	}
}

// A stream whose read fails with UNAVAILABLE (PostgreSQL restarting) while
// it follows a merge reads again until the database is back, and delivers
// the merged_into change and what follows. It used to end the subscription
// with an error and complete, which clients take for a normal end.
func TestSubscriptionRidesOutABriefDatabaseOutage(t *testing.T) {
	o := newOutageEnv(t, 0) // the default: 10 s of retries
	o.merge(t)
	waitFor(t, "a failed read retried", func() bool { return o.feed.failed.Load() >= 2 })
	o.feed.down.Store(false)

	into := o.c.nextByID("b")
	if into.Kind != c360.ChangeMergedInto || into.CustomerID != fmt.Sprint(o.b) || into.Diff["survivorId"] != fmt.Sprint(o.a) {
		t.Fatalf("got %+v, want merged_into %d -> %d", into, o.b, o.a)
	}
	if absorbed := o.c.nextByID("b"); absorbed.CustomerID != fmt.Sprint(o.a) {
		t.Fatalf("after merged_into got %+v, want the survivor's change", absorbed)
	}
	ingest(t, o.db, o.ws, email("olga@example.com"), map[string]any{"vip": true})
	if got := o.c.nextByID("b"); got.CustomerID != fmt.Sprint(o.a) || got.Kind != c360.ChangeTraits {
		t.Fatalf("then got %+v, want the survivor's traits change", got)
	}
}

// A stream whose reads still fail once its retries are spent closes its
// websocket with 1013 (try again later), which graphql-ws retries: the
// client resumes with after, nothing lost. Over SSE the stream ends with
// an error of code UNAVAILABLE. The same holds when the database fails a
// subscription as it starts.
func TestSubscriptionDuringALongDatabaseOutage(t *testing.T) {
	t.Run("following a merge", func(t *testing.T) {
		o := newOutageEnv(t, 300*time.Millisecond)
		o.merge(t)
		started := time.Now()
		code := closeAfterMessages(t, o.c, "b")
		if code != server.CloseUnavailable {
			t.Fatalf("closed with %d, want %d (try again later)", code, server.CloseUnavailable)
		}
		if d := time.Since(started); d < 250*time.Millisecond {
			t.Fatalf("closed after %v, before the reads were retried for 300ms", d)
		}

		// The database is back: the client resumes from its last cursor,
		// b's last change before the merge (as it was when it
		// subscribed), and misses nothing.
		o.feed.down.Store(false)
		v, _, err := o.db.CustomerState(context.Background(), o.ws, o.b)
		if err != nil {
			t.Fatal(err)
		}
		c := dialWS(t, wsURL(o.srv), "graphql-transport-ws", nil)
		c.init(o.key)
		c.subscribe("b", subCustomer, map[string]any{"id": fmt.Sprint(o.b), "after": hubCursor(o.b, v-1)})
		if got := c.nextChange("b"); got.Kind != c360.ChangeMergedInto || got.CustomerID != fmt.Sprint(o.b) {
			t.Fatalf("resumed: got %+v, want b's merged_into", got)
		}
		if got := c.nextChange("b"); got.CustomerID != fmt.Sprint(o.a) {
			t.Fatalf("resumed: got %+v, want the survivor's change", got)
		}
	})

	t.Run("subscribing", func(t *testing.T) {
		o := newOutageEnv(t, 300*time.Millisecond)
		o.feed.down.Store(true)
		o.c.subscribe("c", subCustomer, map[string]any{"id": fmt.Sprint(o.a)})
		if code := closeAfterMessages(t, o.c, "c"); code != server.CloseUnavailable {
			t.Fatalf("closed with %d, want %d (try again later)", code, server.CloseUnavailable)
		}
	})

	t.Run("over SSE", func(t *testing.T) {
		o := newOutageEnv(t, 300*time.Millisecond)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		resp := postSSE(t, ctx, o.srv.URL, o.key, subCustomer, map[string]any{"id": fmt.Sprint(o.b)})
		waitFor(t, "the SSE subscription", func() bool { return o.hub.Stats().Streams == 3 })
		o.merge(t)
		var errs []string
		sse := newSSEReader(resp.Body)
		for data, ok := sse.next(); ok; data, ok = sse.next() {
			var p struct {
				Errors []struct {
					Extensions struct{ Code string } `json:"extensions"`
				} `json:"errors"`
			}
			if err := json.Unmarshal([]byte(data), &p); err != nil {
				t.Fatalf("decode %s: %v", data, err)
			}
			for _, e := range p.Errors {
				errs = append(errs, e.Extensions.Code)
			}
		}
		if len(errs) != 1 || errs[0] != c360.EUNAVAILABLE {
			t.Fatalf("the stream ended with errors %v (%v), want one UNAVAILABLE", errs, sse.err())
		}
	})
}

// closeAfterMessages reads until the server closes the connection and
// returns the close code. Changes of other subscriptions may come first;
// an error or a complete for subscription id fails the test: the client
// would take it for the subscription's end.
func closeAfterMessages(t *testing.T, c *wsClient, id string) int {
	t.Helper()
	for {
		c.c.SetReadDeadline(time.Now().Add(10 * time.Second))
		var m wsMsg
		if err := c.c.ReadJSON(&m); err != nil {
			code := closeCodeOf(err)
			if code == 0 {
				t.Fatalf("want a close frame, got %v", err)
			}
			return code
		}
		if m.ID == id && (m.Type != "next" || bytes.Contains(m.Payload, []byte(`"errors"`))) {
			t.Fatalf("subscription %s got %s %s, want the connection closed to resume", id, m.Type, m.Payload)
		}
	}
}

// downRealtime is the store as conversationMessages reads it besides the
// feed, whose next reads of a message or of a conversation's owner, as
// many as failing says, fail with UNAVAILABLE.
type downRealtime struct {
	*postgres.DB
	failing atomic.Int64
}

func (s *downRealtime) down() bool {
	for {
		n := s.failing.Load()
		if n <= 0 {
			return false
		}
		if s.failing.CompareAndSwap(n, n-1) {
			return true
		}
	}
}

func (s *downRealtime) MessageOfChange(ctx context.Context, ws, id int64) (*c360.Message, error) {
	if s.down() {
		return nil, c360.Errorf(c360.EUNAVAILABLE, "the database is unavailable; retry")
	}
	return s.DB.MessageOfChange(ctx, ws, id)
}

func (s *downRealtime) ConversationOwner(ctx context.Context, ws, conv int64) (int64, error) {
	if s.down() {
		return 0, c360.Errorf(c360.EUNAVAILABLE, "the database is unavailable; retry")
	}
	return s.DB.ConversationOwner(ctx, ws, conv)
}

// messagesEnv is a real-time server whose reads of messages and
// conversations can fail (not the feed's), with a customer who texts from
// phone.
type messagesEnv struct {
	*rtEnv
	store *downRealtime
	phone c360.Identity
	owner int64
}

func newMessagesEnv(t *testing.T, readRetry time.Duration) *messagesEnv {
	t.Helper()
	var store *downRealtime
	e := newRTEnv(t, rtOptions{readRetry: readRetry, realtime: func(db *postgres.DB) resolver.RealtimeStore {
		store = &downRealtime{DB: db}
		return store
	}})
	m := &messagesEnv{rtEnv: e, store: store, phone: c360.Identity{Type: "phone", Value: "+14155550166"}}
	m.owner = ingest(t, e.db, e.ws, []c360.Identity{{Type: "email", Value: "ida@example.com"}, m.phone}, nil)
	return m
}

// sms ingests an inbound SMS from the phone and returns its conversation.
func (m *messagesEnv) sms(t *testing.T, body string) int64 {
	t.Helper()
	ctx, now, sid := context.Background(), time.Now().UTC(), "SM"+randomID()
	if _, err := m.db.Ingest(ctx, m.ws, []*c360.Event{{Type: c360.EventMessage, Identities: []c360.Identity{m.phone},
		Source: "test", DedupeKey: randomID(), OccurredAt: now, ReceivedAt: now,
		Message: &c360.MessageInput{Channel: "sms", Direction: "inbound", Body: body, Status: "received", ProviderID: sid}}}); err != nil {
		t.Fatal(err)
	}
	var conv int64
	if err := m.db.Pool.QueryRow(ctx, `SELECT conversation_id FROM messages WHERE workspace_id = $1 AND provider_id = $2`,
		m.ws, sid).Scan(&conv); err != nil {
		t.Fatal(err)
	}
	return conv
}

const subMessages = `subscription($conv: ID, $cust: ID) { conversationMessages(conversationId: $conv, customerId: $cust) { body } }`

// conversationMessages reads the message a change names, and a
// conversation's owner after a split, with the same retries as a stream's
// reads of the feed: a brief outage delays the message and loses none. It
// used to close the websocket with 1013 at the first UNAVAILABLE, and the
// subscription, which has no after, could not get the message back.
func TestConversationMessagesRideOutABriefDatabaseOutage(t *testing.T) {
	t.Run("reading the message", func(t *testing.T) {
		m := newMessagesEnv(t, 0) // the default: 10 s of retries
		c := dialWS(t, wsURL(m.srv), "graphql-transport-ws", nil)
		c.init(m.key)
		c.subscribe("m", subMessages, map[string]any{"cust": fmt.Sprint(m.owner)})
		waitFor(t, "subscription", func() bool { return m.hub.Stats().Streams == 1 })
		m.store.failing.Store(2)
		m.sms(t, "hello")
		var got struct{ Body string }
		c.next("m", "conversationMessages", &got)
		if got.Body != "hello" {
			t.Fatalf("got %+v, want the message sent during the outage", got)
		}
	})

	t.Run("following a split", func(t *testing.T) {
		m := newMessagesEnv(t, 0)
		conv := m.sms(t, "before")
		c := dialWS(t, wsURL(m.srv), "graphql-transport-ws", nil)
		c.init(m.key)
		c.subscribe("m", subMessages, map[string]any{"conv": fmt.Sprint(conv)})
		waitFor(t, "subscription", func() bool { return m.hub.Stats().Streams == 1 })
		m.store.failing.Store(2)
		if res, err := m.db.SplitIdentity(context.Background(), m.ws, m.owner, m.phone, "agent", "family phone"); err != nil || res.MovedConversations != 1 {
			t.Fatalf("split: %+v, %v; want the conversation moved", res, err)
		}
		m.sms(t, "after the split")
		var got struct{ Body string }
		c.next("m", "conversationMessages", &got)
		if got.Body != "after the split" {
			t.Fatalf("got %+v, want the message after the split", got)
		}
	})
}

// When the message cannot be read for the whole of the retries, the
// websocket is closed with 1013 (try again later), never the subscription
// completed, which a graphql-ws client would take for its end.
func TestConversationMessagesDuringALongDatabaseOutage(t *testing.T) {
	m := newMessagesEnv(t, 300*time.Millisecond)
	c := dialWS(t, wsURL(m.srv), "graphql-transport-ws", nil)
	c.init(m.key)
	c.subscribe("m", subMessages, map[string]any{"cust": fmt.Sprint(m.owner)})
	waitFor(t, "subscription", func() bool { return m.hub.Stats().Streams == 1 })
	m.store.failing.Store(1 << 30)
	started := time.Now()
	m.sms(t, "hello")
	if code := closeAfterMessages(t, c, "m"); code != server.CloseUnavailable {
		t.Fatalf("closed with %d, want %d (try again later)", code, server.CloseUnavailable)
	}
	if d := time.Since(started); d < 250*time.Millisecond {
		t.Fatalf("closed after %v, before the read was retried for 300ms", d)
	}
}

// Every subscriber of a message change gets its 1013 after one round of
// retries of the message's read, which they share. The read's failure used
// to be dropped and the waiting subscribers read again one after another:
// the k-th was closed after k rounds, not the ReadRetry the docs promise.
func TestConversationMessagesSubscribersShareALongOutage(t *testing.T) {
	const readRetry, subscribers = 400 * time.Millisecond, 5
	m := newMessagesEnv(t, readRetry)
	cs := make([]*wsClient, subscribers)
	for i := range cs {
		cs[i] = dialWS(t, wsURL(m.srv), "graphql-transport-ws", nil)
		cs[i].init(m.key)
		cs[i].subscribe("m", subMessages, map[string]any{"cust": fmt.Sprint(m.owner)})
	}
	waitFor(t, "subscriptions", func() bool { return m.hub.Stats().Streams == subscribers })
	m.store.failing.Store(1 << 30)
	started := time.Now()
	m.sms(t, "hello")
	// The connections are closed independently of the order they are
	// read in: the time after the last is the time the last was closed.
	for _, c := range cs {
		if code := closeAfterMessages(t, c, "m"); code != server.CloseUnavailable {
			t.Fatalf("closed with %d, want %d (try again later)", code, server.CloseUnavailable)
		}
	}
	last := time.Since(started)
	if last > 2*readRetry+500*time.Millisecond {
		t.Fatalf("the last of %d subscribers was closed after %v, want about one round of retries (%v)", subscribers, last, readRetry)
	}
}

// A client that completes a subscription while it is still retrying its
// first reads wants nothing more of it: the connection, with its other
// subscriptions, stays open. It used to be closed with 1013, as if the
// database had stayed down.
func TestCompletingASubscriptionWhileItRetries(t *testing.T) {
	o := newOutageEnv(t, 0) // 10 s of retries: "c" is still retrying when completed
	o.feed.down.Store(true)
	o.c.subscribe("c", subCustomer, map[string]any{"id": fmt.Sprint(o.a)})
	waitFor(t, "c's first read failed", func() bool { return o.feed.failed.Load() >= 1 })
	o.c.send("complete", "c", nil)
	// gqlgen reads the connection's messages in order: its pong says it
	// cancelled "c" before the feed comes back.
	o.c.send("ping", "", nil)
	for {
		o.c.c.SetReadDeadline(time.Now().Add(10 * time.Second))
		var m wsMsg
		if err := o.c.c.ReadJSON(&m); err != nil {
			t.Fatalf("waiting for pong: %v (close code %d)", err, closeCodeOf(err))
		}
		if m.Type == "pong" {
			break
		}
		t.Fatalf("got %s %q %s, want pong", m.Type, m.ID, m.Payload)
	}
	o.feed.down.Store(false)

	ingest(t, o.db, o.ws, email("olga@example.com"), map[string]any{"vip": true})
	if got := o.c.nextChange("a"); got.CustomerID != fmt.Sprint(o.a) || got.Kind != c360.ChangeTraits {
		t.Fatalf("got %+v, want a's traits change", got)
	}
}

// downKeys is the store as API key service, whose Authenticate fails
// with UNAVAILABLE for the key "down" (the database did not answer the
// key's lookup) and with an error of no code for the key "broken".
type downKeys struct{ *postgres.DB }

func (k downKeys) Authenticate(ctx context.Context, key string) (*c360.Principal, error) {
	switch key {
	case "down":
		return nil, c360.Errorf(c360.EUNAVAILABLE, "the database is unavailable; retry")
	case "broken":
		return nil, fmt.Errorf("decode key row: unexpected column")
	}
	return k.DB.Authenticate(ctx, key)
}

// A connection_init whose key cannot be looked up because the database
// is unavailable closes with 1013 (try again later), which graphql-ws
// retries, as every other database outage closes a websocket: with 4500,
// which graphql-ws takes for fatal, a client never reconnected once the
// database was back (docs/realtime.md says to retry). A failure that is
// not the database's keeps 4500, in both protocols.
func TestWebsocketInitDuringADatabaseOutage(t *testing.T) {
	e := newRTEnv(t, rtOptions{auth: func(db *postgres.DB) c360.APIKeyService { return downKeys{db} }})
	for _, protocol := range []string{"graphql-transport-ws", "graphql-ws"} {
		for key, want := range map[string]int{"down": server.CloseUnavailable, "broken": server.CloseInternal} {
			c := dialWS(t, wsURL(e.srv), protocol, nil)
			c.send("connection_init", "", map[string]any{"authorization": "Bearer " + key})
			if got := c.closeCode(); got != want {
				t.Errorf("%s, key %q: close code %d, want %d", protocol, key, got, want)
			}
		}
	}
	// The database is back: the client's retry is served.
	c := dialWS(t, wsURL(e.srv), "graphql-transport-ws", nil)
	c.init(e.key)
}
