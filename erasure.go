package c360

import (
	"context"
	"time"
)

// ChangeErased is the change-feed kind of a customer's erasure: the last
// change of its feed, and the only one left of it. Its diff is empty. A
// stream of the customer delivers it and then ends with ENOTFOUND.
const ChangeErased = "erased"

// MaxErasureReasonLen bounds an erasure's reason, in bytes: it is kept in
// the audit log, as the record of why the data is gone.
const MaxErasureReasonLen = 500

// CustomerErasure is what erasing a customer removed: the person (the
// survivor the given id resolved to, with every customer merged into it)
// and, per kind, how many rows of theirs were deleted or scrubbed. See
// docs/erasure.md.
type CustomerErasure struct {
	// CustomerID is the customer erased: the survivor of the given id.
	CustomerID int64
	// MergedCustomerIDs are the customers merged into it, erased with it.
	MergedCustomerIDs []int64
	// FormerCustomerIDs are the person's customers from before a wrong
	// merge, erased with her: merged into someone else's customer, whose
	// identities all came back to her by splits since (docs/erasure.md).
	FormerCustomerIDs []int64
	Identities        int
	// EventsScrubbed counts the events kept for their exactly-once key
	// only, with everything else about them cleared.
	EventsScrubbed int
	Messages       int
	Conversations  int
	Consents       int
	Observations   int
	// Changes counts the change-feed rows deleted (the erased change that
	// takes their place is not counted).
	Changes int
	// MergeRecords and Separations count the ledger's merges and splits
	// and the recorded separations that named one of the customers.
	MergeRecords int
	Separations  int
	// DeadLetters counts the dead letters deleted: those naming one of the
	// erased identifiers, or keyed as one of the scrubbed events.
	DeadLetters int
	// AuditEntriesScrubbed counts the audit entries about the customers
	// whose identity values and free-text reasons were removed, or whose
	// paths of personal data read (a pii.read's fields) were generalised;
	// the entries themselves are kept.
	AuditEntriesScrubbed int
	// MessagesMoved counts other customers' messages that were in the
	// erased customers' conversations (people split off from them), moved
	// into conversations of their own and kept.
	MessagesMoved int
	ErasedAt      time.Time
}

// MergedCustomers is how many customers merged into the erased one were
// erased with it.
func (e *CustomerErasure) MergedCustomers() int { return len(e.MergedCustomerIDs) }

// ErasureService erases a person's data on request (GDPR art. 17, CCPA).
type ErasureService interface {
	// EraseCustomer erases the customer with the id, or the survivor it
	// was merged into, with every customer merged into that one and the
	// person's customers from before a wrong merge that splits undid
	// (CustomerErasure.FormerCustomerIDs), in one transaction. An unknown id (or one of another workspace) is
	// ENOTFOUND, and nothing changes.
	EraseCustomer(ctx context.Context, workspaceID, customerID int64, actor, reason string) (*CustomerErasure, error)
}
