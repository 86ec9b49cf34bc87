package faults

import (
	"context"
	"net/http"
	"sync"
	"testing"
)

// Poison input against the real binary: among 80 concurrent Twilio
// deliveries, one carries a NUL character (PostgreSQL refuses it inside the
// transaction) and one breaks a constraint that stands for a bug. Both are
// answered 200 (kept as dead letters, so Twilio stops retrying in vain),
// every other delivery of their groups is stored, admins (only) see the
// dead letters with their errors over GraphQL, and after the fix a replay
// stores the event exactly once.
func TestPoisonInput(t *testing.T) {
	c := StartCluster(t)
	a := newApp(t, c)
	a.serve(t)
	ctx := context.Background()
	db := a.conn(t)
	if _, err := db.Exec(ctx, `ALTER TABLE messages ADD CONSTRAINT faults_bug CHECK (body IS DISTINCT FROM 'POISON')`); err != nil {
		t.Fatal(err)
	}

	const n = 80
	client := newClient(n)
	deliveries := make([]delivery, n)
	for i := range deliveries {
		deliveries[i] = newDelivery("poison", i, "good")
	}
	nul, bug := &deliveries[20], &deliveries[50]
	nul.form.Set("Body", "nul \x00 body")
	bug.form.Set("Body", "POISON")
	results := make([]result, n)
	var wg sync.WaitGroup
	for i := range deliveries {
		wg.Add(1)
		go func() { defer wg.Done(); results[i] = a.deliver(client, deliveries[i]) }()
	}
	wg.Wait()
	for i, r := range results {
		if r.status != http.StatusOK {
			t.Errorf("delivery %s: %d %v, want 200", deliveries[i].sid, r.status, r.err)
		}
	}
	events, _ := a.stored(t)
	if len(events) != n-2 || events[nul.sid] != 0 || events[bug.sid] != 0 {
		t.Errorf("stored %d events (poison: %d, %d), want the %d good ones", len(events), events[nul.sid], events[bug.sid], n-2)
	}

	const list = `query { deadLetters(first: 10) { edges { node { id source dedupeKey eventType event error attempts replayedAt } } pageInfo { hasNextPage } } }`
	var page struct {
		DeadLetters struct {
			Edges []struct {
				Node struct {
					ID, Source, DedupeKey, EventType, Error string
					Event                                   map[string]any
					Attempts                                int
					ReplayedAt                              *string
				}
			}
		}
	}
	if errs := a.graphql(t, a.apiKey, list, nil, &page); len(errs) > 0 {
		t.Fatalf("deadLetters: %+v", errs)
	}
	ids := map[string]string{}
	for _, e := range page.DeadLetters.Edges {
		d := e.Node
		ids[d.DedupeKey] = d.ID
		if d.Source != "twilio" || d.EventType != "message" || d.Attempts != 1 || d.ReplayedAt != nil || d.Error == "" || d.Event["message"] == nil {
			t.Errorf("dead letter %+v", d)
		}
	}
	if len(ids) != 2 || ids[nul.sid] == "" || ids[bug.sid] == "" {
		t.Fatalf("dead letters %v, want %s and %s", ids, nul.sid, bug.sid)
	}
	agent := struct{ APIKey string }{}
	if err := jsonUnmarshal(a.cli(t, "apikey", "create", "--workspace", a.slug, "--role", "agent", "--json"), &agent); err != nil {
		t.Fatal(err)
	}
	if errs := a.graphql(t, agent.APIKey, list, nil, nil); len(errs) == 0 || errs[0].Extensions.Code != "FORBIDDEN" {
		t.Errorf("deadLetters with an agent key: %+v, want FORBIDDEN", errs)
	}

	const replay = `mutation($id: ID!) { replayDeadLetter(id: $id) { id attempts replayedAt replayedEventId error } }`
	var replayed struct {
		ReplayDeadLetter struct {
			Attempts        int
			ReplayedAt      *string
			ReplayedEventID *string
		}
	}
	if errs := a.graphql(t, a.apiKey, replay, map[string]any{"id": ids[bug.sid]}, nil); len(errs) == 0 {
		t.Errorf("replay before the fix succeeded")
	}
	if _, err := db.Exec(ctx, `ALTER TABLE messages DROP CONSTRAINT faults_bug`); err != nil {
		t.Fatal(err)
	}
	if errs := a.graphql(t, a.apiKey, replay, map[string]any{"id": ids[bug.sid]}, &replayed); len(errs) > 0 {
		t.Fatalf("replay after the fix: %+v", errs)
	}
	if r := replayed.ReplayDeadLetter; r.ReplayedAt == nil || r.ReplayedEventID == nil || r.Attempts != 2 {
		t.Errorf("replayed dead letter %+v, want replayedAt, replayedEventId, 2 attempts", r)
	}
	// The NUL cannot be fixed by data: its replay fails with the reason.
	if errs := a.graphql(t, a.apiKey, replay, map[string]any{"id": ids[nul.sid]}, nil); len(errs) == 0 || errs[0].Extensions.Code != "BAD_USER_INPUT" {
		t.Errorf("replay of the NUL message: %+v, want BAD_USER_INPUT", errs)
	}
	// Twilio delivers the fixed one again: stored once.
	if r := a.deliver(client, *bug); r.status != http.StatusOK {
		t.Errorf("redelivery after the replay: %d", r.status)
	}
	events, messages := a.stored(t)
	if events[bug.sid] != 1 || messages[bug.sid] != 1 || events[nul.sid] != 0 {
		t.Errorf("after the replay: %s stored %d/%d times (want 1), %s %d times (want 0)",
			bug.sid, events[bug.sid], messages[bug.sid], nul.sid, events[nul.sid])
	}
}
