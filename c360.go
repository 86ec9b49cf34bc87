// Package c360 holds the domain of the c360 customer-360 API: customers, their
// identities, events, conversations, messages, consents and the change feed,
// plus the service interfaces that adapters implement. It imports nothing of
// the project; every adapter (postgres, connectors, resolver, server) imports it.
package c360

import (
	"context"
	"strconv"
	"time"
)

// Clock returns the current time. Services take one so tests can fix time.
type Clock func() time.Time

// Principal is the caller a request acts for, selected by its API key.
type Principal struct {
	WorkspaceID int64
	KeyID       int64
	// KeyPrefix is the public part of the key; audit entries name the actor by it.
	KeyPrefix string
	Role      Role
	Scopes    []string
}

// Actor names the principal's key as the audit log, ledgers and
// provenance name it: "key <prefix>", the public part of the key, which an
// admin finds in the listing (apiKeys, c360 apikey list) and revokes by. A
// principal without a prefix (built in code, not authenticated) is named by
// its key's row id, "key #<id>". Ledgers (a merge's or split's actor, a
// sent message's sentBy, an erasure's actor) and provenance (an
// observation's recordedBy and verifiedBy) name it so too; rows written
// before name the key "<role> key <id>", by a row id no API shows.
func (p *Principal) Actor() string {
	if p.KeyPrefix == "" {
		return "key #" + strconv.FormatInt(p.KeyID, 10)
	}
	return "key " + p.KeyPrefix
}

// SeesPII reports whether the principal receives personal data unmasked:
// every role but the assistant, and an assistant whose key has ScopePII.
func (p *Principal) SeesPII() bool {
	return p.Role != RoleAssistant || p.HasScope(ScopePII)
}

// HasScope reports whether the principal's key carries scope s.
func (p *Principal) HasScope(s string) bool {
	for _, x := range p.Scopes {
		if x == s {
			return true
		}
	}
	return false
}

type principalKey struct{}

// NewContextWithPrincipal returns ctx carrying p.
func NewContextWithPrincipal(ctx context.Context, p *Principal) context.Context {
	return context.WithValue(ctx, principalKey{}, p)
}

// PrincipalFromContext returns the principal in ctx, or nil.
func PrincipalFromContext(ctx context.Context) *Principal {
	p, _ := ctx.Value(principalKey{}).(*Principal)
	return p
}
