package c360

import (
	"context"
	"time"
)

// Audit actions: what an audit entry records.
const (
	// AuditCustomerRead is a read of a customer's data by an assistant key;
	// Fields lists the customer fields it selected.
	AuditCustomerRead = "customer.read"
	// AuditPIIRead is a read of unmasked personal data by any key; Fields
	// lists what was read (identity.email, traits.phone, ...).
	AuditPIIRead             = "pii.read"
	AuditCustomerMerge       = "customer.merge"
	AuditCustomerSplit       = "customer.split"
	AuditMessageSend         = "message.send"
	AuditAPIKeyCreate        = "apikey.create"
	AuditAPIKeyRevoke        = "apikey.revoke"
	AuditIdentityRulesUpdate = "identity_rules.update"
	AuditDeadLetterReplay    = "deadletter.replay"
	// AuditWebhookSecretRotate is a new chatbot webhook secret (c360
	// workspace update --rotate-webhook-secret); the detail holds the grace
	// (graceSeconds, and previousValidUntil when it is not 0), never a secret.
	AuditWebhookSecretRotate = "webhook_secret.rotate"
	// AuditProviderSecretUpdate is a new provider secret (c360 workspace
	// update --twilio-auth-token or --whatsapp-app-secret); the detail
	// names which, never the secret.
	AuditProviderSecretUpdate = "provider_secret.update"
)

// ActorCLI names the command line as the actor of an audit entry.
const ActorCLI = "cli"

// AuditEntry is one row of the audit log: who did or read what, when.
type AuditEntry struct {
	ID          int64
	WorkspaceID int64
	At          time.Time
	// KeyID is the API key that acted; 0 for the command line.
	KeyID int64
	// Actor names who acted: "key <prefix>" or ActorCLI.
	Actor string
	// Role is the acting key's role; empty for the command line.
	Role   Role
	Action string
	// CustomerID is the customer read or changed; 0 for none.
	CustomerID int64
	Fields     []string
	Detail     map[string]any
}

// NewAuditEntry returns an entry for action by principal p (nil: the
// command line) in workspace ws, stamped with now.
func NewAuditEntry(p *Principal, ws int64, action string, now time.Time) *AuditEntry {
	e := &AuditEntry{WorkspaceID: ws, At: now, Action: action, Actor: ActorCLI}
	if p != nil {
		e.KeyID, e.Role, e.Actor = p.KeyID, p.Role, p.Actor()
	}
	return e
}

// RoleOrNil returns the role for GraphQL, nil for the command line.
func (e *AuditEntry) RoleOrNil() *Role {
	if e.Role == "" {
		return nil
	}
	return &e.Role
}

// CustomerIDOrNil returns the customer id for GraphQL, nil for none.
func (e *AuditEntry) CustomerIDOrNil() *int64 {
	if e.CustomerID == 0 {
		return nil
	}
	return &e.CustomerID
}

// AuditFilter selects a page of audit entries, newest first.
type AuditFilter struct {
	CustomerID int64  // 0: every customer
	Action     string // "": every action
	First      int
	After      string // opaque cursor
}

// AuditLog records and lists audit entries. Reads are recorded through
// EnqueueAudit, off the request path; changes through RecordAudit, before
// the change is acknowledged.
type AuditLog interface {
	// RecordAudit stores entries now.
	RecordAudit(ctx context.Context, entries []*AuditEntry) error
	// EnqueueAudit hands entries to a background writer and never blocks;
	// see docs/security.md for what happens when its queue is full.
	EnqueueAudit(entries []*AuditEntry)
	// FindAuditEntries returns a page of the workspace's entries, their
	// cursors, and whether more follow.
	FindAuditEntries(ctx context.Context, workspaceID int64, f AuditFilter) ([]*AuditEntry, []string, bool, error)
}
