package graph

import (
	"context"
	"sync/atomic"

	"github.com/99designs/gqlgen/graphql"
)

// gqlgen resolves all but one of an object's resolver fields in goroutines
// of their own, so that fields waiting on the database wait side by side.
// A customer whose parts the request has already loaded (the resolver
// primed its loaders in the round trip that found it) has nothing to wait
// for: each goroutine then costs more than the field it resolves (its
// start, a stack grown as it descends into events and messages, the
// handoffs to and from the scheduler). `make generate` points the generated
// code at resolveField instead of graphql.FieldSet.ResolveConcurrently; it
// asks the resolver root, when it implements InlineResolver, whether the
// field may be resolved in the calling goroutine, and otherwise leaves the
// field to gqlgen.

// InlineResolver is implemented by a ResolverRoot that knows when an
// object's resolver field has nothing to wait for.
type InlineResolver interface {
	// ResolveInline reports whether field of obj may be resolved in the
	// calling goroutine, because what it reads is already loaded.
	ResolveInline(ctx context.Context, obj any, field string) bool
}

// resolveField has graphql.FieldSet.ResolveConcurrently's contract, with the
// field and its object to ask InlineResolver about. A field resolved inline
// is counted as gqlgen counts a delayed one, and a panic in it becomes a
// null and an error as there.
func (ec *executionContext) resolveField(ctx context.Context, out *graphql.FieldSet, deferred *graphql.DeferredGroup,
	field graphql.CollectedField, obj any, i int, recoverFromPanic, nonNull bool,
	resolve func(context.Context) graphql.Marshaler) {
	r, ok := ec.Resolvers.(InlineResolver)
	if !ok || field.IsDeferred() || !r.ResolveInline(ctx, obj, field.Name) {
		out.ResolveConcurrently(ec.OperationContext, deferred, i, recoverFromPanic, nonNull, resolve)
		return
	}
	v := resolveNow(ctx, ec.OperationContext, recoverFromPanic, resolve)
	out.Values[i] = v
	invalid := graphql.Marshaler(graphql.RequiredNull)
	if nonNull {
		invalid = graphql.Null
	}
	if v == invalid {
		atomic.AddUint32(&out.Invalids, 1)
	}
}

func resolveNow(ctx context.Context, oc *graphql.OperationContext, recoverFromPanic bool,
	resolve func(context.Context) graphql.Marshaler) (v graphql.Marshaler) {
	if recoverFromPanic {
		defer func() {
			if r := recover(); r != nil {
				oc.Error(ctx, oc.Recover(ctx, r))
				v = graphql.Null
			}
		}()
	}
	return resolve(ctx)
}

// deferredGroup replaces graphql.NewDeferredGroup in the generated code.
// gqlgen makes a group for every object it marshals: the object's path (a
// walk up the field contexts, and a slice), a field set and a map, about a
// tenth of a customer-360 query's allocations. Only a field with @defer
// ever uses it (ResolveConcurrently adds such a field to the group, and the
// object then hands the group on); any other object gets an empty group,
// whose Defers is empty as the generated code checks.
func deferredGroup(ctx context.Context, fields []graphql.CollectedField) graphql.DeferredGroup {
	for _, f := range fields {
		if f.IsDeferred() {
			return graphql.NewDeferredGroup(ctx)
		}
	}
	return graphql.DeferredGroup{}
}
