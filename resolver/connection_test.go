package resolver

import (
	"testing"

	"github.com/c360dev/c360/graph"
)

// Every field that takes first is a connection whose cursors' list
// CheckPage knows, or a plain list (no after) of a type it names in
// plainLists: without it, a mutation selecting a new connection would be
// refused as an internal error.
func TestEveryConnectionHasACursorList(t *testing.T) {
	schema := graph.NewExecutableSchema(graph.Config{}).Schema()
	n := 0
	for _, def := range schema.Types {
		for _, f := range def.Fields {
			if f.Arguments.ForName("first") == nil {
				continue
			}
			if f.Type.Elem != nil && f.Arguments.ForName("after") == nil {
				if !plainLists[f.Type.Name()] {
					t.Errorf("%s.%s is a list that takes first, but its type %s is not in plainLists", def.Name, f.Name, f.Type.Name())
				}
				continue
			}
			n++
			if _, ok := cursorLists[f.Type.Name()]; !ok {
				t.Errorf("%s.%s takes first, but its type %s has no cursor list in cursorLists", def.Name, f.Name, f.Type.Name())
			}
		}
	}
	if n < len(cursorLists) {
		t.Errorf("found %d connection fields, want at least %d", n, len(cursorLists))
	}
}
