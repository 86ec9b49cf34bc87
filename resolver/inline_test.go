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
// the request's loaders hold its value: a prefetched customer's profile
// parts, or any child field of a customer in a list. Anything else may
// wait on the database and keeps a goroutine of its own.
func TestResolveInline(t *testing.T) {
	r := &Resolver{}
	l := &Loaders{}
	ctx := WithLoaders(context.Background(), l)
	c := &c360.Customer{ID: 7}
	parts := []string{"identities", "consents", "events", "conversations"}
	for _, f := range append(parts, "merges", "observations") {
		if r.ResolveInline(ctx, c, f) {
			t.Errorf("%s of a customer nothing loaded: inline", f)
		}
	}
	l.markPrefetched([]int64{c.ID})
	for _, f := range parts {
		if !r.ResolveInline(ctx, c, f) {
			t.Errorf("%s of a prefetched customer: not inline", f)
		}
		if r.ResolveInline(ctx, &c360.Customer{ID: 8}, f) {
			t.Errorf("%s of another customer: inline", f)
		}
	}
	for _, f := range []string{"merges", "observations"} {
		if r.ResolveInline(ctx, c, f) {
			t.Errorf("%s, which the customer's round trip does not load: inline", f)
		}
	}
	i := 0
	inList := graphql.WithFieldContext(ctx, &graphql.FieldContext{Index: &i})
	if !r.ResolveInline(inList, &c360.Customer{ID: 9}, "merges") {
		t.Errorf("merges of a customer in a list (prefetchCustomers loads it): not inline")
	}
	if r.ResolveInline(ctx, &c360.Conversation{ID: 7}, "messages") {
		t.Errorf("a conversation's messages: inline")
	}
	if r.ResolveInline(context.Background(), c, "events") {
		t.Errorf("a request without loaders: inline")
	}
}
