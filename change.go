package c360

import "time"

// Change kinds written to the change feed.
const (
	ChangeCreated       = "created"
	ChangeTraits        = "traits"
	ChangeIdentityAdded = "identity_added"
	ChangeEvent         = "event"
	ChangeMessage       = "message"
	ChangeConsent       = "consent"
	ChangeMerged        = "merged"      // another customer was merged into this one
	ChangeMergedInto    = "merged_into" // this customer was merged away
	ChangeSplit         = "split"       // an identity was split out of this customer
)

// Change is one row of a customer's change feed. Versions of one customer
// are consecutive and ordered; the feed is the source of truth for subscribers.
type Change struct {
	WorkspaceID int64
	CustomerID  int64
	Version     int64
	Kind        string
	Diff        map[string]any
	At          time.Time
}
