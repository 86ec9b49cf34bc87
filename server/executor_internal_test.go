package server

import (
	"testing"

	"github.com/99designs/gqlgen/graphql"
	"github.com/99designs/gqlgen/graphql/handler/lru"
	"github.com/vektah/gqlparser/v2/ast"

	"github.com/c360dev/c360/graph"
	"github.com/c360dev/c360/resolver"
)

// recordingExecutor records the extensions configureExecutor installs.
type recordingExecutor struct{ exts []graphql.HandlerExtension }

func (r *recordingExecutor) SetQueryCache(graphql.Cache[*ast.QueryDocument]) {}
func (r *recordingExecutor) SetParserTokenLimit(int)                         {}
func (r *recordingExecutor) SetDisableSuggestion(bool)                       {}
func (r *recordingExecutor) Use(e graphql.HandlerExtension)                  { r.exts = append(r.exts, e) }
func (r *recordingExecutor) AroundRootFields(graphql.RootFieldMiddleware)    {}
func (r *recordingExecutor) AroundOperations(graphql.OperationMiddleware)    {}
func (r *recordingExecutor) SetErrorPresenter(graphql.ErrorPresenterFunc)    {}
func (r *recordingExecutor) SetRecoverFunc(graphql.RecoverFunc)              {}

// The resolver tells gqlgen's generated code that plain scalar fields may
// skip the per-field middleware (graph.DirectLeaves), which holds only while
// no field interceptor is installed: a field interceptor would miss those
// fields. executorConfig offers no AroundFields; an extension that
// intercepts fields must first make ResolveLeavesDirectly answer false.
func TestNoFieldInterceptors(t *testing.T) {
	var r any = &resolver.Resolver{}
	d, ok := r.(graph.DirectLeaves)
	if !ok || !d.ResolveLeavesDirectly() {
		t.Fatal("the resolver does not let plain fields skip the middleware: this test guards nothing")
	}
	for _, dev := range []bool{false, true} {
		s := &Server{cfg: Config{Dev: dev, Limits: DefaultLimits}, resolver: &resolver.Resolver{}, shared: &resolver.SharedSubscriptions{}}
		rec := &recordingExecutor{}
		s.configureExecutor(rec, nil, lru.New[*ast.QueryDocument](10), lru.New[string](10))
		if len(rec.exts) < 3 {
			t.Fatalf("dev %v: recorded %d extensions, want the server's", dev, len(rec.exts))
		}
		for _, e := range rec.exts {
			if _, ok := e.(graphql.FieldInterceptor); ok {
				t.Errorf("dev %v: extension %T intercepts fields, but plain fields skip field interceptors (graph.DirectLeaves)", dev, e)
			}
		}
	}
}
