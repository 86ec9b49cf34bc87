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
	// FindCustomers returns a page of customers, newest first.
	FindCustomers(ctx context.Context, workspaceID int64, f CustomerFilter) (*Page[*Customer], error)
	// CustomersByIDs loads customers for a dataloader; missing ids map to nothing.
	CustomersByIDs(ctx context.Context, workspaceID int64, ids []int64) (map[int64]*Customer, error)
	IdentitiesByCustomers(ctx context.Context, workspaceID int64, customerIDs []int64) (map[int64][]*IdentityRecord, error)
	ConsentsByCustomers(ctx context.Context, workspaceID int64, customerIDs []int64) (map[int64][]*Consent, error)
	// LoadProfiles loads the parts req names for every customer in one
	// round trip, as the separate methods would one by one.
	LoadProfiles(ctx context.Context, workspaceID int64, customerIDs []int64, req ProfileRequest) (*Profiles, error)
	// FindProfile finds one customer, as FindCustomerByID or
	// FindCustomerByIdentity would, and loads the parts req names in the
	// same round trip. Not found is ENOTFOUND. Profiles is nil when req
	// names a part that cannot be loaded (a page argument out of range), or
	// when a part failed once the customer was found: the customer stands,
	// and each part's own read says why.
	FindProfile(ctx context.Context, workspaceID int64, key CustomerKey, req ProfileRequest) (*Customer, *Profiles, error)
}

// CustomerKey names one customer: by ID, or, when Identity is set, by one
// of its identifiers.
type CustomerKey struct {
	ID       int64
	Identity *Identity
}

// ProfileRequest names the parts of customers' profiles to load together.
type ProfileRequest struct {
	Identities bool
	Consents   bool
	// Events and Conversations ask for one page per distinct arguments.
	Events        []PageArgs
	Conversations []PageArgs
	// Messages, with one customer and one Conversations entry, also loads
	// a page of messages of each conversation on that page.
	Messages *PageArgs
}

// Profiles is what LoadProfiles found, keyed as the separate methods key
// it; a part not requested is nil.
type Profiles struct {
	Identities    map[int64][]*IdentityRecord
	Consents      map[int64][]*Consent
	Events        map[PageArgs]map[int64]*Page[*Event]
	Conversations map[PageArgs]map[int64]*Page[*Conversation]
	// Messages is keyed by conversation.
	Messages map[int64]*Page[*Message]
}
