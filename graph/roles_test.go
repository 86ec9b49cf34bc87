package graph

import (
	"context"
	"slices"
	"testing"

	"github.com/99designs/gqlgen/graphql"

	"github.com/c360dev/c360"
)

// directiveRoles gives what the generated unmarshaller gives, for every
// list, and reads a list of names once.
func TestDirectiveRoles(t *testing.T) {
	ec := &executionContext{&graphql.ExecutionContextState[ResolverRoot, DirectiveRoot, ComplexityRoot]{
		OperationContext: &graphql.OperationContext{RecoverFunc: graphql.DefaultRecover},
	}}
	ctx := graphql.WithResponseContext(context.Background(), graphql.DefaultErrorPresenter, graphql.DefaultRecover)
	for _, v := range [][]any{
		{"ADMIN"},
		{"ADMIN", "AGENT", "ASSISTANT"},
		{"AGENT", "ADMIN"},
		{"ADMIN", "AGENT", "ASSISTANT", "ADMIN", "AGENT"}, // past the key's four: not cached
		{"ADMIN", ""},
		{},
	} {
		want, werr := ec.unmarshalNRole2ᚕgithubᚗcomᚋc360devᚋc360ᚐRoleᚄ(ctx, slices.Clone(v))
		for range 2 { // the second from the cache
			got, err := ec.directiveRoles(ctx, v)
			if !slices.Equal(got, want) || (err == nil) != (werr == nil) {
				t.Errorf("directiveRoles(%v) = %v, %v; want %v, %v", v, got, err, want, werr)
			}
		}
	}
	a, _ := ec.directiveRoles(ctx, []any{"ADMIN", "AGENT"})
	b, _ := ec.directiveRoles(ctx, []any{"ADMIN", "AGENT"})
	if len(a) != 2 || &a[0] != &b[0] {
		t.Errorf("the same list was unmarshalled twice")
	}
	if c, _ := ec.directiveRoles(ctx, []any{"ADMIN"}); !slices.Equal(c, []c360.Role{c360.RoleAdmin}) {
		t.Errorf("a shorter list shares a longer one's entry: %v", c)
	}
	if got := testing.AllocsPerRun(100, func() { ec.directiveRoles(ctx, []any{"ADMIN", "AGENT"}) }); got != 0 {
		t.Errorf("a cached list costs %v allocations, want none", got)
	}
}

// FieldRoles reads a field's @hasRole as the generated code does, and
// nothing for a field without it.
func TestFieldRoles(t *testing.T) {
	schema := NewExecutableSchema(Config{}).Schema()
	for _, tc := range []struct {
		typ, field string
		want       []c360.Role
	}{
		{"Mutation", "identify", []c360.Role{c360.RoleAdmin, c360.RoleAgent, c360.RoleWrite}},
		{"Customer", "traits", []c360.Role{c360.RoleAdmin, c360.RoleAgent, c360.RoleAssistant}},
		{"Customer", "id", nil},
	} {
		got, err := FieldRoles(schema.Types[tc.typ].Fields.ForName(tc.field))
		if err != nil || !slices.Equal(got, tc.want) {
			t.Errorf("FieldRoles(%s.%s) = %v, %v; want %v", tc.typ, tc.field, got, err, tc.want)
		}
	}
}
