package graph

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"testing"

	"github.com/99designs/gqlgen/graphql"
	"github.com/vektah/gqlparser/v2/ast"
)

// resolverTypes reads the generated code for the object types that have a
// field backed by a resolver.
func resolverTypes(t *testing.T) map[string]bool {
	t.Helper()
	files, err := filepath.Glob("*.generated.go")
	if err != nil || len(files) == 0 {
		t.Fatalf("generated files: %v", err)
	}
	fn := regexp.MustCompile(`(?s)func \(ec \*executionContext\) fieldContext_([A-Za-z0-9]+)_[A-Za-z0-9]+\(.*?\n}\n`)
	out := map[string]bool{}
	for _, f := range files {
		src, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range fn.FindAllSubmatch(src, -1) {
			if bytes.Contains(m[0], []byte("IsResolver: true")) {
				out[string(m[1])] = true
			}
		}
	}
	for _, want := range []string{"Customer", "Conversation", "Query"} {
		if !out[want] {
			t.Fatalf("found resolver fields on %v, not on %s: the pattern no longer matches the generated code", out, want)
		}
	}
	return out
}

// Lists of serialElements are marshalled without goroutines, so their
// elements must never reach a resolver (which could wait on a dataloader
// for siblings that would then run only after it).
func TestSerialElementsReachNoResolver(t *testing.T) {
	resolvers := resolverTypes(t)
	schema := NewExecutableSchema(Config{}).Schema()
	for name := range serialElements {
		if schema.Types[name] == nil {
			t.Fatalf("serialElements names %s, which the schema does not have", name)
		}
		seen := map[string]bool{}
		var walk func(typ string, path string)
		walk = func(typ string, path string) {
			def := schema.Types[typ]
			if seen[typ] || def == nil || (def.Kind != ast.Object && def.Kind != ast.Interface && def.Kind != ast.Union) {
				return
			}
			seen[typ] = true
			if resolvers[typ] {
				t.Errorf("%s reaches %s (%s), which has resolver fields: its lists must stay concurrent", name, typ, path)
			}
			for _, f := range def.Fields {
				walk(f.Type.Name(), path+"."+f.Name)
			}
			for _, p := range schema.GetPossibleTypes(def) {
				walk(p.Name, path+"<"+p.Name+">")
			}
		}
		walk(name, name)
	}
}

func goroutineID() string {
	buf := make([]byte, 64)
	buf = buf[:runtime.Stack(buf, false)]
	return string(bytes.Fields(buf)[1])
}

func listContext(elem string) context.Context {
	ctx := graphql.WithResponseContext(context.Background(), graphql.DefaultErrorPresenter, graphql.DefaultRecover)
	def := &ast.FieldDefinition{Name: "edges", Type: ast.NonNullListType(ast.NonNullNamedType(elem, nil), nil)}
	return graphql.WithFieldContext(ctx, &graphql.FieldContext{Field: graphql.CollectedField{Field: &ast.Field{Name: "edges", Definition: def}}})
}

func TestMarshalSlice(t *testing.T) {
	me := goroutineID()
	elements := func(serial bool) func(ctx context.Context, i int) graphql.Marshaler {
		return func(ctx context.Context, i int) graphql.Marshaler {
			if fc := graphql.GetFieldContext(ctx); fc == nil || fc.Index == nil || *fc.Index != i {
				t.Errorf("element %d has no field context of its own", i)
			}
			if same := goroutineID() == me; same != serial {
				t.Errorf("element %d ran on the caller's goroutine: %v, want %v", i, same, serial)
			}
			if i == 2 {
				panic("boom")
			}
			return graphql.MarshalInt(i)
		}
	}
	for _, c := range []struct {
		elem   string
		serial bool
	}{{"EventEdge", true}, {"CustomerEdge", false}} {
		ctx := listContext(c.elem)
		got := marshalSlice(ctx, 4, 0, false, elements(c.serial))
		var buf bytes.Buffer
		got.MarshalGQL(&buf)
		if buf.String() != "[0,1,null,3]" {
			t.Errorf("%s: %s, want [0,1,null,3] (the panicking element null)", c.elem, buf.String())
		}
		if errs := graphql.GetErrors(ctx); len(errs) != 1 {
			t.Errorf("%s: %d errors, want 1 for the panic", c.elem, len(errs))
		}
	}
}
