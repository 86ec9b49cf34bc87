package hub_test

import (
	"context"
	"log/slog"
	"testing"

	"github.com/c360dev/c360"
	"github.com/c360dev/c360/hub"
	"github.com/c360dev/c360/internal/pgtest"
)

// inclusiveFeed answers each position with its own row too, as a feed
// read from a replica a little behind, or a page that overlaps the last,
// might: the row at the last version already seen comes back.
type inclusiveFeed struct{ hub.Feed }

func (f inclusiveFeed) ChangesAfter(ctx context.Context, after []c360.Change, limit int) ([]c360.Change, error) {
	back := make([]c360.Change, len(after))
	for i, p := range after {
		back[i] = p
		if back[i].Version > 0 {
			back[i].Version--
		}
	}
	return f.Feed.ChangesAfter(ctx, back, limit)
}

// A change the feed hands back again is delivered once: to a customer
// stream and a workspace stream reading live, and to a customer stream
// resuming after a cursor (its replay). The hub's and the stream's
// version checks are the contract that makes it so; with the database's
// feed, which reads strictly after each position, no other test reaches
// them.
func TestAChangeReadTwiceIsDeliveredOnce(t *testing.T) {
	db := pgtest.Open(t)
	ws, _, _ := pgtest.Workspace(t, db)
	h := hub.New(inclusiveFeed{db}, hub.Options{Logger: slog.New(slog.DiscardHandler)})
	runHub(t, h)
	db.OnCommit = h.Wake
	e := &env{db: db, hub: h, ws: ws}

	id := e.identify(t, "twice@example.com", nil) // v1
	cst, err := h.SubscribeCustomer(context.Background(), ws, id, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer cst.Close()
	wst, err := h.SubscribeWorkspace(ws, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer wst.Close()
	var first *hub.Change
	for v := int64(2); v <= 4; v++ {
		e.identify(t, "twice@example.com", map[string]any{"n": v})
		for _, st := range []hub.Stream{cst, wst} {
			c := next(t, st)
			if c.Version != v {
				t.Fatalf("live: got v%d, want v%d (once each)", c.Version, v)
			}
			if v == 2 && st == hub.Stream(cst) {
				first = c
			}
		}
	}

	// Resuming after v2: the replay reads v2 again and gives v3, v4.
	after, err := hub.DecodeCursor(first.Cursor())
	if err != nil {
		t.Fatal(err)
	}
	resumed, err := h.SubscribeCustomer(context.Background(), ws, id, &after)
	if err != nil {
		t.Fatal(err)
	}
	defer resumed.Close()
	for v := int64(3); v <= 4; v++ {
		if c := next(t, resumed); c.Version != v {
			t.Fatalf("replay: got v%d, want v%d (once each)", c.Version, v)
		}
	}
}
