package c360

import (
	"context"
	"slices"
	"time"
)

// Role is what an API key may do.
type Role string

// Roles, from most to least privileged. RoleWrite is the server-side
// Segment write key: ingest only, a secret. RoleClient is the client-side
// write key, for a browser or a mobile app, where anyone can read it: it
// sends Segment calls only, and what it sends is trusted less (see
// Event.FromClientKey).
const (
	RoleAdmin     Role = "admin"
	RoleAgent     Role = "agent"
	RoleAssistant Role = "assistant"
	RoleWrite     Role = "write"
	RoleClient    Role = "client"
)

// Valid reports whether r is a known role.
func (r Role) Valid() bool {
	switch r {
	case RoleAdmin, RoleAgent, RoleAssistant, RoleWrite, RoleClient:
		return true
	}
	return false
}

// IngestOnly reports whether r feeds ingest and reads nothing: the write
// and client keys.
func (r Role) IngestOnly() bool {
	return r == RoleWrite || r == RoleClient
}

// ScopePII lets an assistant key read personal data unmasked. Other keys
// read it unmasked (admin, agent) or read nothing (write, client) whatever
// their scopes, so it is refused on them (CheckKey).
const ScopePII = "pii"

// scopes lists the scopes a key may carry, each with the one role it
// applies to.
var scopes = map[string]Role{ScopePII: RoleAssistant}

// CheckKey refuses a key that is not to be issued: an unknown role, an
// unknown scope, so that a typo ("PII") never silently issues a key with
// less access than intended, a scope given twice, and a scope on a role it
// means nothing to (pii on an agent key), which a listing would then show
// as if it granted something. Every way of issuing a key (the command
// line, createApiKey) comes through it.
func CheckKey(role Role, ss []string) error {
	if !role.Valid() {
		return Errorf(EINVALID, "invalid role %q: use admin, agent, assistant, write or client", role)
	}
	for i, s := range ss {
		applies, ok := scopes[s]
		switch {
		case !ok:
			return Errorf(EINVALID, "unknown scope %q: the known scope is %s", s, ScopePII)
		case slices.Contains(ss[:i], s):
			return Errorf(EINVALID, "the scope %q is given twice", s)
		case role != applies:
			return Errorf(EINVALID, "the %s scope applies to %s keys only", s, applies)
		}
	}
	return nil
}

// APIKey describes an issued key; the secret itself is never stored.
type APIKey struct {
	ID          int64
	WorkspaceID int64
	Prefix      string
	Role        Role
	Scopes      []string
	CreatedAt   time.Time
	LastUsedAt  *time.Time
	RevokedAt   *time.Time
}

// APIKeyService issues and verifies API keys.
type APIKeyService interface {
	// CreateAPIKey issues a key for the workspace and returns its secret once.
	CreateAPIKey(ctx context.Context, workspaceSlug string, role Role, scopes []string) (string, *APIKey, error)
	// Authenticate returns the principal for a presented key, or EUNAUTHENTICATED.
	Authenticate(ctx context.Context, key string) (*Principal, error)
	// KeyActive reports whether the key p was authenticated with still
	// stands: EUNAUTHENTICATED once it is revoked. A long-lived connection
	// asks it again and again, so it answers within the same bound as
	// Authenticate (a revocation takes effect within seconds everywhere),
	// mostly from memory, and never waits long on the database.
	KeyActive(ctx context.Context, p *Principal) error
}

// APIKeyManager is the admin side of API keys: issue, list and revoke them
// within a workspace.
type APIKeyManager interface {
	// IssueAPIKey issues a key for the workspace and returns its secret once.
	IssueAPIKey(ctx context.Context, workspaceID int64, role Role, scopes []string) (string, *APIKey, error)
	// ListAPIKeys returns the workspace's keys, newest first.
	ListAPIKeys(ctx context.Context, workspaceID int64) ([]*APIKey, error)
	// RevokeAPIKey revokes the key with this prefix; ENOTFOUND if the
	// workspace has none. Revoking a revoked key returns it unchanged, and
	// revoked reports whether this call revoked it: a key revoked already
	// is no change to record.
	RevokeAPIKey(ctx context.Context, workspaceID int64, prefix string) (key *APIKey, revoked bool, err error)
}
