package graph

import (
	"context"
	"fmt"
	"slices"
	"sync"

	"github.com/vektah/gqlparser/v2/ast"

	"github.com/c360dev/c360"
)

// Every field guarded by @hasRole unmarshals the directive's roles, a
// constant list from the schema, each time it is resolved: a slice, and a
// path and a context per role (about 5% of a customer-360 query's
// allocations). `make generate` points the generated directive calls at
// directiveRoles, which unmarshals each distinct list once and hands out the
// same slice after. HasRole only reads it.

// roleKey is a role list of up to four names, as a map key.
type roleKey struct {
	n     int
	names [4]string
}

var directiveRoleCache struct {
	sync.RWMutex
	m map[roleKey][]c360.Role
}

// directiveRoles has unmarshalNRole2ᚕ…'s contract for @hasRole's argument.
func (ec *executionContext) directiveRoles(ctx context.Context, v []any) ([]c360.Role, error) {
	k := roleKey{n: len(v)}
	cacheable := len(v) <= len(k.names)
	for i := 0; cacheable && i < len(v); i++ {
		k.names[i], cacheable = v[i].(string)
	}
	if !cacheable {
		return ec.unmarshalNRole2ᚕgithubᚗcomᚋc360devᚋc360ᚐRoleᚄ(ctx, slices.Clone(v))
	}
	directiveRoleCache.RLock()
	roles, ok := directiveRoleCache.m[k]
	directiveRoleCache.RUnlock()
	if ok {
		return roles, nil
	}
	roles, err := ec.unmarshalNRole2ᚕgithubᚗcomᚋc360devᚋc360ᚐRoleᚄ(ctx, slices.Clone(v))
	if err != nil {
		return nil, err
	}
	directiveRoleCache.Lock()
	if directiveRoleCache.m == nil {
		directiveRoleCache.m = map[roleKey][]c360.Role{}
	}
	directiveRoleCache.m[k] = slices.Clip(roles)
	directiveRoleCache.Unlock()
	return roles, nil
}

// FieldRoles returns the roles def's @hasRole admits, read as the
// generated code reads them for the directive (directiveRoles), or nil when
// def has no @hasRole. The server checks a mutation's whole selection with
// it before the mutation runs (server/operation.go).
func FieldRoles(def *ast.FieldDefinition) ([]c360.Role, error) {
	d := def.Directives.ForName("hasRole")
	if d == nil {
		return nil, nil
	}
	arg := d.Arguments.ForName("roles")
	if arg == nil {
		return nil, fmt.Errorf("@hasRole on %s has no roles", def.Name)
	}
	v, err := arg.Value.Value(nil)
	if err != nil {
		return nil, fmt.Errorf("@hasRole on %s: %w", def.Name, err)
	}
	list, _ := v.([]any)
	// The unmarshallers read nothing of the execution context.
	return (&executionContext{}).directiveRoles(context.Background(), list)
}
