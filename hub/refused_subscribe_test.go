package hub_test

import (
	"context"
	"fmt"
	"log/slog"
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

// slowSweep holds every sweep (the search for a workspace's changed
// customers) until gate closes, so that a topic is read by a WakeWorkspace
// before any wake of its customer reaches it.
type slowSweep struct {
	hub.Feed
	gate chan struct{}
}

func (f slowSweep) CustomersChangedSince(ctx context.Context, ws int64, since time.Time) ([]int64, error) {
	select {
	case <-f.gate:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	return f.Feed.CustomersChangedSince(ctx, ws, since)
}

// sweepHeldEnv is an env whose hub, of two workers, holds its sweeps until
// the test ends, and is not woken by commits.
func sweepHeldEnv(t *testing.T) *env {
	t.Helper()
	db := pgtest.Open(t)
	ws, _, _ := pgtest.Workspace(t, db)
	gate := make(chan struct{})
	h := hub.New(slowSweep{db, gate}, hub.Options{Logger: slog.New(slog.DiscardHandler), Workers: 2})
	runHub(t, h)                      // cleanups run last in, first out: the gate opens,
	t.Cleanup(func() { close(gate) }) // then the hub stops
	return &env{db: db, hub: h, ws: ws}
}

// A topic a workspace stream does not own yet (made by a customer stream,
// woken by no change) may still be read, by a WakeWorkspace (another
// replica's notification too large to name its customers) or a Resync, and
// hand its change to the workspace stream. The workspace stream then takes
// it over: once the customer stream ends, the next change's wake finds the
// topic where it stopped instead of making a new one from the workspace
// stream's start, which would give the workspace stream that change again.
// That holds whether the customer stream opened after the workspace stream
// (the topic starts at its start) or before it (at the customer's version).
func TestWorkspaceStreamGetsAChangeOnceAfterAnUnownedTopicWasRead(t *testing.T) {
	for _, customerFirst := range []bool{false, true} {
		t.Run(fmt.Sprintf("customerFirst=%v", customerFirst), func(t *testing.T) {
			e := sweepHeldEnv(t)
			h := e.hub
			id := e.identify(t, "dup@example.com", nil) // v1
			time.Sleep(10 * time.Millisecond)           // v1 is dated before the workspace stream
			var cst *hub.CustomerStream
			subscribe := func() {
				var err error
				if cst, err = h.SubscribeCustomer(context.Background(), e.ws, id, nil); err != nil {
					t.Fatal(err)
				}
			}
			if customerFirst {
				subscribe()
			}
			wst, err := h.SubscribeWorkspace(e.ws, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer wst.Close()
			if !customerFirst {
				subscribe()
			}
			defer cst.Close()
			e.identify(t, "dup@example.com", map[string]any{"name": "X"}) // v2, woken by no Wake
			h.WakeWorkspace(e.ws)                                         // its sweep holds one worker
			time.Sleep(50 * time.Millisecond)
			h.Wake(e.ws, []int64{1 << 40}) // kicks the other worker, which reads the topic
			if c := next(t, wst); c.CustomerID != id || c.Version != 2 {
				t.Fatalf("workspace stream got v%d of %d, want v2 of %d", c.Version, c.CustomerID, id)
			}
			if c := next(t, cst); c.Version != 2 {
				t.Fatalf("customer stream got v%d, want v2", c.Version)
			}
			cst.Close()
			e.identify(t, "dup@example.com", map[string]any{"name": "Y"}) // v3
			h.Wake(e.ws, []int64{id})
			if c := next(t, wst); c.CustomerID != id || c.Version != 3 {
				t.Fatalf("workspace stream got v%d of %d after v2, want v3 of %d (v2 twice)", c.Version, c.CustomerID, id)
			}
		})
	}
}
