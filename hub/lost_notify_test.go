package hub_test

import (
	"context"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/c360dev/c360"
	"github.com/c360dev/c360/hub"
	"github.com/c360dev/c360/internal/pgtest"
	"github.com/c360dev/c360/postgres"
)

// replicaB is a hub wired as `c360 serve` wires it, on a store of its own,
// hearing the other replicas through a postgres.Listener; it returns once
// the listener listens (its first resync is done).
func replicaB(t *testing.T, opts hub.Options) (*postgres.DB, *hub.Hub) {
	t.Helper()
	db := pgtest.Open(t)
	opts.Logger = slog.New(slog.DiscardHandler)
	h := hub.New(db, opts)
	runHub(t, h)
	listening := make(chan struct{})
	var once sync.Once
	l := &postgres.Listener{DB: db, Origin: "replica-b", Logger: opts.Logger,
		Wake: h.Wake, WakeWorkspace: h.WakeWorkspace,
		Resync: func() { h.Resync(); once.Do(func() { close(listening) }) }}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); l.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	select {
	case <-listening:
	case <-time.After(10 * time.Second):
		t.Fatal("replica b's listener never listened")
	}
	return db, h
}

// replicaA is a store whose commits are handed to a notifier that never
// runs: a replica killed (SIGKILL, OOM) in the few milliseconds between a
// commit and its batched NOTIFY, or whose last flush failed.
func replicaA(t *testing.T) *postgres.DB {
	t.Helper()
	db := pgtest.Open(t)
	dead := &postgres.Notifier{DB: db, Origin: "replica-a", Logger: slog.New(slog.DiscardHandler)}
	db.OnCommit = dead.Add
	return db
}

// A change whose NOTIFY was lost reaches the subscribers of another replica
// within the hub's ResyncInterval all the same, for a customer stream and
// for a workspace stream (which learns of the customer by its sweep), once
// each and in order.
func TestLostNotificationIsDeliveredWithinTheResyncInterval(t *testing.T) {
	const interval = 300 * time.Millisecond
	dbB, hb := replicaB(t, hub.Options{ResyncInterval: interval})
	dbB.OnCommit = hb.Wake
	b := &env{db: dbB, hub: hb}
	b.ws, _, _ = pgtest.Workspace(t, dbB)
	a := &env{db: replicaA(t), ws: b.ws}
	id := b.identify(t, "lost@example.com", map[string]any{"n": 1})

	ctx := context.Background()
	st, err := hb.SubscribeCustomer(ctx, b.ws, id, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	wst, err := hb.SubscribeWorkspace(b.ws, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer wst.Close()
	// A change made on B itself, so that both streams are past their
	// first read of the feed and wait on the hub.
	b.identify(t, "lost@example.com", map[string]any{"n": 2})
	if c := next(t, st); c.Version != 2 {
		t.Fatalf("customer stream: got v%d, want v2", c.Version)
	}
	if w := nextWithin(t, wst, 5*time.Second); w == nil || w.Version != 2 {
		t.Fatalf("workspace stream: got %+v, want v2", w)
	}

	// Changes committed on A, whose NOTIFY never goes out.
	for v := int64(3); v <= 4; v++ {
		a.identify(t, "lost@example.com", map[string]any{"n": v})
		wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		c, err := st.Next(wctx)
		cancel()
		if err != nil {
			t.Fatalf("version %d, whose NOTIFY was lost, not delivered within 5s (resync interval %v): %v", v, interval, err)
		}
		if c.CustomerID != id || c.Version != v {
			t.Fatalf("got customer %d v%d, want %d v%d", c.CustomerID, c.Version, id, v)
		}
		w := nextWithin(t, wst, 5*time.Second)
		if w == nil || w.CustomerID != id || w.Version != v {
			t.Fatalf("workspace stream: got %+v, want customer %d v%d", w, id, v)
		}
	}
	// A customer the workspace stream never heard of, created on A: the
	// resync's sweep finds it.
	other := a.identify(t, "other@example.com", nil)
	if w := nextWithin(t, wst, 5*time.Second); w == nil || w.CustomerID != other || w.Version != 1 {
		t.Fatalf("workspace stream: got %+v, want the new customer %d v1", w, other)
	}
	// Resyncs go on, and deliver nothing twice.
	time.Sleep(3 * interval)
	qctx, cancel := context.WithTimeout(ctx, 2*interval)
	defer cancel()
	if c, err := st.Next(qctx); err == nil {
		t.Fatalf("customer stream got %d v%d again", c.CustomerID, c.Version)
	}
	if w := nextWithin(t, wst, 2*interval); w != nil {
		t.Fatalf("workspace stream got %d v%d again", w.CustomerID, w.Version)
	}
}

// countingFeed is a feed of customers at version 1 that never grow; it
// counts the statements ChangesAfter would make (one per workspace a read
// covers) and the positions read.
type countingFeed struct {
	mu                    sync.Mutex
	statements, positions int
}

func (f *countingFeed) ChangesAfter(ctx context.Context, after []c360.Change, limit int) ([]c360.Change, error) {
	ws := map[int64]bool{}
	for _, p := range after {
		ws[p.WorkspaceID] = true
	}
	f.mu.Lock()
	f.statements += len(ws)
	f.positions += len(after)
	f.mu.Unlock()
	return nil, nil
}

func (f *countingFeed) counts() (statements, positions int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.statements, f.positions
}

func (f *countingFeed) CustomerState(context.Context, int64, int64) (int64, int64, error) {
	return 1, 0, nil
}

func (f *countingFeed) MergeVersion(context.Context, int64, int64, int64) (int64, error) {
	return 0, nil
}

func (f *countingFeed) VersionsBefore(context.Context, int64, []int64, time.Time) (map[int64]int64, error) {
	return nil, nil
}

func (f *countingFeed) CustomersChangedSince(context.Context, int64, time.Time) ([]int64, error) {
	return nil, nil
}

// A resync of 10,000 idle subscribers, in 4 workspaces, reads each feed
// once in about 10,000/256 statements: the topics are read by workspace,
// so a batch of 256 is one statement, not one per workspace it happens to
// cover. This is the periodic resync's cost per ResyncInterval.
func TestResyncOfIdleSubscribersCostsAStatementPerBatch(t *testing.T) {
	feed := &countingFeed{}
	h := hub.New(feed, hub.Options{ResyncInterval: -1, Logger: slog.New(slog.DiscardHandler)})
	runHub(t, h)
	const n, workspaces = 10000, 4
	ctx := context.Background()
	for i := range n {
		st, err := h.SubscribeCustomer(ctx, int64(1+i%workspaces), int64(1000+i), nil)
		if err != nil {
			t.Fatal(err)
		}
		defer st.Close()
	}
	h.Resync()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, p := feed.counts(); p >= n {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the resync did not read every feed")
		}
		time.Sleep(5 * time.Millisecond)
	}
	time.Sleep(50 * time.Millisecond)
	statements, positions := feed.counts()
	if positions != n {
		t.Errorf("the resync read %d positions, want each of the %d once", positions, n)
	}
	if most := (n+255)/256 + workspaces - 1; statements > most {
		t.Errorf("the resync of %d idle subscribers in %d workspaces made %d statements, want at most %d", n, workspaces, statements, most)
	}
}

// A resync leaves a backlogged topic to its backlog: read at once, the
// rest of a burst would be handed to a subscriber whose queue is still
// full, which would be dropped as slow although it keeps reading. So does
// the sweep the resync makes of a workspace with a workspace stream (here
// one of another kind, which the burst does not reach): it finds the
// bursting customer among those changed lately, and its wake leaves the
// topic to its backlog too.
func TestResyncLeavesABurstToItsBacklog(t *testing.T) {
	for _, withWorkspaceStream := range []bool{false, true} {
		name := "customer stream"
		if withWorkspaceStream {
			name = "and a workspace stream"
		}
		t.Run(name, func(t *testing.T) {
			e := newEnv(t, hub.Options{QueueSize: 8, CatchUp: 10 * time.Second, ResyncInterval: -1})
			id := e.identify(t, "backlog@example.com", nil)
			ctx := context.Background()
			reader, err := e.hub.SubscribeCustomer(ctx, e.ws, id, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer reader.Close()
			if withWorkspaceStream {
				wst, err := e.hub.SubscribeWorkspace(e.ws, []string{"consent"})
				if err != nil {
					t.Fatal(err)
				}
				defer wst.Close()
			}
			e.burst(t, "backlog@example.com", 30)
			// The first page fills the reader's queue; the rest waits for room.
			waitFor := time.Now().Add(10 * time.Second)
			for e.hub.Stats().Delivered < 8 {
				if time.Now().After(waitFor) {
					t.Fatal("the burst's first page was not delivered")
				}
				time.Sleep(time.Millisecond)
			}
			e.hub.Resync()
			time.Sleep(100 * time.Millisecond) // time for a read the resync would make
			for v := int64(2); v <= 31; v++ {
				if c := next(t, reader); c.Version != v {
					t.Fatalf("reader got version %d, want %d", c.Version, v)
				}
			}
			if d := e.hub.Stats().Dropped; d != 0 {
				t.Fatalf("dropped = %d: the resync read a backlogged burst into a full queue", d)
			}
		})
	}
}

// A commit of a customer whose burst waits in the backlog wakes it, and
// the wake leaves it to its backlog, as a resync's does: the backlog reads
// the commit's change after the burst, and nobody is dropped.
func TestWakeLeavesABurstToItsBacklog(t *testing.T) {
	e := newEnv(t, hub.Options{QueueSize: 8, CatchUp: 10 * time.Second, ResyncInterval: -1})
	id := e.identify(t, "backlog@example.com", nil)
	reader, err := e.hub.SubscribeCustomer(context.Background(), e.ws, id, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer reader.Close()
	e.burst(t, "backlog@example.com", 30)
	waitFor := time.Now().Add(10 * time.Second)
	for e.hub.Stats().Delivered < 8 {
		if time.Now().After(waitFor) {
			t.Fatal("the burst's first page was not delivered")
		}
		time.Sleep(time.Millisecond)
	}
	e.identify(t, "backlog@example.com", map[string]any{"plan": "pro"}) // wakes the customer
	time.Sleep(100 * time.Millisecond)                                  // time for a read the wake would make
	for v := int64(2); v <= 32; v++ {
		if c := next(t, reader); c.Version != v {
			t.Fatalf("reader got version %d, want %d", c.Version, v)
		}
	}
	if d := e.hub.Stats().Dropped; d != 0 {
		t.Fatalf("dropped = %d: the wake read a backlogged burst into a full queue", d)
	}
}
