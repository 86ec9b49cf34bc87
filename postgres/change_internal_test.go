package postgres

import (
	"testing"

	"github.com/c360dev/c360"
	"github.com/c360dev/c360/identity"
)

func TestChangeKindIsTheMostTellingPart(t *testing.T) {
	ev := &c360.Event{Type: c360.EventMessage}
	consent := &c360.ConsentInput{Channel: "sms", Status: c360.ConsentOptedOut}
	for _, tc := range []struct {
		name  string
		build func(c *change)
		want  string
	}{
		{"event alone", func(c *change) {}, c360.ChangeEvent},
		{"message", func(c *change) { c.message(1, 2, "sms", "inbound", "") }, c360.ChangeMessage},
		{"message then consent", func(c *change) { c.message(1, 2, "sms", "inbound", ""); c.consent(consent) }, c360.ChangeConsent},
		{"consent then message", func(c *change) { c.consent(consent); c.message(1, 2, "sms", "inbound", "") }, c360.ChangeConsent},
		{"no traits changed", func(c *change) { c.message(1, 2, "sms", "inbound", ""); c.traits(nil) }, c360.ChangeMessage},
		{"traits over consent", func(c *change) { c.consent(consent); c.traits(map[string]any{"a": 1}) }, c360.ChangeTraits},
		{"identity over traits", func(c *change) {
			c.traits(map[string]any{"a": 1})
			c.identitiesAdded([]identity.Identity{{Type: "email", Value: "a@b.io"}})
		}, c360.ChangeIdentityAdded},
		{"merge over identity", func(c *change) {
			c.merged([]int64{7})
			c.identitiesAdded([]identity.Identity{{Type: "email", Value: "a@b.io"}})
		}, c360.ChangeMerged},
		{"created over all", func(c *change) { c.created(); c.merged([]int64{7}); c.traits(map[string]any{"a": 1}) }, c360.ChangeCreated},
	} {
		c := newChange(42, ev)
		tc.build(c)
		if c.kind != tc.want {
			t.Errorf("%s: kind = %q, want %q", tc.name, c.kind, tc.want)
		}
		if e, _ := c.diff["event"].(map[string]any); e["id"] != "42" {
			t.Errorf("%s: diff.event = %v, want id 42", tc.name, c.diff["event"])
		}
	}
	c := newChange(1, ev)
	c.message(5, 6, "sms", "outbound", "delivered")
	c.dropped(nil)
	if m := c.diff["message"].(map[string]any); m["status"] != "delivered" || m["id"] != "5" {
		t.Errorf("status change diff = %v", m)
	}
	if _, ok := c.diff["dropped"]; ok {
		t.Errorf("no drops recorded an empty dropped list")
	}
}
