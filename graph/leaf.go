package graph

import (
	"context"
	"reflect"
	"sync"
	"time"

	"github.com/99designs/gqlgen/graphql"
	"github.com/vektah/gqlparser/v2/ast"
)

// gqlgen resolves every field through graphql.ResolveField: a field context
// (allocated, and put in a context of its own), closures for the
// middleware chain and a panic guard, whatever the field. Most fields of a
// customer-360 query are plain struct fields holding a scalar (an id, a
// name, a time): a quarter of the query's allocations went to resolving
// them. `make generate` points the generated code at resolveLeaf, which
// marshals such a field's value directly and leaves every other field to
// ResolveField.
//
// A field is taken directly only when all of this holds:
//   - the resolver root implements DirectLeaves and says so (no field
//     interceptor is installed, which would see every field);
//   - no directive guards the field (its middleware chain is nil);
//   - it takes no arguments, is selected on an object type (not through an
//     interface or union), and is neither a resolver nor a method (it
//     reads a struct field, which cannot wait, fail or need a context);
//   - its value is a string, number, boolean or time, never null, whose
//     marshaller reads no field context (only a null would).
//
// An error, a value of another type or a panic while reading the value
// sends the field to ResolveField, which reads it again (a struct field
// reads the same) and reports as gqlgen does.

// DirectLeaves is implemented by a ResolverRoot that may let plain scalar
// fields bypass gqlgen's per-field middleware.
type DirectLeaves interface {
	// ResolveLeavesDirectly reports whether no field interceptor is
	// installed: only then may a field skip the middleware.
	ResolveLeavesDirectly() bool
}

// plainFields caches, per field definition of an object type, whether
// gqlgen resolves the field by reading a struct field (neither resolver nor
// method). A field selected through an interface or union is never taken
// directly: its definition is the interface's, shared by implementations
// that may resolve it differently.
// Reads take no lock: every field of every query looks here.
var plainFields sync.Map // *ast.FieldDefinition -> bool

var timeType = reflect.TypeFor[time.Time]()

// leafKind reports whether values of type t marshal without a field
// context: strings (enums included), numbers, booleans and times.
func leafKind(t reflect.Type) bool {
	switch t.Kind() {
	case reflect.String, reflect.Bool, reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Float32, reflect.Float64:
		return true
	}
	return t == timeType
}

// resolveLeaf has graphql.ResolveField's contract, with the resolver root
// to ask DirectLeaves of.
func resolveLeaf[T any](root any, ctx context.Context, oc *graphql.OperationContext, field graphql.CollectedField,
	initializeFieldContext func(ctx context.Context, field graphql.CollectedField) (*graphql.FieldContext, error),
	fieldResolver func(ctx context.Context) (any, error),
	middlewareChain func(ctx context.Context, next graphql.Resolver) graphql.Resolver,
	marshal func(ctx context.Context, sel ast.SelectionSet, v T) graphql.Marshaler,
	recoverFromPanic, nonNull bool) (ret graphql.Marshaler) {
	slow := func() graphql.Marshaler {
		return graphql.ResolveField(ctx, oc, field, initializeFieldContext, fieldResolver, middlewareChain, marshal, recoverFromPanic, nonNull)
	}
	if middlewareChain != nil || len(field.Arguments) > 0 || field.Definition == nil || !leafKind(reflect.TypeFor[T]()) {
		return slow()
	}
	if d, ok := root.(DirectLeaves); !ok || !d.ResolveLeavesDirectly() || !plainField(ctx, field, initializeFieldContext) {
		return slow()
	}
	if recoverFromPanic {
		defer func() {
			if r := recover(); r != nil {
				ret = slow()
			}
		}()
	}
	v, err := fieldResolver(ctx)
	res, ok := v.(T)
	if err != nil || !ok {
		return slow()
	}
	return marshal(ctx, field.Selections, res)
}

// plainField reports whether field is a plain struct field of an object
// type, from its field context, once per definition.
func plainField(ctx context.Context, field graphql.CollectedField,
	initializeFieldContext func(ctx context.Context, field graphql.CollectedField) (*graphql.FieldContext, error)) bool {
	if field.ObjectDefinition == nil || field.ObjectDefinition.Kind != ast.Object {
		return false
	}
	if v, ok := plainFields.Load(field.Definition); ok {
		return v.(bool)
	}
	fc, err := initializeFieldContext(ctx, field)
	plain := err == nil && !fc.IsMethod && !fc.IsResolver
	plainFields.Store(field.Definition, plain)
	return plain
}
