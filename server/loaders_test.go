package server_test

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/c360dev/c360"
	"github.com/c360dev/c360/bench/seed"
	"github.com/c360dev/c360/internal/pgtest"
	"github.com/c360dev/c360/postgres"
)

const profileQuery = `query($first: Int!) { customers(first: $first) { edges { node {
	id
	identities { type value }
	consents { channel status }
	events(first: 5) { edges { node { id type } } }
	conversations(first: 3) { edges { node { id channel messages(first: 2) { edges { node { id body } } } } } }
} } } }`

type profilePage struct {
	Customers struct {
		Edges []struct {
			Node struct {
				ID         string
				Identities []identityJSON
				Consents   []struct{ Channel, Status string }
				Events     struct {
					Edges []struct{ Node struct{ ID, Type string } }
				}
				Conversations struct {
					Edges []struct {
						Node struct {
							ID, Channel string
							Messages    struct {
								Edges []struct{ Node struct{ ID, Body string } }
							}
						}
					}
				}
			}
		}
	}
}

// seedProfiles stores n customers in workspace ws, each with an email and
// a phone, an SMS conversation with one message, an SMS consent and a
// track event, through the one ingest path.
func seedProfiles(t *testing.T, db *postgres.DB, ws int64, n int) {
	t.Helper()
	var events []*c360.Event
	at := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	for i := 0; i < n; i++ {
		who := []c360.Identity{
			{Type: "email", Value: fmt.Sprintf("n%d@example.com", i)},
			{Type: "phone", Value: fmt.Sprintf("+1 415 555 %04d", 100+i)},
		}
		events = append(events, &c360.Event{
			Type: c360.EventMessage, Source: "twilio", DedupeKey: fmt.Sprintf("SM%d", i),
			Identities: who, OccurredAt: at,
			Message: &c360.MessageInput{Channel: c360.ChannelSMS, Direction: c360.DirectionInbound,
				Body: fmt.Sprintf("hello %d", i), Status: "received"},
			Consent: &c360.ConsentInput{Channel: c360.ChannelSMS, Status: c360.ConsentOptedIn},
		}, &c360.Event{
			Type: c360.EventTrack, Name: "Viewed", Source: "graphql", DedupeKey: fmt.Sprintf("tr%d", i),
			Identities: who[:1], OccurredAt: at.Add(time.Minute),
		})
	}
	if _, err := db.Ingest(context.Background(), ws, events); err != nil {
		t.Fatalf("seed %d profiles: %v", n, err)
	}
}

func TestNoNPlusOne(t *testing.T) {
	counter := &pgtest.StatementCounter{}
	e := newEnv(t, counter.Install)

	measure := func(n int) int64 {
		t.Helper()
		ws, _, key := pgtest.Workspace(t, e.db)
		seedProfiles(t, e.db, ws, n)
		// Warm up: the key is verified once, then served from the cache.
		gql(t, e.srv, key, `{ customers(first: 1) { edges { cursor } } }`, nil).ok(t, nil)
		counter.Reset()
		var p profilePage
		gql(t, e.srv, key, profileQuery, map[string]any{"first": n}).ok(t, &p)
		got := counter.Count()

		if len(p.Customers.Edges) != n {
			t.Fatalf("customers(first: %d) returned %d customers", n, len(p.Customers.Edges))
		}
		// Every customer gets its own rows back from the batched loads.
		for _, edge := range p.Customers.Edges {
			c := edge.Node
			if len(c.Identities) != 2 || c.Identities[0].Type != "email" || c.Identities[1].Type != "phone" {
				t.Fatalf("customer %s identities = %v, want an email and a phone", c.ID, c.Identities)
			}
			if len(c.Consents) != 1 || c.Consents[0].Channel != "sms" || c.Consents[0].Status != "opted_in" {
				t.Errorf("customer %s consents = %v, want sms opted_in", c.ID, c.Consents)
			}
			if len(c.Events.Edges) != 2 || c.Events.Edges[0].Node.Type != "track" || c.Events.Edges[1].Node.Type != "message" {
				t.Errorf("customer %s events = %v, want track then message", c.ID, c.Events.Edges)
			}
			if len(c.Conversations.Edges) != 1 {
				t.Fatalf("customer %s has %d conversations, want 1", c.ID, len(c.Conversations.Edges))
			}
			conv := c.Conversations.Edges[0].Node
			var i int
			fmt.Sscanf(c.Identities[0].Value, "n%d@example.com", &i)
			if len(conv.Messages.Edges) != 1 || conv.Messages.Edges[0].Node.Body != fmt.Sprintf("hello %d", i) {
				t.Errorf("customer %s (%s) messages = %v, want one \"hello %d\"", c.ID, c.Identities[0].Value, conv.Messages.Edges, i)
			}
		}
		// The customers; identities, consents, events and conversations in
		// one pipelined batch; then the conversations' messages.
		if trips := counter.RoundTrips(); trips != 3 {
			t.Errorf("%d customers: %d round trips, want 3\n%s", n, trips, counter.Statements())
		}
		t.Logf("%d customers: %d statements\n%s", n, got, counter.Statements())
		return got
	}

	small := measure(10)
	large := measure(100)
	if large != small {
		t.Errorf("statements for 100 customers = %d, want the same as for 10 (%d)\n%s", large, small, counter.Statements())
	}
	if large > 10 {
		t.Errorf("statements for 100 customers = %d, want at most 10\n%s", large, counter.Statements())
	}
}

// Event.dropped is read with a page of customers' events, in the same
// statement, whatever their number; only when selected (profileQuery,
// which does not, reads no drop records: TestNoNPlusOne).
func TestEventDropsInOneStatement(t *testing.T) {
	counter := &pgtest.StatementCounter{}
	e := newEnv(t, counter.Install)
	const q = `query($first: Int!) { customers(first: $first) { edges { node { id events(first: 5) { edges { node { id dropped { type value } } } } } } } }`
	measure := func(n int) (int64, int64) {
		t.Helper()
		ws, _, key := pgtest.Workspace(t, e.db)
		seedProfiles(t, e.db, ws, n)
		gql(t, e.srv, key, `{ customers(first: 1) { edges { cursor } } }`, nil).ok(t, nil)
		counter.Reset()
		var p struct {
			Customers struct {
				Edges []struct {
					Node struct {
						Events struct {
							Edges []struct{ Node struct{ Dropped []any } }
						}
					}
				}
			}
		}
		gql(t, e.srv, key, q, map[string]any{"first": n}).ok(t, &p)
		for _, c := range p.Customers.Edges {
			if len(c.Node.Events.Edges) != 2 {
				t.Fatalf("events = %+v, want 2", c.Node.Events.Edges)
			}
			for _, ev := range c.Node.Events.Edges {
				if ev.Node.Dropped == nil || len(ev.Node.Dropped) != 0 {
					t.Errorf("dropped = %#v, want []", ev.Node.Dropped)
				}
			}
		}
		return counter.Count(), counter.RoundTrips()
	}
	small, _ := measure(10)
	large, trips := measure(100)
	if large != small {
		t.Errorf("statements for 100 customers = %d, want the same as for 10 (%d)\n%s", large, small, counter.Statements())
	}
	// The customers; their events, with their drop records.
	if trips != 2 || large != 2 || !strings.Contains(counter.Statements(), "jsonb_typeof(e.drop") {
		t.Errorf("%d statements in %d round trips, want 2 in 2, the events' reading their drop records\n%s", large, trips, counter.Statements())
	}
}

// TestOneCustomerInOneRoundTrip: a single-customer root (the console's
// customer-360) finds the customer and loads its identities, events and
// conversations with their messages in one pipelined round trip, and the
// answer matches what the tables hold.
func TestOneCustomerInOneRoundTrip(t *testing.T) {
	counter := &pgtest.StatementCounter{}
	e := newEnv(t, counter.Install)
	ctx := context.Background()
	if _, err := seed.Run(ctx, e.db.Pool, e.ws, seed.Options{Customers: 5, EventsPerCustomer: 25, MessagesPerConv: 12}); err != nil {
		t.Fatal(err)
	}
	var id int64
	if err := e.db.Pool.QueryRow(ctx, `SELECT customer_id FROM identities WHERE workspace_id = $1 AND type = 'phone' AND value = $2`,
		e.ws, seed.Phone(3)).Scan(&id); err != nil {
		t.Fatal(err)
	}
	ids := func(sql string) []string {
		t.Helper()
		rows, err := e.db.Pool.Query(ctx, sql, e.ws, id)
		if err != nil {
			t.Fatal(err)
		}
		got, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			t.Fatal(err)
		}
		return got
	}
	wantEvents := ids(`SELECT id::text FROM events WHERE workspace_id = $1 AND customer_id = $2 ORDER BY occurred_at DESC, id DESC LIMIT 20`)
	wantMessages := ids(`SELECT id::text FROM messages WHERE workspace_id = $1 AND customer_id = $2 ORDER BY created_at DESC, id DESC LIMIT 10`)
	wantIdentities := ids(`SELECT type || ':' || value FROM identities WHERE workspace_id = $1 AND customer_id = $2 ORDER BY type, value`)

	type answer struct {
		ID         string
		Identities []identityJSON
		Events     struct {
			Edges []struct{ Node struct{ ID string } }
		}
		Conversations struct {
			Edges []struct {
				Node struct {
					Messages struct {
						Edges []struct{ Node struct{ ID string } }
					}
				}
			}
		}
	}
	check := func(t *testing.T, a answer) {
		t.Helper()
		var events, messages, idents []string
		for _, e := range a.Events.Edges {
			events = append(events, e.Node.ID)
		}
		if len(a.Conversations.Edges) != 1 {
			t.Fatalf("conversations = %d, want 1", len(a.Conversations.Edges))
		}
		for _, m := range a.Conversations.Edges[0].Node.Messages.Edges {
			messages = append(messages, m.Node.ID)
		}
		for _, i := range a.Identities {
			idents = append(idents, i.Type+":"+i.Value)
		}
		if !slices.Equal(events, wantEvents) || !slices.Equal(messages, wantMessages) || !slices.Equal(idents, wantIdentities) {
			t.Errorf("events %v\nwant   %v\nmessages %v\nwant     %v\nidentities %v, want %v",
				events, wantEvents, messages, wantMessages, idents, wantIdentities)
		}
	}
	const fields = `id identities { type value }
		events(first: 20) { edges { node { id } } }
		conversations(first: 5) { edges { node { messages(first: 10) { edges { node { id } } } } } }`

	for _, tc := range []struct {
		name, query string
		vars        map[string]any
	}{
		{"customerByIdentity", `query($phone: String!) { c: customerByIdentity(type: "phone", value: $phone) { ` + fields + ` } }`,
			map[string]any{"phone": seed.Phone(3)}},
		{"customer", `query($id: ID!) { c: customer(id: $id) { ` + fields + ` } }`,
			map[string]any{"id": strconv.FormatInt(id, 10)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			gql(t, e.srv, e.key, tc.query, tc.vars).ok(t, nil) // the key is verified once, then cached
			counter.Reset()
			var got struct{ C answer }
			gql(t, e.srv, e.key, tc.query, tc.vars).ok(t, &got)
			check(t, got.C)
			if n, trips := counter.Count(), counter.RoundTrips(); n != 5 || trips != 1 {
				t.Errorf("%d statements in %d round trips, want 5 in 1\n%s", n, trips, counter.Statements())
			}
		})
	}

	// An identity nobody has is null, found in the same one round trip:
	// the parts' statements read no customer and nothing else is asked.
	t.Run("an unknown identity", func(t *testing.T) {
		counter.Reset()
		r := gql(t, e.srv, e.key, `query { c: customerByIdentity(type: "phone", value: "+14155550000") { `+fields+` } }`, nil)
		var got struct{ C *answer }
		r.ok(t, &got)
		if got.C != nil {
			t.Errorf("customer = %+v, want null", got.C)
		}
		if trips := counter.RoundTrips(); trips != 1 {
			t.Errorf("%d round trips, want 1\n%s", trips, counter.Statements())
		}
	})

	// A customer with no conversations gets empty pages from the same
	// round trip; no child resolver goes back for its own.
	t.Run("a customer with nothing but an identity", func(t *testing.T) {
		if _, err := e.db.Ingest(ctx, e.ws, []*c360.Event{{Type: "identify", Source: "test", DedupeKey: "bare-1", OccurredAt: time.Now(),
			Identities: []c360.Identity{{Type: "email", Value: "bare@example.com"}}}}); err != nil {
			t.Fatal(err)
		}
		counter.Reset()
		var got struct{ C answer }
		gql(t, e.srv, e.key, `query { c: customerByIdentity(type: "email", value: "bare@example.com") { `+
			`id identities { type value } conversations(first: 5) { edges { node { id } } } } }`, nil).ok(t, &got)
		if len(got.C.Conversations.Edges) != 0 || len(got.C.Identities) != 1 || got.C.Identities[0].Value != "bare@example.com" {
			t.Errorf("answer = %+v, want one identity and no conversations", got.C)
		}
		if n, trips := counter.Count(), counter.RoundTrips(); n != 3 || trips != 1 {
			t.Errorf("%d statements in %d round trips, want 3 in 1\n%s", n, trips, counter.Statements())
		}
	})

	// A customer outside any list and not from a customer root (a
	// mutation's answer) loads its conversations with their messages too.
	t.Run("conversations of a mutation's customer", func(t *testing.T) {
		var got struct {
			Identify struct {
				Conversations struct {
					Edges []struct {
						Node struct {
							Messages struct {
								Edges []struct{ Node struct{ ID string } }
							}
						}
					}
				}
			}
		}
		gql(t, e.srv, e.key, `mutation($phone: String!) { identify(input: {identities: [{type: "phone", value: $phone}]}) {
			conversations(first: 5) { edges { node { messages(first: 10) { edges { node { id } } } } } } } }`,
			map[string]any{"phone": seed.Phone(3)}).ok(t, &got)
		var messages []string
		for _, c := range got.Identify.Conversations.Edges {
			for _, m := range c.Node.Messages.Edges {
				messages = append(messages, m.Node.ID)
			}
		}
		if !slices.Equal(messages, wantMessages) {
			t.Errorf("messages = %v, want %v", messages, wantMessages)
		}
	})

	// A page refused for its arguments is reported on its own field, as
	// BAD_USER_INPUT, though the batch it would have joined was refused.
	t.Run("a refused page", func(t *testing.T) {
		r := gql(t, e.srv, e.key, `query($phone: String!) { c: customerByIdentity(type: "phone", value: $phone) {
			id identities { type } events(first: 500) { edges { node { id } } } } }`, map[string]any{"phone": seed.Phone(3)})
		if r.code() != "BAD_USER_INPUT" || len(r.Errors) != 1 || fmt.Sprint(r.Errors[0].Path) != "[c events]" {
			t.Errorf("errors = %s, want one BAD_USER_INPUT on events", r.Body)
		}
	})

	// Two messages selections with their own arguments cannot share the
	// conversations statement: each still gets its own page.
	t.Run("two messages pages", func(t *testing.T) {
		var got struct {
			C struct {
				Conversations struct {
					Edges []struct {
						Node struct {
							A struct {
								Edges []struct{ Node struct{ ID string } }
							}
							B struct {
								Edges []struct{ Node struct{ ID string } }
							}
						}
					}
				}
			}
		}
		gql(t, e.srv, e.key, `query($phone: String!) { c: customerByIdentity(type: "phone", value: $phone) {
			conversations(first: 5) { edges { node { a: messages(first: 2) { edges { node { id } } } b: messages(first: 10) { edges { node { id } } } } } } } }`,
			map[string]any{"phone": seed.Phone(3)}).ok(t, &got)
		n := got.C.Conversations.Edges[0].Node
		var a, b []string
		for _, m := range n.A.Edges {
			a = append(a, m.Node.ID)
		}
		for _, m := range n.B.Edges {
			b = append(b, m.Node.ID)
		}
		if !slices.Equal(a, wantMessages[:2]) || !slices.Equal(b, wantMessages) {
			t.Errorf("a = %v, want %v; b = %v, want %v", a, wantMessages[:2], b, wantMessages)
		}
	})
}
