package hub_test

import (
	"context"
	"log/slog"
	"sync"
	"testing"

	"github.com/c360dev/c360"
	"github.com/c360dev/c360/hub"
	"github.com/c360dev/c360/internal/pgtest"
	"github.com/c360dev/c360/postgres"
)

// pageFeed records the limit and the size of each feed read of one
// customer.
type pageFeed struct {
	*postgres.DB
	customer int64
	mu       sync.Mutex
	limits   []int
	rows     []int
}

func (f *pageFeed) ChangesAfter(ctx context.Context, after []c360.Change, limit int) ([]c360.Change, error) {
	rows, err := f.DB.ChangesAfter(ctx, after, limit)
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(after) == 1 && after[0].CustomerID == f.customer {
		f.limits, f.rows = append(f.limits, limit), append(f.rows, len(rows))
	}
	return rows, err
}

// A stream resuming over a backlog longer than its queue reads it a
// queue's worth at a time, so that a subscriber catching up holds no more
// than that besides its queue, and still delivers every change, in order.
// It read 200 at a time, whatever the queue.
func TestReplayReadsAQueuesWorthAtATime(t *testing.T) {
	const queue = 8
	db := pgtest.Open(t)
	feed := &pageFeed{DB: db}
	h := hub.New(feed, hub.Options{QueueSize: queue, Logger: slog.New(slog.DiscardHandler)})
	runHub(t, h)
	ws, _, _ := pgtest.Workspace(t, db)
	e := &env{db: db, hub: h, ws: ws}
	id := e.identify(t, "backlog@example.com", nil)
	e.burst(t, "backlog@example.com", 50) // versions 2..51, while nobody listens

	feed.mu.Lock()
	feed.customer = id
	feed.mu.Unlock()
	st, err := h.SubscribeCustomer(context.Background(), ws, id, &hub.Cursor{CustomerID: id, Version: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	for v := int64(2); v <= 51; v++ {
		if c := next(t, st); c.Version != v {
			t.Fatalf("got version %d, want %d", c.Version, v)
		}
	}

	feed.mu.Lock()
	defer feed.mu.Unlock()
	if len(feed.limits) < 50/queue {
		t.Fatalf("%d reads of the backlog (limits %v), want at least %d of a queue's worth", len(feed.limits), feed.limits, 50/queue)
	}
	for i, limit := range feed.limits {
		if limit > queue || feed.rows[i] > queue {
			t.Fatalf("read %d asked for %d changes and got %d, want at most the queue's %d (limits %v)", i, limit, feed.rows[i], queue, feed.limits)
		}
	}
}
