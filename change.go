package c360

import (
	"strings"
	"time"
)

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

// changeParts names the part of a change's diff that records each kind of
// thing an event can do. One event can do several: an inbound WhatsApp
// message that gives its sender's name, a STOP that opts out. Its change's
// kind names only the most telling of them (created > merged >
// identity_added > traits > consent > message > event); its diff holds
// them all.
//
// Consent has two parts: consent, an event's own decision ({channel,
// status}), and consents, the list of those a merge or a split changed. A
// merging event that decides a consent itself holds both.
var changeParts = map[string][]string{
	ChangeEvent:         {"event"},
	ChangeMessage:       {"message"},
	ChangeConsent:       {"consent", "consents"},
	ChangeTraits:        {"traits"},
	ChangeIdentityAdded: {"identitiesAdded"},
	ChangeMerged:        {"merged"},
}

// Includes reports whether the change is of the kind, or its diff holds the
// part a change of that kind records: a traits change whose event was also
// a message includes a message. Filters by kind select changes with it, so
// that asking for messages never misses one that did something else too.
func (c *Change) Includes(kind string) bool {
	if c.Kind == kind {
		return true
	}
	for _, part := range changeParts[kind] {
		if c.Diff[part] != nil {
			return true
		}
	}
	return false
}

// ChangeKinds are the kinds a change may have, in the order of the
// precedence its kind follows, with observation and erased (changes of
// their own).
var ChangeKinds = []string{ChangeCreated, ChangeMerged, ChangeMergedInto, ChangeSplit, ChangeIdentityAdded,
	ChangeTraits, ChangeConsent, ChangeMessage, ChangeEvent, ChangeObservation, ChangeErased}

// CheckChangeKinds refuses a kind no change has: a filter that names one
// (a typo, "messages") would select nothing, silently.
func CheckChangeKinds(kinds []string) error {
	for _, k := range kinds {
		known := false
		for _, c := range ChangeKinds {
			known = known || k == c
		}
		if !known {
			return Errorf(EINVALID, "unknown change kind %q: the kinds are %s", truncateForMessage(k), strings.Join(ChangeKinds, ", "))
		}
	}
	return nil
}
