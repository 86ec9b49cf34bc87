package hub_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/c360dev/c360"
	"github.com/c360dev/c360/hub"
)

// A client that saved the cursor of a merged_into change (M into X) and
// reconnects after X was merged into S resumes exactly where a stream that
// stayed connected went on: X's changes from the one that absorbed M, then,
// through X's merged_into, S's. Following M's current pointer (S) straight
// away skipped X's changes and guessed a place in S's feed by time.
func TestResumeAfterATwoStepMerge(t *testing.T) {
	e := newEnv(t, hub.Options{})
	ctx := context.Background()
	m := e.identify(t, "m@example.com", nil)
	x := e.identify(t, "x@example.com", nil)
	s := e.identify(t, "s@example.com", nil)
	stayed, err := e.hub.SubscribeCustomer(ctx, e.ws, m, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer stayed.Close()
	left, err := e.hub.SubscribeCustomer(ctx, e.ws, m, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.db.MergeCustomers(ctx, e.ws, x, m, true, "test", "M into X"); err != nil {
		t.Fatal(err)
	}
	c := next(t, left)
	if c.Kind != c360.ChangeMergedInto {
		t.Fatalf("first change = %s, want merged_into", c.Kind)
	}
	saved := hub.Cursor{CustomerID: c.CustomerID, Version: c.Version}
	left.Close()

	e.identify(t, "x@example.com", map[string]any{"plan": "pro"}) // a change of X
	if _, err := e.db.MergeCustomers(ctx, e.ws, s, x, true, "test", "X into S"); err != nil {
		t.Fatal(err)
	}
	e.identify(t, "s@example.com", map[string]any{"plan": "team"}) // a change of S after it

	// Until S's change after the second merge: 1 (M) + 3 (X) + 2 (S).
	seq := func(st hub.Stream, n int) string {
		var out []string
		for range n {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			c, err := st.Next(ctx)
			cancel()
			if err != nil {
				t.Fatalf("after %s: %v", strings.Join(out, ", "), err)
			}
			out = append(out, fmt.Sprintf("%d/%d %s", c.CustomerID, c.Version, c.Kind))
		}
		return strings.Join(out, ", ")
	}
	want := seq(stayed, 6)
	resumed, err := e.hub.SubscribeCustomer(ctx, e.ws, m, &saved)
	if err != nil {
		t.Fatal(err)
	}
	defer resumed.Close()
	if got := seq(resumed, 5); got != want[strings.Index(want, ", ")+2:] {
		t.Errorf("resumed after M's merged_into: %s\nthe stream that stayed, after it: %s", got, want[strings.Index(want, ", ")+2:])
	}
}
