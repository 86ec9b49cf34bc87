package graph

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/99designs/gqlgen/graphql"
	"github.com/vektah/gqlparser/v2/ast"
)

type leafRoot struct{ direct bool }

func (r leafRoot) ResolveLeavesDirectly() bool { return r.direct }

// leafCall resolves one field with resolveLeaf and reports its JSON, the
// errors it added, and whether the marshaller ran under the field's own
// field context (the slow path) or the parent's (the direct one).
type leafCall struct {
	root       any
	args       ast.ArgumentList
	fc         graphql.FieldContext // what initializeFieldContext returns
	middleware func(ctx context.Context, next graphql.Resolver) graphql.Resolver
	value      func() (any, error)
	// def, obj and init, when set, stand for the field's definition, the
	// type it is selected on and its generated field context function.
	def  *ast.FieldDefinition
	obj  *ast.Definition
	init func(ctx context.Context, field graphql.CollectedField) (*graphql.FieldContext, error)
}

func runLeaf[T any](t *testing.T, c leafCall, marshal func(T) graphql.Marshaler) (string, gqlerror, bool) {
	t.Helper()
	ctx := graphql.WithResponseContext(context.Background(), graphql.DefaultErrorPresenter, nil)
	parent := &graphql.FieldContext{Object: "Parent", Field: graphql.CollectedField{Field: &ast.Field{Alias: "parent", Name: "parent"}}}
	ctx = graphql.WithFieldContext(ctx, parent)
	quiet := func(context.Context, any) error { return errors.New("internal system error") }
	oc := &graphql.OperationContext{RecoverFunc: quiet,
		ResolverMiddleware: func(ctx context.Context, next graphql.Resolver) (any, error) { return next(ctx) }}
	def := c.def
	if def == nil {
		def = &ast.FieldDefinition{Name: "f"}
	}
	obj := c.obj
	if obj == nil {
		obj = &ast.Definition{Kind: ast.Object, Name: "Obj"}
	}
	field := graphql.CollectedField{Field: &ast.Field{Alias: "f", Name: "f", Arguments: c.args, Definition: def, ObjectDefinition: obj}}
	init := c.init
	if init == nil {
		init = func(ctx context.Context, field graphql.CollectedField) (*graphql.FieldContext, error) {
			fc := c.fc
			fc.Object, fc.Field = "Obj", field
			return &fc, nil
		}
	}
	var own bool
	m := marshal
	v := resolveLeaf(c.root, ctx, oc, field,
		init,
		func(ctx context.Context) (any, error) { return c.value() },
		c.middleware,
		func(ctx context.Context, _ ast.SelectionSet, v T) graphql.Marshaler {
			own = graphql.GetFieldContext(ctx) != parent
			return m(v)
		},
		true, true)
	var b strings.Builder
	v.MarshalGQL(&b)
	return b.String(), gqlerror(graphql.GetErrors(ctx).Error()), own
}

type gqlerror string

// A plain scalar field is marshalled directly; every field that may need
// its field context, its middleware or error reporting goes to gqlgen.
func TestResolveLeaf(t *testing.T) {
	t.Cleanup(clearPlainFields)
	intValue := func() (any, error) { return int64(42), nil }
	direct := leafRoot{direct: true}
	for _, tc := range []struct {
		name   string
		call   leafCall
		direct bool
	}{
		{"plain field", leafCall{root: direct, value: intValue}, true},
		{"root without DirectLeaves", leafCall{root: struct{}{}, value: intValue}, false},
		{"root says no", leafCall{root: leafRoot{}, value: intValue}, false},
		{"resolver field", leafCall{root: direct, fc: graphql.FieldContext{IsResolver: true}, value: intValue}, false},
		{"method field", leafCall{root: direct, fc: graphql.FieldContext{IsMethod: true}, value: intValue}, false},
		{"arguments", leafCall{root: direct, args: ast.ArgumentList{{Name: "a"}}, value: intValue}, false},
		{"directive", leafCall{root: direct, value: intValue,
			middleware: func(ctx context.Context, next graphql.Resolver) graphql.Resolver { return next }}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clearPlainFields()
			out, errs, own := runLeaf(t, tc.call, graphql.MarshalInt64)
			if out != "42" || errs != "" {
				t.Fatalf("got %s, errors %q; want 42 and none", out, errs)
			}
			if own == tc.direct {
				t.Errorf("marshalled under its own field context: %v, want %v", own, !tc.direct)
			}
		})
	}

	// A value of a type that may be null, or that is not a scalar, is left
	// to gqlgen whatever the field.
	clearPlainFields()
	s := "x"
	if _, _, own := runLeaf(t, leafCall{root: direct, value: func() (any, error) { return &s, nil }},
		func(v *string) graphql.Marshaler { return graphql.MarshalString(*v) }); !own {
		t.Error("a *string field was marshalled directly")
	}
	if _, _, own := runLeaf(t, leafCall{root: direct, value: func() (any, error) { return []string{"a"}, nil }},
		func(v []string) graphql.Marshaler { return graphql.MarshalString(v[0]) }); !own {
		t.Error("a list field was marshalled directly")
	}

	// A field selected through an interface has the interface's definition,
	// shared by implementations that may resolve it differently: a plain
	// struct field in one type must not make it direct in another.
	clearPlainFields()
	shared := &ast.FieldDefinition{Name: "f"}
	iface := &ast.Definition{Kind: ast.Interface, Name: "I"}
	plainInit := func(ctx context.Context, field graphql.CollectedField) (*graphql.FieldContext, error) {
		return &graphql.FieldContext{Object: "A", Field: field}, nil
	}
	resolverInit := func(ctx context.Context, field graphql.CollectedField) (*graphql.FieldContext, error) {
		return &graphql.FieldContext{Object: "B", Field: field, IsResolver: true}, nil
	}
	for _, init := range []func(context.Context, graphql.CollectedField) (*graphql.FieldContext, error){plainInit, resolverInit} {
		if _, _, own := runLeaf(t, leafCall{root: direct, value: intValue, def: shared, obj: iface, init: init}, graphql.MarshalInt64); !own {
			t.Error("a field selected through an interface was marshalled directly")
		}
	}

	// An error, and a panic, are reported as gqlgen reports them: with the
	// field's path, and a null.
	clearPlainFields()
	out, errs, _ := runLeaf(t, leafCall{root: direct, value: func() (any, error) { return nil, errors.New("no value") }}, graphql.MarshalInt64)
	if out != "null" || !strings.Contains(string(errs), "no value") || !strings.Contains(string(errs), "parent.f") {
		t.Errorf("error: got %s, errors %q; want null and the error at parent.f", out, errs)
	}
	clearPlainFields()
	out, errs, _ = runLeaf(t, leafCall{root: direct, value: func() (any, error) { panic("boom") }}, graphql.MarshalInt64)
	if out != "null" || !strings.Contains(string(errs), "internal system error") || !strings.Contains(string(errs), "parent.f") {
		t.Errorf("panic: got %s, errors %q; want null and an error at parent.f", out, errs)
	}
}

func clearPlainFields() { plainFields.Clear() }
