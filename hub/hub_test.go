package hub_test

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/c360dev/c360"
	"github.com/c360dev/c360/hub"
	"github.com/c360dev/c360/internal/pgtest"
	"github.com/c360dev/c360/postgres"
)

func TestMain(m *testing.M) {
	code := m.Run()
	pgtest.Drop()
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintf(os.Stderr, "goleak: %v\n", err)
			code = 1
		}
	}
	os.Exit(code)
}

func TestCursorRoundTrip(t *testing.T) {
	for _, c := range []hub.Cursor{{CustomerID: 1, Version: 0}, {CustomerID: 123456789, Version: 42}, {CustomerID: 1 << 62, Version: 1 << 40}} {
		got, err := hub.DecodeCursor(c.Encode())
		if err != nil || got != c {
			t.Errorf("DecodeCursor(Encode(%+v)) = %+v, %v", c, got, err)
		}
	}
	for _, bad := range []string{"", "x", "Y2hnLjE", "bm90LmEuY3Vyc29y", c360.Cursor{ID: 5}.Encode(), "Y2hnLi0xLjE"} {
		if _, err := hub.DecodeCursor(bad); c360.ErrorCode(err) != c360.EINVALID {
			t.Errorf("DecodeCursor(%q) error %v, want BAD_USER_INPUT", bad, err)
		}
	}
}

// env is a running hub on a real store, woken after every commit.
type env struct {
	db  *postgres.DB
	hub *hub.Hub
	ws  int64
}

func newEnv(t *testing.T, opts hub.Options) *env {
	t.Helper()
	db := pgtest.Open(t)
	ws, _, _ := pgtest.Workspace(t, db)
	opts.Logger = slog.New(slog.DiscardHandler)
	h := hub.New(db, opts)
	runHub(t, h)
	db.OnCommit = h.Wake
	return &env{db: db, hub: h, ws: ws}
}

// runHub runs h until the test ends.
func runHub(t *testing.T, h *hub.Hub) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); h.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
}

func (e *env) identify(t *testing.T, addr string, traits map[string]any) int64 {
	t.Helper()
	now := time.Now().UTC()
	res, err := e.db.Ingest(context.Background(), e.ws, []*c360.Event{{Type: c360.EventIdentify,
		Identities: []c360.Identity{{Type: "email", Value: addr}}, Traits: traits, Source: "test",
		DedupeKey: fmt.Sprint(time.Now().UnixNano()), OccurredAt: now, ReceivedAt: now}})
	if err != nil {
		t.Fatal(err)
	}
	return res[0].CustomerID
}

func next(t *testing.T, st hub.Stream) *hub.Change {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := st.Next(ctx)
	if err != nil {
		t.Fatalf("next: %v", err)
	}
	return c
}

// Subscribers of one customer share one read of the feed per wake and the
// same *Change.
func TestFanoutSharesOneRead(t *testing.T) {
	// No periodic resync: it would read the feed between the counts.
	e := newEnv(t, hub.Options{ResyncInterval: -1})
	id := e.identify(t, "a@example.com", nil)
	ctx := context.Background()
	var streams []*hub.CustomerStream
	for i := 0; i < 50; i++ {
		st, err := e.hub.SubscribeCustomer(ctx, e.ws, id, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer st.Close()
		streams = append(streams, st)
	}
	// Past the initial catch-up read of each stream.
	e.identify(t, "a@example.com", map[string]any{"n": 1})
	for _, st := range streams {
		next(t, st)
	}
	reads := e.hub.Stats().Reads
	e.identify(t, "a@example.com", map[string]any{"n": 2})
	first := next(t, streams[0])
	for _, st := range streams[1:] {
		if c := next(t, st); c != first {
			t.Fatal("subscribers got different *Change values for one change")
		}
	}
	if got := e.hub.Stats().Reads - reads; got != 1 {
		t.Fatalf("feed reads for one change with 50 subscribers = %d, want 1", got)
	}
	for _, st := range streams {
		st.Close()
	}
	if s := e.hub.Stats(); s.Subscribers != 0 || s.Topics != 0 {
		t.Fatalf("after close: %+v, want nothing registered", s)
	}
}

// A subscriber whose queue fills is dropped with ErrSlow, without blocking
// the hub or the other subscribers.
func TestSlowSubscriberIsDropped(t *testing.T) {
	e := newEnv(t, hub.Options{QueueSize: 3})
	id := e.identify(t, "b@example.com", nil)
	ctx := context.Background()
	slow, err := e.hub.SubscribeCustomer(ctx, e.ws, id, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer slow.Close()
	fast, err := e.hub.SubscribeCustomer(ctx, e.ws, id, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer fast.Close()
	// Step by step: the fast one reads each change before the next commit,
	// the slow one reads nothing.
	for v := int64(2); v <= 11; v++ {
		e.identify(t, "b@example.com", map[string]any{"n": v})
		if c := next(t, fast); c.Version != v {
			t.Fatalf("fast got version %d, want %d", c.Version, v)
		}
	}
	if e.hub.Stats().Dropped != 1 {
		t.Fatalf("dropped = %d, want 1", e.hub.Stats().Dropped)
	}
	// The slow one reads what was queued, then learns it was dropped.
	for {
		_, err := slow.Next(ctx)
		if err == hub.ErrSlow {
			break
		} else if err != nil {
			t.Fatalf("slow: %v, want ErrSlow", err)
		}
	}
}

// burst commits n changes of the customer at addr in one transaction, as a
// backfill through /v1/batch does.
func (e *env) burst(t *testing.T, addr string, n int) {
	t.Helper()
	now := time.Now().UTC()
	evs := make([]*c360.Event, n)
	for i := range evs {
		evs[i] = &c360.Event{Type: c360.EventTrack, Name: "Backfilled", Identities: []c360.Identity{{Type: "email", Value: addr}},
			Source: "test", DedupeKey: fmt.Sprint("burst-", now.UnixNano(), "-", i), OccurredAt: now, ReceivedAt: now}
	}
	if _, err := e.db.Ingest(context.Background(), e.ws, evs); err != nil {
		t.Fatal(err)
	}
}

// One commit of more changes than a queue holds reaches a subscriber that
// keeps reading, whole and in order: the rest of the burst is read once it
// took what it had, not held against it as slowness. One that reads
// nothing is dropped once the catch-up time has passed, and does not hold
// the other back beyond it.
func TestBurstLargerThanTheQueue(t *testing.T) {
	e := newEnv(t, hub.Options{QueueSize: 8, CatchUp: 300 * time.Millisecond})
	id := e.identify(t, "burst@example.com", nil)
	ctx := context.Background()
	reader, err := e.hub.SubscribeCustomer(ctx, e.ws, id, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer reader.Close()
	e.burst(t, "burst@example.com", 30)
	for v := int64(2); v <= 31; v++ {
		if c := next(t, reader); c.Version != v {
			t.Fatalf("reader got version %d, want %d", c.Version, v)
		}
	}
	if d := e.hub.Stats().Dropped; d != 0 {
		t.Fatalf("dropped = %d after a burst to a reader that kept up, want 0", d)
	}

	stuck, err := e.hub.SubscribeCustomer(ctx, e.ws, id, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer stuck.Close()
	e.burst(t, "burst@example.com", 30)
	for v := int64(32); v <= 61; v++ {
		if c := next(t, reader); c.Version != v {
			t.Fatalf("beside a stuck subscriber, reader got version %d, want %d", c.Version, v)
		}
	}
	if d := e.hub.Stats().Dropped; d != 1 {
		t.Fatalf("dropped = %d, want the stuck subscriber", d)
	}
	for {
		if _, err := stuck.Next(ctx); err == hub.ErrSlow {
			break
		} else if err != nil {
			t.Fatalf("stuck: %v, want ErrSlow after what was queued", err)
		}
	}
}

// Resuming from a cursor replays from the feed, then goes live, with no gap
// or duplicate while writes race the subscription.
func TestResumeRacesWrites(t *testing.T) {
	e := newEnv(t, hub.Options{})
	id := e.identify(t, "c@example.com", nil)
	for i := 0; i < 5; i++ {
		e.identify(t, "c@example.com", map[string]any{"n": i})
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; i < 30; i++ {
			e.identify(t, "c@example.com", map[string]any{"m": i})
		}
	}()
	// A resume of an unknown customer, with its own cursor or another's,
	// is refused before anything is followed.
	for _, after := range []*hub.Cursor{{CustomerID: id + 1000000, Version: 1}, {CustomerID: id, Version: 1}} {
		if _, err := e.hub.SubscribeCustomer(context.Background(), e.ws, id+1000000, after); c360.ErrorCode(err) != c360.ENOTFOUND {
			t.Fatalf("resume of an unknown customer after %+v: %v, want %s", after, err, c360.ENOTFOUND)
		}
	}
	st, err := e.hub.SubscribeCustomer(context.Background(), e.ws, id, &hub.Cursor{CustomerID: id, Version: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	// A position the feed has not reached (the feed has at most 36) is
	// refused, not accepted into a stream that would stay silent.
	if _, err := e.hub.SubscribeCustomer(context.Background(), e.ws, id, &hub.Cursor{CustomerID: id, Version: 1000}); c360.ErrorCode(err) != c360.EINVALID {
		t.Errorf("resume after version 1000: %v, want %s", err, c360.EINVALID)
	}
	for v := int64(3); v <= 36; v++ {
		if c := next(t, st); c.Version != v {
			t.Fatalf("got version %d, want %d", c.Version, v)
		}
	}
	wg.Wait()
}

// The workspace stream sees every customer's changes of its workspace, of
// the kinds asked for, and none of another workspace.
func TestWorkspaceStream(t *testing.T) {
	e := newEnv(t, hub.Options{})
	other, _, _ := pgtest.Workspace(t, e.db)
	st, err := e.hub.SubscribeWorkspace(e.ws, []string{c360.ChangeCreated})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	now := time.Now().UTC()
	if _, err := e.db.Ingest(context.Background(), other, []*c360.Event{{Type: c360.EventIdentify,
		Identities: []c360.Identity{{Type: "email", Value: "x@example.com"}}, Source: "test", DedupeKey: "o1",
		OccurredAt: now, ReceivedAt: now}}); err != nil {
		t.Fatal(err)
	}
	a := e.identify(t, "d@example.com", nil)
	e.identify(t, "d@example.com", map[string]any{"n": 1}) // traits: filtered out
	b := e.identify(t, "e@example.com", nil)
	// Changes of different customers may arrive in either order.
	got := map[int64]bool{}
	for range 2 {
		c := next(t, st)
		if c.Kind != c360.ChangeCreated || c.WorkspaceID != e.ws {
			t.Fatalf("got %d %s in workspace %d, want created in %d", c.CustomerID, c.Kind, c.WorkspaceID, e.ws)
		}
		got[c.CustomerID] = true
	}
	if !got[a] || !got[b] {
		t.Fatalf("got %v, want the created changes of %d and %d", got, a, b)
	}
}

// A stream ends with ErrClosed when the hub stops, and cannot start after.
func TestHubStop(t *testing.T) {
	db := pgtest.Open(t)
	ws, _, _ := pgtest.Workspace(t, db)
	h := hub.New(db, hub.Options{Logger: slog.New(slog.DiscardHandler)})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		h.Run(ctx)
	}()
	st, err := h.SubscribeWorkspace(ws, nil)
	if err != nil {
		t.Fatal(err)
	}
	cancel()
	<-done
	if _, err := st.Next(context.Background()); err != hub.ErrClosed {
		t.Fatalf("Next after stop: %v, want ErrClosed", err)
	}
	if _, err := h.SubscribeWorkspace(ws, nil); c360.ErrorCode(err) != c360.EUNAVAILABLE {
		t.Fatalf("subscribe after stop: %v, want UNAVAILABLE", err)
	}
}

// Shared computes once for concurrent callers, hands a value that may not
// be kept to the callers waiting for it, and computes again for a caller
// that comes after the failure.
func TestChangeShared(t *testing.T) {
	c := &hub.Change{}
	var calls int
	var mu sync.Mutex
	compute := func() (any, bool) {
		mu.Lock()
		calls++
		n := calls
		mu.Unlock()
		time.Sleep(10 * time.Millisecond)
		return n, n > 1 // the first result may not be kept
	}
	var wg sync.WaitGroup
	for i := 0; i < 20; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			v, err := c.Shared(context.Background(), "k", compute)
			if err != nil || v.(int) < 1 {
				t.Errorf("Shared = %v, %v", v, err)
			}
		}()
	}
	wg.Wait()
	if calls < 1 || calls > 2 {
		t.Fatalf("compute ran %d times for concurrent callers, want once (twice if one came after the failure)", calls)
	}
	first := calls
	// The failure was not kept: the next caller computes, and its value is.
	for range 2 {
		if v, err := c.Shared(context.Background(), "k", compute); err != nil || v.(int) != first+1 {
			t.Fatalf("Shared after the failure = %v, %v, want %d", v, err, first+1)
		}
	}
	if calls != first+1 {
		t.Fatalf("compute ran %d times, want %d (the kept value is shared)", calls, first+1)
	}
}

// The callers waiting for a value that failed get the failure at once
// rather than computing it again one after another: N subscribers of a
// message change during an outage get their 1013 after one ReadRetry, not
// after N of them.
func TestSharedFailureIsNotComputedAgainByEachWaiter(t *testing.T) {
	const read, subscribers = 200 * time.Millisecond, 5
	c := &hub.Change{}
	start := time.Now()
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		last  time.Duration
		calls int
	)
	for range subscribers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			v, err := c.Shared(context.Background(), "message", func() (any, bool) {
				mu.Lock()
				calls++
				mu.Unlock()
				time.Sleep(read)
				return "failed", false
			})
			if err != nil || v != "failed" {
				t.Errorf("Shared = %v, %v, want the failure", v, err)
			}
			mu.Lock()
			last = max(last, time.Since(start))
			mu.Unlock()
		}()
	}
	wg.Wait()
	if last > 2*read {
		t.Errorf("the last of %d subscribers answered after %v (compute ran %d times), want about one read (%v)", subscribers, last, calls, read)
	}
}

// When the caller computing a value leaves (its ctx ends) and compute fails
// for that, the failure is not the value's: one of the waiting callers
// computes it, and the others share what it computed.
func TestSharedReelectsWhenTheComputingCallerLeaves(t *testing.T) {
	c := &hub.Change{}
	ctx, cancel := context.WithCancel(context.Background())
	started, release := make(chan struct{}), make(chan struct{})
	filler := make(chan any, 1)
	go func() {
		v, _ := c.Shared(ctx, "message", func() (any, bool) {
			close(started)
			<-release
			return ctx.Err(), false // the read ended with its caller's ctx
		})
		filler <- v
	}()
	<-started

	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		calls int
	)
	for range 5 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			v, err := c.Shared(context.Background(), "message", func() (any, bool) {
				mu.Lock()
				calls++
				mu.Unlock()
				time.Sleep(20 * time.Millisecond)
				return "message", true
			})
			if err != nil || v != "message" {
				t.Errorf("waiter's Shared = %v, %v, want the value computed again", v, err)
			}
		}()
	}
	time.Sleep(50 * time.Millisecond) // the waiters wait on the filler's entry
	cancel()
	close(release)
	wg.Wait()
	if v := <-filler; v != context.Canceled {
		t.Errorf("the leaving caller's Shared = %v, want its own failure", v)
	}
	if calls != 1 {
		t.Errorf("the waiters computed %d times, want once (one elected, the others share its value)", calls)
	}
}

// Wait returns once Next has a change to return at once, at once when its
// context has ended, and when the stream is closed (it does not watch its
// context while it blocks); Next returns ctx's error when ctx ends while it
// waits.
func TestStreamWait(t *testing.T) {
	e := newEnv(t, hub.Options{})
	id := e.identify(t, "w@example.com", nil)
	st, err := e.hub.SubscribeCustomer(context.Background(), e.ws, id, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	ended, cancel := context.WithCancel(context.Background())
	cancel()

	e.identify(t, "w@example.com", map[string]any{"n": 1})
	ctx, cancelWait := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancelWait()
	st.Wait(ctx)
	if ctx.Err() != nil {
		t.Fatal("Wait returned only when its context ended, with a change to deliver")
	}
	// Next has the change at hand: it returns it even with an ended context.
	if c, err := st.Next(ended); err != nil || c.Version != 2 {
		t.Fatalf("Next after Wait: %v, %v, want version 2", c, err)
	}

	st.Wait(ended) // nothing to deliver: returns because ctx ended
	if _, err := st.Next(ended); err != context.Canceled {
		t.Fatalf("Next with an ended context: %v, want context.Canceled", err)
	}

	done := make(chan struct{})
	go func() {
		defer close(done)
		st.Wait(context.Background())
	}()
	st.Close()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Wait did not return when the stream was closed")
	}
	if _, err := st.Next(context.Background()); err != hub.ErrClosed {
		t.Fatalf("Next after Close: %v, want ErrClosed", err)
	}
}
