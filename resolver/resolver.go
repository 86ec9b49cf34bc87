// Package resolver implements the GraphQL resolvers: it turns GraphQL
// operations into calls on the domain services and back. Resolvers are laid
// out as gqlgen's follow-schema layout generates them; this file is the
// dependency root.
package resolver

import (
	"context"

	"github.com/c360dev/c360"
)

// Resolver is the root resolver: the services every resolver uses.
type Resolver struct {
	CustomerService     c360.CustomerService
	EventService        c360.EventService
	ConversationService c360.ConversationService
	Ingester            c360.Ingester
	Now                 c360.Clock
}

// principal returns the caller, or UNAUTHENTICATED. The server's middleware
// always sets one; this guards resolvers against a wiring mistake.
func principal(ctx context.Context) (*c360.Principal, error) {
	p := c360.PrincipalFromContext(ctx)
	if p == nil {
		return nil, c360.Errorf(c360.EUNAUTHENTICATED, "an API key is required")
	}
	return p, nil
}

// reader returns the caller's workspace when the caller may read profiles.
// Write keys feed ingest and read nothing.
func reader(ctx context.Context) (int64, error) {
	p, err := principal(ctx)
	if err != nil {
		return 0, err
	}
	if p.Role == c360.RoleWrite {
		return 0, c360.Errorf(c360.EFORBIDDEN, "a write key can only ingest")
	}
	return p.WorkspaceID, nil
}

// nullIfNotFound turns NOT_FOUND into a null result: a lookup that finds
// nothing (or a customer of another workspace) answers null, not an error.
func nullIfNotFound[T any](v *T, err error) (*T, error) {
	if c360.ErrorCode(err) == c360.ENOTFOUND {
		return nil, nil
	}
	return v, err
}
