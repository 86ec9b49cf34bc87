package postgres_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/c360dev/c360"
	"github.com/c360dev/c360/internal/pgtest"
)

// A group of events takes a fixed number of round trips, whatever its
// size: its first round trip finds the events stored before, locks the
// identities and reads their owners together; the second locks and loads
// the customers; the third writes. A retried group takes the first only.
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
	if _, err := db.Ingest(ctx, ws, events("warm")); err != nil { // creates the customers
		t.Fatal(err)
	}
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
}
