package postgres_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/c360dev/c360"
	"github.com/c360dev/c360/internal/pgtest"
)

// A call whose events belong to both workers is split between them; each
// event's result must still be its own, in the call's order, and stored
// once.
func TestSplitCallAnswersInOrder(t *testing.T) {
	db := pgtest.Open(t)
	ws, _, _ := pgtest.Workspace(t, db)
	ctx := context.Background()

	const n = 40
	call := func() []*c360.Event {
		evs := make([]*c360.Event, n)
		for i := range evs {
			evs[i] = track(fmt.Sprintf("split-%d", i), ids("user_id", fmt.Sprintf("u-%d", i)))
		}
		return evs
	}
	first, err := db.Ingest(ctx, ws, call())
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range first {
		c, err := db.FindCustomerByIdentity(ctx, ws, c360.Identity{Type: "user_id", Value: fmt.Sprintf("u-%d", i)})
		if err != nil {
			t.Fatalf("user u-%d: %v", i, err)
		}
		if r.CustomerID != c.ID || r.Duplicate || r.EventID == 0 {
			t.Fatalf("result %d = %+v, want a new event of customer %d", i, r, c.ID)
		}
		var owner int64
		if err := db.Pool.QueryRow(ctx, `SELECT customer_id FROM events WHERE workspace_id = $1 AND id = $2`, ws, r.EventID).Scan(&owner); err != nil || owner != c.ID {
			t.Fatalf("event %d of result %d: customer %d (%v), want %d", r.EventID, i, owner, err, c.ID)
		}
	}
	again, err := db.Ingest(ctx, ws, call())
	if err != nil {
		t.Fatal(err)
	}
	for i := range again {
		if !again[i].Duplicate || again[i].EventID != first[i].EventID || again[i].CustomerID != first[i].CustomerID {
			t.Fatalf("repeat %d = %+v, want a duplicate of %+v", i, again[i], first[i])
		}
	}
	if got := count(t, db, `SELECT count(*) FROM events WHERE workspace_id = $1`, ws); got != n {
		t.Fatalf("%d events stored, want %d", got, n)
	}
}

// The group path rewrites traits and the search text only when an event
// moves them: a track keeps both, a new name or a new email moves the
// search text, and every change still bumps the version.
func TestGroupPathKeepsTraitsAndSearchText(t *testing.T) {
	db := pgtest.Open(t)
	ws, _, _ := pgtest.Workspace(t, db)
	ctx := context.Background()

	state := func(id int64) (search string, traits string, version int64) {
		t.Helper()
		if err := db.Pool.QueryRow(ctx, `SELECT search_text, traits::text, version FROM customers WHERE workspace_id = $1 AND id = $2`, ws, id).
			Scan(&search, &traits, &version); err != nil {
			t.Fatal(err)
		}
		return
	}
	identify := func(key string, traits map[string]any, identities []c360.Identity) *c360.Event {
		return &c360.Event{Type: c360.EventIdentify, Source: "test", DedupeKey: key, Identities: identities, Traits: traits}
	}
	c := ingest1(t, db, ws, identify("s-1", map[string]any{"name": "Ada Lovelace", "plan": "pro"}, ids("user_id", "ada"))).CustomerID
	s1, tr1, v1 := state(c)
	if s1 != "ada lovelace" {
		t.Fatalf("search text %q after the first identify, want %q", s1, "ada lovelace")
	}
	ingest1(t, db, ws, track("s-2", ids("user_id", "ada")))
	s2, tr2, v2 := state(c)
	if s2 != s1 || tr2 != tr1 || v2 != v1+1 {
		t.Fatalf("after a track: search %q traits %s version %d, want %q %s %d", s2, tr2, v2, s1, tr1, v1+1)
	}
	ingest1(t, db, ws, identify("s-3", map[string]any{"name": "Ada King"}, ids("user_id", "ada")))
	if s3, tr3, _ := state(c); s3 != "ada king" || !strings.Contains(tr3, `"Ada King"`) || !strings.Contains(tr3, `"plan": "pro"`) {
		t.Fatalf("after a rename: search %q traits %s", s3, tr3)
	}
	ingest1(t, db, ws, track("s-4", ids("user_id", "ada", "email", "Ada@Example.com")))
	if s4, _, _ := state(c); s4 != "ada king ada@example.com" {
		t.Fatalf("after a new email: search %q, want %q", s4, "ada king ada@example.com")
	}
	// Traits observed again with the same values move only their
	// observation time; the stored values stay.
	ingest1(t, db, ws, identify("s-5", map[string]any{"plan": "pro"}, ids("user_id", "ada")))
	if _, tr5, _ := state(c); !strings.Contains(tr5, `"plan": "pro"`) || !strings.Contains(tr5, `"Ada King"`) {
		t.Fatalf("after the same traits again: %s", tr5)
	}
}

// A split call one of whose parts fails: the call fails, every event is
// either stored or kept as a dead letter (never both, never lost), and the
// call sent again without the poison stores the rest exactly once.
func TestSplitCallWithAFailingPart(t *testing.T) {
	db := pgtest.Open(t)
	ws, _, _ := pgtest.Workspace(t, db)
	ctx := context.Background()

	const n, poison = 20, 7
	call := func(withPoison bool) []*c360.Event {
		evs := make([]*c360.Event, n)
		for i := range evs {
			evs[i] = track(fmt.Sprintf("part-%d", i), ids("user_id", fmt.Sprintf("p-%d", i)))
			if i == poison && withPoison {
				evs[i].Properties = map[string]any{"note": "a\x00b"}
			}
		}
		return evs
	}
	_, err := db.Ingest(ctx, ws, call(true))
	var kept *c360.DeadLetteredError
	if !errors.As(err, &kept) || c360.ErrorCode(err) != c360.EINVALID {
		t.Fatalf("call with a poison event: %v, want a *c360.DeadLetteredError of code %s", err, c360.EINVALID)
	}
	stored := count(t, db, `SELECT count(*) FROM events WHERE workspace_id = $1`, ws)
	dead := count(t, db, `SELECT count(*) FROM dead_letters WHERE workspace_id = $1`, ws)
	both := count(t, db, `SELECT count(*) FROM events e JOIN dead_letters d USING (workspace_id, source, dedupe_key) WHERE e.workspace_id = $1`, ws)
	if stored+dead != n || both != 0 || len(kept.IDs) != dead || stored == 0 {
		t.Fatalf("after the failed call: %d stored, %d dead letters (%d ids in the error), %d both; want %d in all, some stored, none both",
			stored, dead, len(kept.IDs), both, n)
	}
	if count(t, db, `SELECT count(*) FROM dead_letters WHERE workspace_id = $1 AND dedupe_key = $2`, ws, fmt.Sprintf("part-%d", poison)) != 1 {
		t.Fatal("the poison event is not among the dead letters")
	}

	again, err := db.Ingest(ctx, ws, call(false))
	if err != nil {
		t.Fatal(err)
	}
	dups := 0
	for _, r := range again {
		if r.Duplicate {
			dups++
		}
	}
	if dups != stored {
		t.Errorf("the call again: %d duplicates, want the %d stored before", dups, stored)
	}
	if got := count(t, db, `SELECT count(*) FROM events WHERE workspace_id = $1`, ws); got != n {
		t.Errorf("%d events stored after the call again, want %d", got, n)
	}
}
