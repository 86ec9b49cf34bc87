package hub_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/c360dev/c360"
	"github.com/c360dev/c360/hub"
)

// identifyMany commits one identify of each of n new people in one
// transaction, as one /v1/batch does.
func (e *env) identifyMany(t *testing.T, prefix string, n int) {
	t.Helper()
	now := time.Now().UTC()
	evs := make([]*c360.Event, n)
	for i := range evs {
		evs[i] = &c360.Event{Type: c360.EventIdentify, Identities: []c360.Identity{{Type: "email", Value: fmt.Sprintf("%s%d@example.com", prefix, i)}},
			Source: "test", DedupeKey: fmt.Sprint(prefix, "-", i), OccurredAt: now, ReceivedAt: now}
	}
	if _, err := e.db.Ingest(context.Background(), e.ws, evs); err != nil {
		t.Fatal(err)
	}
}

// readAll reads n changes from st in the background; the result reports
// how many it got and why it stopped early.
func readAll(st hub.Stream, n int) <-chan error {
	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		seen := map[int64]bool{}
		for got := 0; got < n; got++ {
			c, err := st.Next(ctx)
			if err != nil {
				done <- fmt.Errorf("ended after %d of %d changes: %w", got, n, err)
				return
			}
			if seen[c.CustomerID] {
				done <- fmt.Errorf("customer %d's change delivered twice", c.CustomerID)
				return
			}
			seen[c.CustomerID] = true
		}
		done <- nil
	}()
	return done
}

// One commit that changes more customers than a queue holds reaches a
// workspace stream that keeps reading, whole: the hub reads a batch of
// customers at once, and fanning it all out at once would fill the queue
// of a subscriber however fast it reads.
func TestWorkspaceStreamSurvivesABatchOfManyCustomers(t *testing.T) {
	e := newEnv(t, hub.Options{})
	wst, err := e.hub.SubscribeWorkspace(e.ws, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer wst.Close()
	time.Sleep(50 * time.Millisecond)
	const n = 200 // one /v1/batch of 200 identifies, 200 people
	done := readAll(wst, n)
	e.identifyMany(t, "b", n)
	if err := <-done; err != nil {
		t.Fatalf("workspace stream: %v (stats %+v)", err, e.hub.Stats())
	}
	if d := e.hub.Stats().Dropped; d != 0 {
		t.Fatalf("dropped = %d after a batch to a reader that kept up, want 0", d)
	}
}

// Beside a workspace stream that reads nothing, one that reads gets the
// whole batch; the one that reads nothing is dropped once the catch-up
// time has passed, so what waits for it stays bounded.
func TestWorkspaceStreamThatDoesNotReadIsDroppedAfterCatchUp(t *testing.T) {
	e := newEnv(t, hub.Options{CatchUp: 300 * time.Millisecond})
	reader, err := e.hub.SubscribeWorkspace(e.ws, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer reader.Close()
	stuck, err := e.hub.SubscribeWorkspace(e.ws, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer stuck.Close()
	time.Sleep(50 * time.Millisecond)
	const n = 200
	done := readAll(reader, n)
	start := time.Now()
	e.identifyMany(t, "s", n)
	if err := <-done; err != nil {
		t.Fatalf("reader beside a stuck stream: %v (stats %+v)", err, e.hub.Stats())
	}
	if d := e.hub.Stats().Dropped; d != 1 {
		t.Fatalf("dropped = %d, want the stuck stream", d)
	}
	if took := time.Since(start); took < 300*time.Millisecond {
		t.Errorf("the stuck stream was dropped after %v, before the catch-up time", took)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for got := 0; ; got++ {
		if _, err := stuck.Next(ctx); err == hub.ErrSlow {
			if got != 64 {
				t.Errorf("stuck stream got %d changes before ErrSlow, want a queue's worth (64)", got)
			}
			break
		} else if err != nil {
			t.Fatalf("stuck: %v, want ErrSlow after what was queued", err)
		}
	}
}
