package graph

import (
	"context"

	"github.com/99designs/gqlgen/graphql"
)

// gqlgen resolves the elements of every object list in goroutines, one per
// element. For a list whose elements reach no resolver field (an edge, an
// event, a message, an identity) that buys nothing: the elements are plain
// values already loaded, and each goroutine costs more than the element it
// marshals (its start, a stack grown while it descends into the fields,
// scheduling). `make generate` points the generated code at marshalSlice
// instead of graphql.MarshalSliceConcurrently; it marshals those lists in
// the calling goroutine and leaves every other list to gqlgen.
//
// Lists whose elements do reach resolvers (customers, conversations) stay
// concurrent: their children may wait on a dataloader's batch window, and
// siblings must register their keys within it.

// serialElements are the object types whose lists are marshalled in the
// calling goroutine. TestSerialElementsReachNoResolver checks that none of
// them reaches a type with resolver fields.
var serialElements = map[string]bool{
	"EventEdge": true, "Event": true, "EventSummary": true,
	"MessageEdge": true, "Message": true, "ContextConversation": true,
	"Identity": true, "IdentityLimit": true, "DroppedIdentity": true, "Consent": true, "MergeRecord": true,
	"TraitSource": true, "Observation": true,
	"AuditEdge": true, "AuditEntry": true, "DeadLetterEdge": true, "DeadLetter": true, "ApiKey": true,
}

// marshalSlice has graphql.MarshalSliceConcurrently's signature and
// contract (a field context per element, a panic in one element becomes a
// null and an error).
func marshalSlice(ctx context.Context, length int, workerLimit int64, omitPanicHandler bool,
	marshalElement func(ctx context.Context, i int) graphql.Marshaler) graphql.Array {
	fc := graphql.GetFieldContext(ctx)
	if length < 2 || fc == nil || fc.Field.Definition == nil || !serialElements[fc.Field.Definition.Type.Name()] {
		return graphql.MarshalSliceConcurrently(ctx, length, workerLimit, omitPanicHandler, marshalElement)
	}
	ret := make(graphql.Array, length)
	for i := range length {
		childCtx := graphql.WithFieldContext(ctx, &graphql.FieldContext{Index: &i})
		if omitPanicHandler {
			ret[i] = marshalElement(childCtx, i)
			continue
		}
		func() {
			defer func() {
				if r := recover(); r != nil {
					graphql.AddError(childCtx, graphql.Recover(childCtx, r))
					ret[i] = graphql.Null
				}
			}()
			ret[i] = marshalElement(childCtx, i)
		}()
	}
	return ret
}
