// Package resolver implements the GraphQL resolvers: it turns GraphQL
// operations into calls on the domain services and back. Resolvers are laid
// out as gqlgen's follow-schema layout generates them; this file is the
// dependency root.
package resolver

import (
	"context"

	"github.com/c360dev/c360"
	"github.com/c360dev/c360/hub"
)

// Resolver is the root resolver: the services every resolver uses.
type Resolver struct {
	CustomerService     c360.CustomerService
	EventService        c360.EventService
	ConversationService c360.ConversationService
	IdentityService     c360.IdentityService
	Ingester            c360.Ingester
	Now                 c360.Clock
	// MessagingService and MessageSender back sendMessage; without a sender,
	// sendMessage answers UNAVAILABLE.
	MessagingService c360.MessagingService
	MessageSender    c360.MessageSender
	// Keys backs the admin key operations; Audit records reads and changes
	// (resolver/audit.go) and lists them. Without Audit nothing is recorded
	// and auditLog answers UNAVAILABLE.
	Keys  c360.APIKeyManager
	Audit c360.AuditLog
	// ReadAudit says whose reads are recorded before their answer leaves
	// (the zero value: assistants').
	ReadAudit ReadAudit
	// Hub and Realtime back the subscriptions (subscription.resolvers.go);
	// without a hub, subscribing answers UNAVAILABLE.
	Hub      *hub.Hub
	Realtime RealtimeStore
	// ContextService and ObservationService back customerContext and
	// observations (assistant.resolvers.go); without them those answer UNAVAILABLE.
	ContextService     c360.ContextService
	ObservationService c360.ObservationService
	// DeadLetterService backs deadLetters and replayDeadLetter
	// (operations.resolvers.go); without it those answer UNAVAILABLE.
	DeadLetterService c360.DeadLetterService
	// ErasureService backs eraseCustomer (erasure.resolvers.go); without
	// it eraseCustomer answers UNAVAILABLE.
	ErasureService c360.ErasureService
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
// Write and client keys feed ingest and read nothing.
func reader(ctx context.Context) (int64, error) {
	p, err := principal(ctx)
	if err != nil {
		return 0, err
	}
	if p.Role.IngestOnly() {
		return 0, c360.Errorf(c360.EFORBIDDEN, "a %s key can only ingest", p.Role)
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

// admin returns the caller's principal when it holds the admin role.
func admin(ctx context.Context) (*c360.Principal, error) {
	p, err := principal(ctx)
	if err != nil {
		return nil, err
	}
	if p.Role != c360.RoleAdmin {
		return nil, c360.Errorf(c360.EFORBIDDEN, "this operation needs an admin key")
	}
	return p, nil
}

// agent returns the caller's principal when it may act on profiles: admin or agent.
func agent(ctx context.Context) (*c360.Principal, error) {
	p, err := principal(ctx)
	if err != nil {
		return nil, err
	}
	if p.Role != c360.RoleAdmin && p.Role != c360.RoleAgent {
		return nil, c360.Errorf(c360.EFORBIDDEN, "this operation needs an admin or agent key")
	}
	return p, nil
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}
