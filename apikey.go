package c360

import (
	"context"
	"time"
)

// Role is what an API key may do.
type Role string

// Roles, from most to least privileged. RoleWrite is the Segment write key:
// ingest only.
const (
	RoleAdmin     Role = "admin"
	RoleAgent     Role = "agent"
	RoleAssistant Role = "assistant"
	RoleWrite     Role = "write"
)

// Valid reports whether r is a known role.
func (r Role) Valid() bool {
	switch r {
	case RoleAdmin, RoleAgent, RoleAssistant, RoleWrite:
		return true
	}
	return false
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
}
