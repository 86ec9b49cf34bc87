package hub_test

import (
	"context"
	"testing"
	"time"

	"github.com/c360dev/c360"
	"github.com/c360dev/c360/hub"
	"github.com/c360dev/c360/internal/pgtest"
)

// A refused customer subscription (an unknown id, another workspace's id)
// leaves nothing in the hub, even while a workspace stream of the workspace
// is open: a client probing ids must not grow the hub, nor bring the
// workspace stream to its MaxWorkspaceTopics, where its tracking starts
// over.
func TestFailedSubscribeLeavesNoTopic(t *testing.T) {
	e := newEnv(t, hub.Options{})
	other, _, _ := pgtest.Workspace(t, e.db)
	now := time.Now().UTC()
	res, err := e.db.Ingest(context.Background(), other, []*c360.Event{{Type: c360.EventIdentify,
		Identities: []c360.Identity{{Type: "email", Value: "theirs@example.com"}}, Source: "test", DedupeKey: "theirs",
		OccurredAt: now, ReceivedAt: now}})
	if err != nil {
		t.Fatal(err)
	}
	theirs := res[0].CustomerID
	wst, err := e.hub.SubscribeWorkspace(e.ws, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer wst.Close()
	before := e.hub.Stats().Topics
	ids := []int64{theirs}
	for id := int64(1 << 40); id < 1<<40+1000; id++ {
		ids = append(ids, id)
	}
	for _, id := range ids {
		if _, err := e.hub.SubscribeCustomer(context.Background(), e.ws, id, nil); c360.ErrorCode(err) != c360.ENOTFOUND {
			t.Fatalf("subscribe %d: %v, want NOT_FOUND", id, err)
		}
	}
	if got := e.hub.Stats().Topics; got != before {
		t.Fatalf("hub follows %d customers after %d refused subscriptions, want %d", got, len(ids), before)
	}
}

// A customer a customer stream followed, and no longer does, still reaches
// the workspace stream exactly once: its topic, dropped with the customer
// stream, is made again by the change's wake, from the workspace stream's
// start. And while a customer stream follows it, both get each change once.
func TestWorkspaceStreamGetsACustomerOnceAfterACustomerStreamLeft(t *testing.T) {
	e := newEnv(t, hub.Options{})
	id, wst := workspaceStreamAfter(t, e, "left@example.com") // v1, before the workspace stream
	cst, err := e.hub.SubscribeCustomer(context.Background(), e.ws, id, nil)
	if err != nil {
		t.Fatal(err)
	}
	cst.Close()
	if got := e.hub.Stats().Topics; got != 0 {
		t.Fatalf("hub follows %d customers once the customer stream left, before any change, want 0", got)
	}
	e.identify(t, "left@example.com", map[string]any{"n": 1}) // v2
	wantV2(t, wst, id)

	cst, err = e.hub.SubscribeCustomer(context.Background(), e.ws, id, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer cst.Close()
	e.identify(t, "left@example.com", map[string]any{"n": 2}) // v3
	other := e.identify(t, "other@example.com", nil)
	// Changes of different customers may arrive in either order; a
	// duplicate of v2 would take the place of one of these.
	got := map[[2]int64]bool{}
	for range 2 {
		c := next(t, wst)
		got[[2]int64{c.CustomerID, c.Version}] = true
	}
	if !got[[2]int64{id, 3}] || !got[[2]int64{other, 1}] {
		t.Fatalf("workspace stream got %v (customer, version), want v3 of %d and v1 of %d", got, id, other)
	}
	if c := next(t, cst); c.Version != 3 {
		t.Fatalf("customer stream got v%d, want v3", c.Version)
	}
}
