package c360

import (
	"context"
	"slices"
	"strings"
	"time"
)

// IdentityRecord is an identity of a customer with its provenance: when it
// was first and last seen, and which source brought it.
type IdentityRecord struct {
	Identity
	CustomerID int64
	FirstSeen  time.Time
	LastSeen   time.Time
	Source     string
}

// Merge kinds in the ledger.
const (
	MergeKindMerge = "merge"
	MergeKindSplit = "split"
)

// MergeRecord is one ledger entry: a merge of MergedID into SurvivorID, or a
// split of an identity out of SurvivorID into the new customer MergedID.
type MergeRecord struct {
	ID         int64
	Kind       string
	SurvivorID int64
	MergedID   int64
	// Identity is the identifier that caused a merge or was split out.
	Identity *Identity
	EventID  *int64
	Reason   string
	Actor    string
	At       time.Time
}

// TraitSource tells where a trait's current value came from.
type TraitSource struct {
	Name       string
	Value      any
	Source     string
	ObservedAt time.Time
}

// IdentityRules are a workspace's identity resolution rules, as clients see
// and change them. Types missing from Limits use DefaultLimit.
type IdentityRules struct {
	Limits       map[string]int
	DefaultLimit int
	Priority     []string
	Blocked      []string
}

// Detail is the rules as the audit log records them (identity_rules.update,
// from GraphQL and the command line alike) and `c360 workspace rules
// --json` prints them.
func (r *IdentityRules) Detail() map[string]any {
	return map[string]any{"limits": r.Limits, "defaultLimit": r.DefaultLimit, "priority": r.Priority, "blocked": r.Blocked}
}

// MaxMergeReasonLen bounds the reason of a merge or a split, in bytes, as
// MaxErasureReasonLen bounds an erasure's: it is kept in the merge ledger
// and the audit log, and pushed to every subscriber of the customer in
// its change.
const MaxMergeReasonLen = MaxErasureReasonLen

// CheckMergeReason refuses, with EINVALID, the reason of a merge or a
// split that cannot be kept: longer than MaxMergeReasonLen bytes, or one
// CheckStorable refuses. The reason is optional: an empty (or blank) one
// is allowed, and the ledger records a default in its place.
func CheckMergeReason(reason string) error {
	return CheckReason(reason, MaxMergeReasonLen)
}

// SplitResult is the outcome of splitting an identity out of a customer.
type SplitResult struct {
	Original *Customer
	Split    *Customer
	// Moved counts what moved to the new customer.
	MovedEvents        int
	MovedConversations int
}

// IdentityService manages identity resolution: rules, manual merges and
// splits, and the ledger that explains them.
type IdentityService interface {
	IdentityRules(ctx context.Context, workspaceID int64) (*IdentityRules, error)
	UpdateIdentityRules(ctx context.Context, workspaceID int64, rules IdentityRules) (*IdentityRules, error)
	// MergeCustomers merges mergedID into survivorID. Identity limits hold
	// unless force is set. A reason CheckMergeReason refuses is refused
	// before anything is done.
	MergeCustomers(ctx context.Context, workspaceID, survivorID, mergedID int64, force bool, actor, reason string) (*Customer, error)
	// SplitIdentity moves an identity, and what arrived through it, out of a
	// customer into a new one. A reason CheckMergeReason refuses is refused
	// before anything is done.
	SplitIdentity(ctx context.Context, workspaceID, customerID int64, id Identity, actor, reason string) (*SplitResult, error)
	MergesByCustomers(ctx context.Context, workspaceID int64, customerIDs []int64) (map[int64][]*MergeRecord, error)
}

// IdentityLimit is one type's cap, as listed to clients.
type IdentityLimit struct {
	Type  string
	Limit int
}

// LimitList returns the limits sorted by type.
func (r *IdentityRules) LimitList() []*IdentityLimit {
	out := make([]*IdentityLimit, 0, len(r.Limits))
	for t, n := range r.Limits {
		out = append(out, &IdentityLimit{Type: t, Limit: n})
	}
	slices.SortFunc(out, func(a, b *IdentityLimit) int { return strings.Compare(a.Type, b.Type) })
	return out
}

// IdentityRecord returns the ledger entry's identity as a record without
// provenance, for the GraphQL Identity type.
func (m *MergeRecord) IdentityRecord() *IdentityRecord {
	if m.Identity == nil {
		return nil
	}
	return &IdentityRecord{Identity: *m.Identity}
}

// TraitSourceList returns the customer's trait sources sorted by name.
func (c *Customer) TraitSourceList() []*TraitSource {
	out := make([]*TraitSource, 0, len(c.TraitSources))
	for _, s := range c.TraitSources {
		out = append(out, &s)
	}
	slices.SortFunc(out, func(a, b *TraitSource) int { return strings.Compare(a.Name, b.Name) })
	return out
}
