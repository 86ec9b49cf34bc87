package server

import (
	"context"
	"strings"

	"github.com/99designs/gqlgen/graphql"
	"github.com/99designs/gqlgen/graphql/errcode"
	"github.com/vektah/gqlparser/v2/ast"
	"github.com/vektah/gqlparser/v2/gqlerror"

	"github.com/c360dev/c360"
	"github.com/c360dev/c360/graph"
	"github.com/c360dev/c360/resolver"
)

// reasonRefused marks a mutation refused before it ran by mutationChecks.
// The error presenter answers it with the refusal's own code (FORBIDDEN,
// BAD_USER_INPUT); the mark only makes it a refusal before execution, like
// the limits' (422 under application/json, an error message over a
// websocket).
const reasonRefused = "OPERATION_REFUSED"

func init() {
	errcode.RegisterErrorType(reasonRefused, errcode.KindProtocol)
}

// mutationChecks refuses a mutation, before anything runs, when a field it
// selects would be refused as it resolves: a field the caller's role may
// not read (@hasRole), or a connection with a page size or cursor its
// store refuses. A query keeps those checks per field, and gets the data of
// the other fields; but a mutation's answer is resolved after its change
// is made, and a refused field there nulls the mutation's non-null result:
// the client would read data: null and a refusal, and retry a change that
// was made (an identify stored twice, a merge it cannot undo).
//
// It walks the selection as execution will (fragments, @skip and
// @include, the variables coerced), each field checked as its resolver
// would check it: resolver.CheckRole with the roles graph.FieldRoles reads
// from the schema, resolver.CheckPage on the arguments of a field that
// takes first. It runs after the limits, which bound the walk.
type mutationChecks struct {
	schema *ast.Schema
}

var _ interface {
	graphql.HandlerExtension
	graphql.OperationContextMutator
} = mutationChecks{}

// ExtensionName implements graphql.HandlerExtension.
func (mutationChecks) ExtensionName() string { return "MutationChecks" }

// Validate implements graphql.HandlerExtension.
func (mutationChecks) Validate(graphql.ExecutableSchema) error { return nil }

// MutateOperationContext implements graphql.OperationContextMutator.
func (m mutationChecks) MutateOperationContext(ctx context.Context, oc *graphql.OperationContext) *gqlerror.Error {
	if oc.Operation == nil || oc.Operation.Operation != ast.Mutation {
		return nil
	}
	return m.check(c360.PrincipalFromContext(ctx), oc, oc.Operation.SelectionSet, m.schema.Mutation, nil)
}

// check checks the fields of set, selected on a value of type typ at path,
// and their selections in turn.
func (m mutationChecks) check(p *c360.Principal, oc *graphql.OperationContext, set ast.SelectionSet, typ *ast.Definition, path ast.Path) *gqlerror.Error {
	if typ == nil || len(set) == 0 {
		return nil
	}
	// An interface or a union is checked as each type it may resolve to.
	for _, obj := range m.schema.GetPossibleTypes(typ) {
		satisfies := []string{obj.Name}
		for _, t := range m.schema.GetImplements(obj) {
			satisfies = append(satisfies, t.Name)
		}
		for _, f := range graphql.CollectFields(oc, set, satisfies) {
			if strings.HasPrefix(f.Name, "__") || f.Definition == nil {
				continue // introspection: not behind any role
			}
			at := append(path[:len(path):len(path)], ast.PathName(f.Alias))
			if err := m.field(p, oc, obj, f); err != nil {
				return refusal(err, at, f.Position)
			}
			if err := m.check(p, oc, f.Selections, m.schema.Types[f.Definition.Type.Name()], at); err != nil {
				return err
			}
		}
	}
	return nil
}

// field checks one selected field of obj.
func (mutationChecks) field(p *c360.Principal, oc *graphql.OperationContext, obj *ast.Definition, f graphql.CollectedField) error {
	roles, err := graph.FieldRoles(f.Definition)
	if err != nil {
		return err
	}
	if roles != nil {
		if err := resolver.CheckRole(p, obj.Name+"."+f.Name, roles); err != nil {
			return err
		}
	}
	if f.Definition.Arguments.ForName("first") != nil {
		return resolver.CheckPage(f.Definition.Type.Name(), f.ArgumentMap(oc.Variables))
	}
	return nil
}

// refusal is err as an error of the operation, at the field it names. Its
// path has no list indexes: nothing has run to number the items.
func refusal(err error, path ast.Path, pos *ast.Position) *gqlerror.Error {
	e := &gqlerror.Error{Err: err, Message: c360.ErrorMessage(err), Path: path,
		Extensions: map[string]any{"code": reasonRefused}}
	if pos != nil {
		e.Locations = []gqlerror.Location{{Line: pos.Line, Column: pos.Column}}
	}
	return e
}
