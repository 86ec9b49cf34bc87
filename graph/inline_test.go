package graph

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/99designs/gqlgen/graphql"
	"github.com/vektah/gqlparser/v2/ast"
)

// inlineRoot is a resolver root that answers ResolveInline with inline.
type inlineRoot struct {
	ResolverRoot
	inline bool
	asked  []string
}

func (r *inlineRoot) ResolveInline(_ context.Context, obj any, field string) bool {
	r.asked = append(r.asked, field)
	return r.inline && obj == "the customer"
}

func TestResolveField(t *testing.T) {
	me := goroutineID()
	for _, inline := range []bool{true, false} {
		root := &inlineRoot{inline: inline}
		ec := &executionContext{&graphql.ExecutionContextState[ResolverRoot, DirectiveRoot, ComplexityRoot]{
			OperationContext:      &graphql.OperationContext{RecoverFunc: graphql.DefaultRecover},
			ExecutableSchemaState: &graphql.ExecutableSchemaState[ResolverRoot, DirectiveRoot, ComplexityRoot]{Resolvers: root},
		}}
		ctx := graphql.WithResponseContext(context.Background(), graphql.DefaultErrorPresenter, graphql.DefaultRecover)
		fields := []graphql.CollectedField{
			{Field: &ast.Field{Name: "a"}}, {Field: &ast.Field{Name: "b"}}, {Field: &ast.Field{Name: "c"}}, {Field: &ast.Field{Name: "d"}},
		}
		out := graphql.NewFieldSet(fields)
		deferred := graphql.NewDeferredGroup(ctx)
		var mu sync.Mutex        // fields left to gqlgen run side by side
		ran := map[string]bool{} // field: ran on the caller's goroutine
		resolve := func(name string, v graphql.Marshaler) func(context.Context) graphql.Marshaler {
			return func(context.Context) graphql.Marshaler {
				mu.Lock()
				ran[name] = goroutineID() == me
				mu.Unlock()
				if v == nil {
					panic("boom")
				}
				return v
			}
		}
		ec.resolveField(ctx, out, &deferred, fields[0], "the customer", 0, true, true, resolve("a", graphql.MarshalInt(1)))
		ec.resolveField(ctx, out, &deferred, fields[1], "the customer", 1, true, true, resolve("b", graphql.Null))
		ec.resolveField(ctx, out, &deferred, fields[2], "the customer", 2, true, false, resolve("c", nil))
		// Another object, which the root does not vouch for.
		ec.resolveField(ctx, out, &deferred, fields[3], "someone else", 3, true, false, resolve("d", graphql.MarshalInt(4)))
		if inline {
			// Resolved at once, on the caller's goroutine, before Dispatch.
			if out.Values[0] == nil || out.Values[1] != graphql.Null || out.Values[2] != graphql.Null || !ran["a"] || !ran["c"] {
				t.Errorf("inline: values %v, ran %v; want a, b and c resolved at once on the caller's goroutine", out.Values, ran)
			}
			if _, ok := ran["d"]; ok {
				t.Errorf("inline: d ran before Dispatch though the root did not vouch for its object")
			}
		} else if len(ran) != 0 {
			t.Errorf("not inline: %v ran before Dispatch", ran)
		}
		out.Dispatch(ctx)
		if len(ran) != 4 || out.Values[3] == nil {
			t.Fatalf("inline %v: after Dispatch ran %v, values %v", inline, ran, out.Values)
		}
		// Left to gqlgen, all but the first delayed field run in goroutines
		// of their own.
		if !inline && (!ran["a"] || ran["b"] || ran["d"]) {
			t.Errorf("not inline: ran on the caller's goroutine %v, want a only", ran)
		}
		// Counted as gqlgen counts delayed fields: b (non-null, Null) makes
		// the object invalid; c panicked into a null (nullable: valid) and
		// one error.
		if out.Invalids != 1 {
			t.Errorf("inline %v: invalids = %d, want 1", inline, out.Invalids)
		}
		if errs := graphql.GetErrors(ctx); len(errs) != 1 {
			t.Errorf("inline %v: %d errors, want 1 for the panic", inline, len(errs))
		}
		if len(root.asked) != 4 {
			t.Errorf("inline %v: asked about %v, want every field", inline, root.asked)
		}
	}
}

// A deferred field is gqlgen's to schedule (it belongs to a later payload),
// whatever the resolver root says.
func TestResolveFieldLeavesDeferredFieldsToGqlgen(t *testing.T) {
	root := &inlineRoot{inline: true}
	ec := &executionContext{&graphql.ExecutionContextState[ResolverRoot, DirectiveRoot, ComplexityRoot]{
		OperationContext:      &graphql.OperationContext{RecoverFunc: graphql.DefaultRecover},
		ExecutableSchemaState: &graphql.ExecutableSchemaState[ResolverRoot, DirectiveRoot, ComplexityRoot]{Resolvers: root},
	}}
	ctx := graphql.WithResponseContext(context.Background(), graphql.DefaultErrorPresenter, graphql.DefaultRecover)
	fields := []graphql.CollectedField{{Field: &ast.Field{Name: "a"}, Deferrables: []*graphql.Deferrable{{Label: "later"}}}}
	out := graphql.NewFieldSet(fields)
	deferred := graphql.NewDeferredGroup(ctx)
	ran := false
	ec.resolveField(ctx, out, &deferred, fields[0], "the customer", 0, true, false, func(context.Context) graphql.Marshaler {
		ran = true
		return graphql.MarshalInt(1)
	})
	if ran || out.Values[0] != graphql.Null {
		t.Errorf("deferred field: ran %v, value %v; want it left for the deferred payload (null now)", ran, out.Values[0])
	}
}

// An object none of whose fields is deferred gets an empty group, which
// costs nothing; one with a deferred field gets gqlgen's, which
// ResolveConcurrently fills.
func TestDeferredGroup(t *testing.T) {
	ctx := graphql.WithResponseContext(context.Background(), graphql.DefaultErrorPresenter, graphql.DefaultRecover)
	plain := []graphql.CollectedField{{Field: &ast.Field{Name: "a"}}, {Field: &ast.Field{Name: "b"}}}
	if g := deferredGroup(ctx, plain); g.FieldSet != nil || g.Defers != nil || g.Path != nil {
		t.Errorf("no deferred field: got group %+v, want an empty one", g)
	}
	if g := deferredGroup(ctx, nil); g.FieldSet != nil || g.Defers != nil {
		t.Errorf("no fields: got group %+v, want an empty one", g)
	}
	mixed := append(plain, graphql.CollectedField{Field: &ast.Field{Name: "c"}, Deferrables: []*graphql.Deferrable{{Label: "later"}}})
	g := deferredGroup(ctx, mixed)
	if g.FieldSet == nil || g.Defers == nil || g.Context != ctx {
		t.Fatalf("a deferred field: got group %+v, want gqlgen's", g)
	}
	// The group takes the deferred field as gqlgen's would.
	ec := &executionContext{&graphql.ExecutionContextState[ResolverRoot, DirectiveRoot, ComplexityRoot]{
		OperationContext:      &graphql.OperationContext{RecoverFunc: graphql.DefaultRecover},
		ExecutableSchemaState: &graphql.ExecutableSchemaState[ResolverRoot, DirectiveRoot, ComplexityRoot]{Resolvers: &inlineRoot{}},
	}}
	out := graphql.NewFieldSet(mixed)
	ec.resolveField(ctx, out, &g, mixed[2], "the customer", 2, true, false, func(context.Context) graphql.Marshaler {
		return graphql.MarshalInt(1)
	})
	if len(g.Defers) != 1 || g.Defers["later"] == nil {
		t.Errorf("deferred field: group's defers %v, want the label \"later\"", g.Defers)
	}
}

// `make generate` rewrites gqlgen's scheduling of resolver fields into
// resolveField (and its list marshalling into marshalSlice): without the
// rewrite, inlining silently stops.
func TestGeneratedCodeIsRewritten(t *testing.T) {
	files, err := filepath.Glob("*.generated.go")
	if err != nil || len(files) == 0 {
		t.Fatalf("generated files: %v", err)
	}
	var calls, objects int
	for _, f := range files {
		src, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, left := range []string{"out.ResolveConcurrently(", "graphql.MarshalSliceConcurrently(", "graphql.NewDeferredGroup(",
			"roles, err := ec.unmarshalNRole2", "return graphql.ResolveField("} {
			if bytes.Contains(src, []byte(left)) {
				t.Errorf("%s still calls %s: run `make generate`, not gqlgen alone", f, left)
			}
		}
		calls += bytes.Count(src, []byte("ec.resolveField(ctx, out, &deferred, field, obj, i,"))
		objects += bytes.Count(src, []byte("\treturn marshalObject(fields, out)\n"))
		if bytes.Contains(src, []byte("\treturn out\n")) {
			t.Errorf("%s returns a field set gqlgen writes: run `make generate`, not gqlgen alone", f)
		}
	}
	if objects < 30 {
		t.Errorf("%d objects written by marshalObject in the generated code, want every one of the schema's (over 30)", objects)
	}
	if calls < 6 {
		t.Errorf("%d calls of resolveField in the generated code, want at least Customer's 6 resolver fields", calls)
	}
}
