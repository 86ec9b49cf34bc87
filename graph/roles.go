package graph

import (
	"context"
	"slices"
	"sync"

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
