package resolver

import (
	"context"
	"testing"

	"github.com/99designs/gqlgen/graphql"

	"github.com/c360dev/c360"
	"github.com/c360dev/c360/graph"
)

var _ graph.InlineResolver = (*Resolver)(nil)

// A customer's child field is resolved in the calling goroutine only when
// a profile load primed the request's loaders with it. Anything else may
// wait on the database, or on a loader's batch window, and keeps a
// goroutine of its own: a part whose load failed, merges, observations,
// another customer's parts, a conversation's messages.
func TestResolveInline(t *testing.T) {
	r := &Resolver{}
	l := &Loaders{}
	ctx := WithLoaders(context.Background(), l)
	c := &c360.Customer{ID: 7}
	all := []string{"identities", "consents", "events", "conversations", "merges", "observations"}
	inline := func(ctx context.Context, c *c360.Customer) (out []string) {
		for _, f := range all {
			if r.ResolveInline(ctx, c, f) {
				out = append(out, f)
			}
		}
		return out
	}
	if got := inline(ctx, c); len(got) != 0 {
		t.Errorf("a customer nothing loaded: %v inline", got)
	}
	// A single-customer root whose profile load was refused marks the
	// customer prefetched, and a list element is in a list; neither loaded
	// anything.
	l.markPrefetched([]int64{c.ID})
	i := 0
	if got := inline(graphql.WithFieldContext(ctx, &graphql.FieldContext{Index: &i}), c); len(got) != 0 {
		t.Errorf("a prefetched customer in a list whose load failed: %v inline", got)
	}
	l.markLoaded([]int64{c.ID}, c360.ProfileRequest{Identities: true, Events: []c360.PageArgs{{First: 20}}})
	if got := inline(ctx, c); len(got) != 2 || got[0] != "identities" || got[1] != "events" {
		t.Errorf("after loading identities and events: %v inline, want just those", got)
	}
	if got := inline(ctx, &c360.Customer{ID: 8}); len(got) != 0 {
		t.Errorf("another customer: %v inline", got)
	}
	if r.ResolveInline(ctx, &c360.Conversation{ID: 7}, "messages") {
		t.Errorf("a conversation's messages: inline")
	}
	if r.ResolveInline(context.Background(), c, "events") {
		t.Errorf("a request without loaders: inline")
	}
}
