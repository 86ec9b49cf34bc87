package hub_test

import (
	"context"
	"testing"
	"time"

	"github.com/c360dev/c360"
	"github.com/c360dev/c360/hub"
)

// A stream of a customer merged into another ends when that survivor is
// erased, even when the hub reads the merge only after the erasure: every
// erased customer's feed ends with an erased change (the merged customer's
// merged_into change is gone with the rest of its feed), and every erased
// id is woken. Before, only the survivor's feed had one and only it was
// woken, and the merged customer's stream waited forever.
func TestStreamOfAMergedCustomerEndsWhenItsSurvivorIsErased(t *testing.T) {
	e := newEnv(t, hub.Options{})
	ctx := context.Background()
	ann := e.identify(t, "ann@example.com", nil)
	bob := e.identify(t, "bob@example.com", nil)
	st, err := e.hub.SubscribeCustomer(ctx, e.ws, bob, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	var woken []int64
	e.db.OnCommit = func(ws int64, ids []int64) { woken = append(woken, ids...) } // wakes arrive after both commits
	if _, err := e.db.MergeCustomers(ctx, e.ws, ann, bob, true, "admin", "same person"); err != nil {
		t.Fatal(err)
	}
	if _, err := e.db.EraseCustomer(ctx, e.ws, ann, "admin", "ticket 7"); err != nil {
		t.Fatal(err)
	}
	e.hub.Wake(e.ws, woken)
	tctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	var kinds []string
	for {
		c, err := st.Next(tctx)
		if err != nil {
			if c360.ErrorCode(err) != c360.ENOTFOUND {
				t.Fatalf("after changes %v: %v, want NOT_FOUND", kinds, err)
			}
			break
		}
		kinds = append(kinds, c.Kind)
	}
	if len(kinds) == 0 || kinds[len(kinds)-1] != c360.ChangeErased {
		t.Errorf("changes %v, want the last to be %s", kinds, c360.ChangeErased)
	}
}

// After a wrong merge (Ann's A into Zed's Q) undone by a split (her email
// into a new N), N's erasure erases A, whose identities all came back to
// N: a resume of A's feed from its start, which replayed her profile (A's
// created change, with her name and email), is NOT_FOUND, as for any
// erased id, and so is a new subscription of A.
func TestAnErasedPersonsCustomerFromBeforeAWrongMergeIsNotReplayed(t *testing.T) {
	e := newEnv(t, hub.Options{})
	ctx := context.Background()
	a := e.identify(t, "ann@x.io", map[string]any{"name": "Ann Lee"})
	q := e.identify(t, "zed@x.io", map[string]any{"name": "Zed"})
	if _, err := e.db.MergeCustomers(ctx, e.ws, q, a, true, "test", "oops"); err != nil {
		t.Fatal(err)
	}
	sr, err := e.db.SplitIdentity(ctx, e.ws, q, c360.Identity{Type: "email", Value: "ann@x.io"}, "test", "undo")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.db.EraseCustomer(ctx, e.ws, sr.Split.ID, "test", "ticket 1"); err != nil {
		t.Fatal(err)
	}
	for _, after := range []*hub.Cursor{{CustomerID: a, Version: 0}, nil} {
		st, err := e.hub.SubscribeCustomer(ctx, e.ws, a, after)
		if err == nil {
			c := next(t, st)
			st.Close()
			t.Fatalf("customerChanged(%d, after %v) delivers %d/%d %s %v, want NOT_FOUND", a, after, c.CustomerID, c.Version, c.Kind, c.Diff)
		}
		if c360.ErrorCode(err) != c360.ENOTFOUND {
			t.Errorf("customerChanged(%d, after %v): %v, want NOT_FOUND", a, after, err)
		}
	}
}
