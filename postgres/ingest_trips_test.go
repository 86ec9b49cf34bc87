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

// A group of events takes a fixed number of round trips, whatever its
// size: its first round trip finds the events stored before, locks the
// identities and reads their owners together; the second locks and loads
// the customers; the third writes. A retried group takes the first only,
// and a group mixing stored and new events takes three, storing only the
// new ones.
func TestIngestGroupRoundTrips(t *testing.T) {
	counter := &pgtest.StatementCounter{}
	db := pgtest.Open(t, counter.Install)
	ws, _, _ := pgtest.Workspace(t, db)
	ctx := context.Background()
	now := time.Now().UTC()
	events := func(round string) []*c360.Event {
		var evs []*c360.Event
		for i := range 20 {
			evs = append(evs, &c360.Event{Type: c360.EventTrack, Name: "Viewed", Source: "test",
				DedupeKey: fmt.Sprintf("%s-%d", round, i),
				// One person: the call is one group, on one ingest worker.
				Identities: []c360.Identity{{Type: "email", Value: "trips@example.com"}},
				OccurredAt: now, ReceivedAt: now})
		}
		return evs
	}
	warm, err := db.Ingest(ctx, ws, events("warm")) // creates the customer
	if err != nil {
		t.Fatal(err)
	}
	customer := warm[0].CustomerID
	for _, tc := range []struct {
		name  string
		round string
		trips int64
	}{
		{"new events of known customers", "a", 3},
		{"the same events again", "a", 1},
	} {
		counter.Reset()
		res, err := db.Ingest(ctx, ws, events(tc.round))
		if err != nil {
			t.Fatal(err)
		}
		if dup := res[0].Duplicate; dup != (tc.trips == 1) {
			t.Fatalf("%s: duplicate %v", tc.name, dup)
		}
		// Besides BEGIN (with the workspace's scope) and COMMIT, each a
		// round trip of its own.
		if trips := counter.RoundTrips() - 2; trips != tc.trips {
			t.Errorf("%s: %d round trips between BEGIN and COMMIT, want %d:\n%s", tc.name, trips, tc.trips, counter.Statements())
		}
	}

	// Half of round a again, half new: the stored half keeps its results,
	// the new half is stored, on the same customer, in three round trips.
	stored, err := db.Ingest(ctx, ws, events("a"))
	if err != nil {
		t.Fatal(err)
	}
	mixed := append(events("a")[:10], events("b")[10:]...)
	counter.Reset()
	res, err := db.Ingest(ctx, ws, mixed)
	if err != nil {
		t.Fatal(err)
	}
	if trips := counter.RoundTrips() - 2; trips != 3 {
		t.Errorf("a mixed group: %d round trips between BEGIN and COMMIT, want 3:\n%s", trips, counter.Statements())
	}
	for i, r := range res {
		switch {
		case i < 10 && (!r.Duplicate || r.EventID != stored[i].EventID || r.CustomerID != customer):
			t.Errorf("event %d, stored before: %+v, want a duplicate of event %d of customer %d", i, r, stored[i].EventID, customer)
		case i >= 10 && (r.Duplicate || r.EventID == 0 || r.CustomerID != customer):
			t.Errorf("event %d, new: %+v, want it stored on customer %d", i, r, customer)
		}
	}
	if n := count(t, db, `SELECT count(*) FROM events WHERE workspace_id = $1 AND dedupe_key LIKE 'b-%'`, ws); n != 10 {
		t.Errorf("%d events of round b stored, want the 10 new ones", n)
	}
}

// The per-event path (here for outbound messages) reads a customer's
// identities only for an event it must judge: one whose identities one
// customer owns resolves to it whatever the limits (identity.Rules.SettledBy).
func TestPerEventPathReadsIdentitiesOnlyToJudge(t *testing.T) {
	counter := &pgtest.StatementCounter{}
	db := pgtest.Open(t, counter.Install)
	ws, _, _ := pgtest.Workspace(t, db)
	a := ingest1(t, db, ws, smsIn("SM1", ids("phone", "+14155550130")))
	outbound := func(key string, identities []c360.Identity) *c360.Event {
		ev := smsIn(key, identities)
		ev.Message.Direction, ev.Message.Status = c360.DirectionOutbound, "queued"
		return ev
	}
	const readIdentities = "SELECT k.id, i.type, i.value FROM unnest"
	for _, tc := range []struct {
		name  string
		ev    *c360.Event
		reads bool
	}{
		{"settled", outbound("SM2", ids("phone", "+14155550130")), false},
		{"not settled", outbound("SM3", ids("phone", "+14155550130", "email", "out@example.com")), true},
	} {
		counter.Reset()
		if r := ingest1(t, db, ws, tc.ev); r.CustomerID != a.CustomerID {
			t.Errorf("%s: went to customer %d, want %d", tc.name, r.CustomerID, a.CustomerID)
		}
		if got := strings.Contains(counter.Statements(), readIdentities); got != tc.reads {
			t.Errorf("%s: read the owner's identities: %v, want %v:\n%s", tc.name, got, tc.reads, counter.Statements())
		}
	}
}
