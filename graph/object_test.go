package graph

import (
	"bytes"
	"fmt"
	"strings"
	"testing"

	"github.com/99designs/gqlgen/graphql"
	"github.com/vektah/gqlparser/v2/ast"
)

// marshalObject writes what gqlgen's FieldSet writes: the fields in order,
// each response name once (the first value wins), for small and large
// selections alike.
func TestMarshalObjectWritesWhatFieldSetWrites(t *testing.T) {
	field := func(alias string) graphql.CollectedField {
		return graphql.CollectedField{Field: &ast.Field{Alias: alias, Name: alias}}
	}
	many := make([]graphql.CollectedField, 40)
	for i := range many {
		many[i] = field(fmt.Sprintf("f%d", i%35)) // 5 names come twice
	}
	cases := map[string][]graphql.CollectedField{
		"empty":     nil,
		"one":       {field("id")},
		"several":   {field("id"), field("name"), field("__typename")},
		"repeated":  {field("id"), field("a"), field("id"), field("b"), field("a")},
		"first out": {field("x"), field("x")},
		"many":      many,
	}
	for name, fields := range cases {
		out := graphql.NewFieldSet(fields)
		for i := range fields {
			switch i % 3 {
			case 0:
				out.Values[i] = graphql.MarshalInt(i)
			case 1:
				out.Values[i] = graphql.MarshalString(fmt.Sprintf("v\"%d", i))
			default:
				out.Values[i] = graphql.Null
			}
		}
		var want, got bytes.Buffer
		out.MarshalGQL(&want)
		marshalObject(fields, out).MarshalGQL(&got)
		if got.String() != want.String() {
			t.Errorf("%s: marshalObject wrote\n%s\nFieldSet writes\n%s", name, got.String(), want.String())
		}
		if name == "many" && strings.Count(got.String(), `"f0":`) != 1 {
			t.Errorf("many: %s", got.String())
		}
	}
}
