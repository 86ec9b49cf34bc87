package postgres

import (
	"fmt"
	"maps"

	"github.com/c360dev/c360"
	"github.com/c360dev/c360/identity"
)

// change is the change row one event makes of a customer: a diff of what it
// did, and a kind. Both ingest paths build it the same way, so subscribers
// see the same rows whichever path applied the event. When an event does
// several things, the kind names the most telling one: created > merged >
// identity_added > traits > consent > message > event.
type change struct {
	kind string
	diff map[string]any
	rank int
}

var changeRank = map[string]int{
	c360.ChangeEvent: 0, c360.ChangeMessage: 1, c360.ChangeConsent: 2, c360.ChangeTraits: 3,
	c360.ChangeIdentityAdded: 4, c360.ChangeMerged: 5, c360.ChangeCreated: 6,
	// A split's change of the original is a split whatever else it records.
	c360.ChangeSplit: 7,
}

// newChange starts the change of an event.
func newChange(eventID int64, ev *c360.Event) *change {
	return &change{kind: c360.ChangeEvent, diff: map[string]any{
		"event": map[string]any{"id": fmt.Sprint(eventID), "type": ev.Type, "name": ev.Name}}}
}

func (c *change) raise(kind string) {
	if r := changeRank[kind]; r > c.rank {
		c.kind, c.rank = kind, r
	}
}

func (c *change) consent(in *c360.ConsentInput) {
	c.diff["consent"] = map[string]any{"channel": in.Channel, "status": in.Status}
	c.raise(c360.ChangeConsent)
}

// message records a message of the event; status is empty for a new message.
func (c *change) message(id, conversation int64, channel, direction, status string) {
	m := map[string]any{"id": fmt.Sprint(id), "conversationId": fmt.Sprint(conversation),
		"channel": channel, "direction": direction}
	if status != "" {
		m["status"] = status
	}
	c.diff["message"] = m
	c.raise(c360.ChangeMessage)
}

func (c *change) traits(changed map[string]any) {
	if len(changed) > 0 {
		c.diff["traits"] = changed
		c.raise(c360.ChangeTraits)
	}
}

func (c *change) identitiesAdded(ids []identity.Identity) {
	if len(ids) > 0 {
		c.diff["identitiesAdded"] = ids
		c.raise(c360.ChangeIdentityAdded)
	}
}

// mergedConsents records the consents merges (or a split) changed under
// consents: a list of the {channel, status} a consent change records, one
// per channel, with a null status where the customer no longer has a
// decision. It is a part of its own, not consent: an event that merges and
// decides a consent itself records its own decision in consent, and the
// merge's changes of other channels must not be lost behind it; and a
// split rebuilds consents from the events' own decisions alone
// (rebuildConsents), which consent then holds, always as one object.
// Each status is the channel's after the event: ingestOne settles the
// channel of an event's own decision that took effect
// (settleConsentChange).
func (c *change) mergedConsents(changes []map[string]any) {
	if len(changes) > 0 {
		c.diff["consents"] = changes
		c.raise(c360.ChangeConsent)
	}
}

// setConsentChange records channel's new status in changes, once per channel.
func setConsentChange(changes []map[string]any, channel string, status any) []map[string]any {
	for _, ch := range changes {
		if ch["channel"] == channel {
			ch["status"] = status
			return changes
		}
	}
	return append(changes, map[string]any{"channel": channel, "status": status})
}

// settleConsentChange sets channel's status in changes to status if
// changes has the channel, and adds none: the event's own decision is in
// consent, and consents lists only the channels merges changed.
func settleConsentChange(changes []map[string]any, channel string, status any) {
	for _, ch := range changes {
		if ch["channel"] == channel {
			ch["status"] = status
		}
	}
}

// mergeTraitChanges returns the traits merges changed, updated by those the
// event then changed.
func mergeTraitChanges(merged, event map[string]any) map[string]any {
	if len(merged) == 0 {
		return event
	}
	out := maps.Clone(merged)
	maps.Copy(out, event)
	return out
}

func (c *change) merged(ids []int64) {
	if len(ids) > 0 {
		c.diff["merged"] = idStrings(ids)
		c.raise(c360.ChangeMerged)
	}
}

func (c *change) dropped(reasons []string) {
	if len(reasons) > 0 {
		c.diff["dropped"] = reasons
	}
}

func (c *change) created() { c.raise(c360.ChangeCreated) }
