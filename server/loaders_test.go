package server_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/c360dev/c360"
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
