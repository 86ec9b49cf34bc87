package c360

import (
	"context"
	"time"
)

// Customer is the one persistent profile of a person within a workspace.
type Customer struct {
	ID          int64
	WorkspaceID int64
	Traits      map[string]any
	// TraitSources tells, per trait, which source set it and when.
	TraitSources map[string]TraitSource
	Version      int64
	CreatedAt    time.Time
	UpdatedAt    time.Time
}

// Identity is one identifier of a customer: a lowercase type and a value
// normalized as ingest normalizes it (emails lowercased, phones E.164).
type Identity struct {
	Type  string `json:"type"`
	Value string `json:"value"`
}

// CustomerFilter selects a page of customers.
type CustomerFilter struct {
	Query string // fragment of name, email or phone; empty for all
	First int
	After string // opaque cursor
}

// CustomerService reads customer profiles. Every method is scoped to a workspace.
type CustomerService interface {
	// FindCustomerByID returns the customer; an id merged away resolves to its survivor.
	FindCustomerByID(ctx context.Context, workspaceID, id int64) (*Customer, error)
	FindCustomerByIdentity(ctx context.Context, workspaceID int64, id Identity) (*Customer, error)
	// FindCustomers returns a page of customers, the cursor of each, and whether more follow.
	FindCustomers(ctx context.Context, workspaceID int64, f CustomerFilter) ([]*Customer, []string, bool, error)
	// CustomersByIDs loads customers for a dataloader; missing ids map to nothing.
	CustomersByIDs(ctx context.Context, workspaceID int64, ids []int64) (map[int64]*Customer, error)
	IdentitiesByCustomers(ctx context.Context, workspaceID int64, customerIDs []int64) (map[int64][]*IdentityRecord, error)
	ConsentsByCustomers(ctx context.Context, workspaceID int64, customerIDs []int64) (map[int64][]*Consent, error)
}
