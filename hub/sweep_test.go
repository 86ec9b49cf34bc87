package hub_test

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/c360dev/c360"
	"github.com/c360dev/c360/hub"
	"github.com/c360dev/c360/internal/pgtest"
	"github.com/c360dev/c360/postgres"
)

// silentStream is a running hub with a workspace stream, whose local
// commits wake nothing, as if they happened on another replica whose
// notification named no customers.
func silentStream(t *testing.T, feed hub.Feed, db *postgres.DB) (*env, *hub.WorkspaceStream) {
	t.Helper()
	h := hub.New(feed, hub.Options{Logger: slog.New(slog.DiscardHandler)})
	runHub(t, h)
	return workspaceStream(t, h, db)
}

// workspaceStream opens a stream of a new workspace on h.
func workspaceStream(t *testing.T, h *hub.Hub, db *postgres.DB) (*env, *hub.WorkspaceStream) {
	t.Helper()
	ws, _, _ := pgtest.Workspace(t, db)
	st, err := h.SubscribeWorkspace(ws, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(st.Close)
	return &env{db: db, hub: h, ws: ws}, st
}

// nextWithin returns the stream's next change, or nil if none comes within d.
func nextWithin(t *testing.T, st *hub.WorkspaceStream, d time.Duration) *hub.Change {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	c, err := st.Next(ctx)
	if errors.Is(err, context.DeadlineExceeded) {
		return nil
	}
	if err != nil {
		t.Fatalf("next: %v", err)
	}
	return c
}

// A whole-workspace wake (a notification past its size, from another
// replica) and a resync (after the listener reconnects) must reach
// workspace streams for customers they did not follow yet, once each.
func TestWholeWorkspaceWakeReachesWorkspaceStreams(t *testing.T) {
	for _, how := range []string{"WakeWorkspace", "Resync"} {
		t.Run(how, func(t *testing.T) {
			db := pgtest.Open(t)
			e, st := silentStream(t, db, db)
			wake := func() {
				if how == "Resync" {
					e.hub.Resync()
				} else {
					e.hub.WakeWorkspace(e.ws)
				}
			}
			a := e.identify(t, "sweep-a@example.com", nil)
			if c := nextWithin(t, st, 300*time.Millisecond); c != nil {
				t.Fatalf("got %d v%d before any wake: the test's replica is not silent", c.CustomerID, c.Version)
			}
			wake()
			c := nextWithin(t, st, 10*time.Second)
			if c == nil || c.CustomerID != a || c.Version != 1 || c.Kind != c360.ChangeCreated {
				t.Fatalf("after %s got %+v, want customer %d's created change (v1)", how, c, a)
			}
			// Swept again: the change is not delivered twice, and the next
			// one, of a followed customer and of a new one, comes.
			wake()
			e.identify(t, "sweep-a@example.com", map[string]any{"plan": "pro"})
			b := e.identify(t, "sweep-b@example.com", nil)
			wake()
			got := map[[2]int64]bool{}
			for range 2 {
				c := nextWithin(t, st, 10*time.Second)
				if c == nil {
					t.Fatalf("after a second %s got %v, want %d v2 and %d v1", how, got, a, b)
				}
				got[[2]int64{c.CustomerID, c.Version}] = true
			}
			if !got[[2]int64{a, 2}] || !got[[2]int64{b, 1}] {
				t.Fatalf("got %v, want %d v2 and %d v1", got, a, b)
			}
			if c := nextWithin(t, st, 300*time.Millisecond); c != nil {
				t.Fatalf("got %d v%d again", c.CustomerID, c.Version)
			}
		})
	}
}

// A sweep whose read fails is tried again.
func TestFailedSweepIsRetried(t *testing.T) {
	db := pgtest.Open(t)
	feed := &recordingFeed{DB: db, fail: 1}
	e, st := silentStream(t, feed, db)
	a := e.identify(t, "retry@example.com", nil)
	e.hub.WakeWorkspace(e.ws)
	c := nextWithin(t, st, 10*time.Second)
	if c == nil || c.CustomerID != a || c.Version != 1 {
		t.Fatalf("got %+v, want customer %d v1 after the failed sweep's retry", c, a)
	}
	if len(feed.calls()) < 2 {
		t.Fatal("the sweep never read the feed again after its failure")
	}
}

// recordingFeed records each sweep's start and fails the call numbered fail.
type recordingFeed struct {
	*postgres.DB
	fail  int
	mu    sync.Mutex
	froms []time.Time
	ats   []time.Time // when each sweep asked
}

func (f *recordingFeed) CustomersChangedSince(ctx context.Context, ws int64, t time.Time) ([]int64, error) {
	f.mu.Lock()
	f.froms = append(f.froms, t)
	f.ats = append(f.ats, time.Now())
	n := len(f.froms)
	f.mu.Unlock()
	if n == f.fail {
		return nil, errors.New("the database went away")
	}
	return f.DB.CustomersChangedSince(ctx, ws, t)
}

func (f *recordingFeed) calls() []time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.froms)
}

// windows returns how far back each sweep asked for, from when it asked.
func (f *recordingFeed) windows() []time.Duration {
	f.mu.Lock()
	defer f.mu.Unlock()
	ws := make([]time.Duration, len(f.froms))
	for i := range f.froms {
		ws[i] = f.ats[i].Sub(f.froms[i])
	}
	return ws
}

// The periodic resync sweeps each workspace from its last sweep less a
// few seconds, not less the minute a reconnect's or a whole-workspace
// wake's sweep reaches back: every 5 s, a minute's window read the
// changes of a minute of every workspace and woke every customer changed
// in it, each about 13 times a minute. A whole-workspace wake still
// reaches back a minute.
func TestPeriodicSweepReadsSinceTheLastSweep(t *testing.T) {
	db := pgtest.Open(t)
	feed := &recordingFeed{DB: db}
	h := hub.New(feed, hub.Options{ResyncInterval: 50 * time.Millisecond, Logger: slog.New(slog.DiscardHandler)})
	runHub(t, h)
	e, _ := workspaceStream(t, h, db)
	deadline := time.Now().Add(10 * time.Second)
	for len(feed.windows()) < 4 {
		if time.Now().After(deadline) {
			t.Fatal("the periodic resync swept fewer than 4 times in 10s")
		}
		time.Sleep(10 * time.Millisecond)
	}
	periodic := feed.windows()
	for i, w := range periodic {
		// The margin (15 s), the interval and scheduling.
		if w > 20*time.Second {
			t.Errorf("periodic sweep %d read the last %v of the feed, want the time since the sweep before it and at most 15s more", i, w.Round(time.Second))
		}
	}
	e.hub.WakeWorkspace(e.ws)
	deadline = time.Now().Add(10 * time.Second)
	for {
		ws := feed.windows()
		if slices.ContainsFunc(ws[len(periodic):], func(w time.Duration) bool { return w >= time.Minute }) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after WakeWorkspace, sweeps read %v, want one that reaches back a minute", ws[len(periodic):])
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// A failed sweep is tried again from where it started, not from the
// stream's start: a stream open for days would otherwise read days of
// changes after one failed read.
func TestFailedSweepRetriesFromItsOwnStart(t *testing.T) {
	db := pgtest.Open(t)
	feed := &recordingFeed{DB: db, fail: 2}
	e, st := silentStream(t, feed, db)
	a := e.identify(t, "first@example.com", nil)
	e.hub.WakeWorkspace(e.ws)
	if c := nextWithin(t, st, 10*time.Second); c == nil || c.CustomerID != a {
		t.Fatalf("first sweep: got %+v, want customer %d", c, a)
	}
	time.Sleep(20 * time.Millisecond) // the second sweep starts measurably later
	b := e.identify(t, "second@example.com", nil)
	e.hub.WakeWorkspace(e.ws) // fails once, then is retried
	if c := nextWithin(t, st, 10*time.Second); c == nil || c.CustomerID != b {
		t.Fatalf("retried sweep: got %+v, want customer %d", c, b)
	}
	froms := feed.calls()
	if len(froms) < 3 {
		t.Fatalf("%d sweeps, want 3 (one failed)", len(froms))
	}
	if !froms[2].Equal(froms[1]) || !froms[1].After(froms[0]) {
		t.Errorf("sweeps started at %v: want the retry (third) from the failed one's start (second), later than the first's", froms)
	}
}

// A resync sweeps every workspace with a workspace stream, not one.
func TestResyncSweepsEveryWorkspace(t *testing.T) {
	db := pgtest.Open(t)
	e1, st1 := silentStream(t, db, db)
	e2, st2 := workspaceStream(t, e1.hub, db)
	a := e1.identify(t, "one@example.com", nil)
	b := e2.identify(t, "two@example.com", nil)
	e1.hub.Resync()
	for _, w := range []struct {
		st   *hub.WorkspaceStream
		want int64
	}{{st1, a}, {st2, b}} {
		if c := nextWithin(t, w.st, 10*time.Second); c == nil || c.CustomerID != w.want {
			t.Errorf("after one resync got %+v, want customer %d's change", c, w.want)
		}
	}
}

// A customer that changes while a sweep's read is in flight, after the
// read saw the workspace, is found all the same: the wake that its commit
// sends during the sweep asks for another one.
func TestCommitDuringSweepIsFound(t *testing.T) {
	db := pgtest.Open(t)
	feed := &gatedFeed{DB: db, read: make(chan struct{}), release: make(chan struct{})}
	// One worker: with two, the idle one would take the second wake while
	// the first sweep is held, and find the customer whatever the first
	// sweep does with the wakes made during its read.
	h := hub.New(feed, hub.Options{Workers: 1, Logger: slog.New(slog.DiscardHandler)})
	runHub(t, h)
	e, st := workspaceStream(t, h, db)
	a := e.identify(t, "before@example.com", nil)
	e.hub.WakeWorkspace(e.ws)
	select {
	case <-feed.read: // the first sweep has read, and waits to return
	case <-time.After(10 * time.Second):
		t.Fatal("the wake started no sweep")
	}
	b := e.identify(t, "during@example.com", nil)
	e.hub.WakeWorkspace(e.ws)
	close(feed.release)
	got := map[int64]bool{}
	for range 2 {
		c := nextWithin(t, st, 10*time.Second)
		if c == nil {
			t.Fatalf("got changes of %v, want customers %d (before the sweep) and %d (during it)", got, a, b)
		}
		got[c.CustomerID] = true
	}
	if !got[a] || !got[b] {
		t.Fatalf("got changes of %v, want customers %d and %d", got, a, b)
	}
}

// gatedFeed holds its first sweep's answer, read before the hold, until
// release is closed, and says on read when it has read it.
type gatedFeed struct {
	*postgres.DB
	once          sync.Once
	read, release chan struct{}
}

func (f *gatedFeed) CustomersChangedSince(ctx context.Context, ws int64, t time.Time) ([]int64, error) {
	ids, err := f.DB.CustomersChangedSince(ctx, ws, t)
	first := false
	f.once.Do(func() { first = true })
	if first {
		close(f.read)
		select {
		case <-f.release:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	return ids, err
}
