package hub_test

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/c360dev/c360/hub"
	"github.com/c360dev/c360/internal/pgtest"
	"github.com/c360dev/c360/postgres"
)

// A workspace stream must receive a change committed after it started, even
// when a customer stream of that customer registers before the hub's worker
// reads the woken topic.
func TestWorkspaceStreamGetsAChangeAsACustomerStreamStarts(t *testing.T) {
	db := pgtest.Open(t)
	ws, _, _ := pgtest.Workspace(t, db)
	h := hub.New(db, hub.Options{Logger: slog.New(slog.DiscardHandler)})
	db.OnCommit = h.Wake
	e := &env{db: db, hub: h, ws: ws}
	id, wst := workspaceStreamAfter(t, e, "w@example.com")
	e.identify(t, "w@example.com", map[string]any{"n": 1}) // v2: wakes the topic; the worker does not run yet

	cst, err := h.SubscribeCustomer(context.Background(), ws, id, nil) // reads version 2 as its start
	if err != nil {
		t.Fatal(err)
	}
	defer cst.Close()
	runHub(t, h)
	wantV2(t, wst, id)
}

// hookFeed runs before once, just before the next customer state read.
type hookFeed struct {
	*postgres.DB
	before func()
}

func (f *hookFeed) CustomerState(ctx context.Context, ws, id int64) (int64, int64, error) {
	if f.before != nil {
		b := f.before
		f.before = nil
		b()
	}
	return f.DB.CustomerState(ctx, ws, id)
}

// The same when the change commits between a customer stream's
// registration and its state read, with the hub running.
func TestWorkspaceStreamGetsAChangeDuringACustomerStreamsStart(t *testing.T) {
	db := pgtest.Open(t)
	ws, _, _ := pgtest.Workspace(t, db)
	feed := &hookFeed{DB: db}
	h := hub.New(feed, hub.Options{Logger: slog.New(slog.DiscardHandler)})
	db.OnCommit = h.Wake
	runHub(t, h)
	e := &env{db: db, hub: h, ws: ws}
	id, wst := workspaceStreamAfter(t, e, "w2@example.com")
	feed.before = func() { e.identify(t, "w2@example.com", map[string]any{"n": 1}) } // v2
	cst, err := h.SubscribeCustomer(context.Background(), ws, id, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer cst.Close()
	wantV2(t, wst, id)
}

// The same when the change's wake comes only after the customer stream
// has read its version: the change was committed on another replica, whose
// NOTIFY is on its way. The topic the customer stream creates must start
// where the workspace stream started, not at the version the customer
// stream read, which already includes that change.
func TestWorkspaceStreamGetsAChangeWokenAfterACustomerStreamStarted(t *testing.T) {
	db := pgtest.Open(t)
	ws, _, _ := pgtest.Workspace(t, db)
	h := hub.New(db, hub.Options{Logger: slog.New(slog.DiscardHandler)})
	runHub(t, h)
	e := &env{db: db, hub: h, ws: ws}
	id, wst := workspaceStreamAfter(t, e, "w3@example.com")            // no OnCommit yet: writes are another replica's
	e.identify(t, "w3@example.com", map[string]any{"n": 1})            // v2, not woken here
	cst, err := h.SubscribeCustomer(context.Background(), ws, id, nil) // reads version 2 as its start
	if err != nil {
		t.Fatal(err)
	}
	defer cst.Close()
	time.Sleep(50 * time.Millisecond)
	h.Wake(ws, []int64{id}) // the NOTIFY arrives
	wantV2(t, wst, id)
	// The customer stream, which started at v2, gets v3 and not v2 again.
	db.OnCommit = h.Wake
	e.identify(t, "w3@example.com", map[string]any{"n": 2}) // v3
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if c, err := cst.Next(ctx); err != nil || c.Version != 3 {
		t.Errorf("customer stream's next change = %+v, %v; want v3", c, err)
	}
}

// workspaceStreamAfter creates a customer (its version 1), then opens a
// workspace stream, which starts after that change.
func workspaceStreamAfter(t *testing.T, e *env, addr string) (int64, hub.Stream) {
	t.Helper()
	id := e.identify(t, addr, nil)
	time.Sleep(50 * time.Millisecond)
	wst, err := e.hub.SubscribeWorkspace(e.ws, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(wst.Close)
	time.Sleep(50 * time.Millisecond)
	return id, wst
}

// wantV2 reads the workspace stream's next change: version 2 of customer id.
func wantV2(t *testing.T, wst hub.Stream, id int64) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	c, err := wst.Next(ctx)
	if err != nil {
		t.Fatalf("workspace stream never got v2 of customer %d, committed after it started: %v", id, err)
	}
	if c.CustomerID != id || c.Version != 2 {
		t.Errorf("workspace stream got %s v%d of customer %d, want v2 of %d", c.Kind, c.Version, c.CustomerID, id)
	}
}
