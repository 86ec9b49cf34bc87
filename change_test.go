package c360_test

import (
	"testing"

	"github.com/c360dev/c360"
)

// A change includes its own kind and the kind of each part its diff holds,
// as ingest writes them (postgres/change.go).
func TestChangeIncludes(t *testing.T) {
	event := map[string]any{"id": "1", "type": "message"}
	message := map[string]any{"id": "2", "conversationId": "3"}
	for _, c := range []struct {
		name   string
		change c360.Change
		kind   string
		want   bool
	}{
		{"its kind", c360.Change{Kind: c360.ChangeMessage, Diff: map[string]any{"event": event, "message": message}}, c360.ChangeMessage, true},
		{"a message that gave a name", c360.Change{Kind: c360.ChangeTraits,
			Diff: map[string]any{"event": event, "message": message, "traits": map[string]any{"name": "Kerry"}}}, c360.ChangeMessage, true},
		{"a STOP", c360.Change{Kind: c360.ChangeConsent,
			Diff: map[string]any{"event": event, "message": message, "consent": map[string]any{"status": "opted_out"}}}, c360.ChangeMessage, true},
		{"a first contact", c360.Change{Kind: c360.ChangeCreated, Diff: map[string]any{"event": event, "message": message}}, c360.ChangeMessage, true},
		{"a first contact's identities", c360.Change{Kind: c360.ChangeCreated,
			Diff: map[string]any{"event": event, "identitiesAdded": []any{}}}, c360.ChangeIdentityAdded, true},
		{"an ingest merge", c360.Change{Kind: c360.ChangeMerged, Diff: map[string]any{"event": event, "merged": []any{"4"}}}, c360.ChangeMerged, true},
		{"a merge's consents", c360.Change{Kind: c360.ChangeMerged,
			Diff: map[string]any{"merged": []any{"4"}, "consents": []any{map[string]any{"channel": "whatsapp", "status": "opted_in"}}}}, c360.ChangeConsent, true},
		{"a split's consents", c360.Change{Kind: c360.ChangeSplit,
			Diff: map[string]any{"splitInto": "5", "consents": []any{map[string]any{"channel": "sms", "status": nil}}}}, c360.ChangeConsent, true},
		{"every ingested change records an event", c360.Change{Kind: c360.ChangeTraits,
			Diff: map[string]any{"event": event, "traits": map[string]any{"plan": "gold"}}}, c360.ChangeEvent, true},
		{"traits without a message", c360.Change{Kind: c360.ChangeTraits,
			Diff: map[string]any{"event": event, "traits": map[string]any{"plan": "gold"}}}, c360.ChangeMessage, false},
		{"a message without traits", c360.Change{Kind: c360.ChangeMessage, Diff: map[string]any{"event": event, "message": message}}, c360.ChangeTraits, false},
		{"created is a kind only", c360.Change{Kind: c360.ChangeTraits, Diff: map[string]any{"event": event}}, c360.ChangeCreated, false},
		{"an observation", c360.Change{Kind: c360.ChangeObservation, Diff: map[string]any{"observation": map[string]any{}}}, c360.ChangeObservation, true},
		{"merged_into is not merged", c360.Change{Kind: c360.ChangeMergedInto, Diff: map[string]any{"survivorId": "1"}}, c360.ChangeMerged, false},
		{"an unknown kind", c360.Change{Kind: c360.ChangeMessage, Diff: map[string]any{"message": message}}, "diff", false},
	} {
		if got := c.change.Includes(c.kind); got != c.want {
			t.Errorf("%s: Includes(%q) = %v, want %v", c.name, c.kind, got, c.want)
		}
	}
}
