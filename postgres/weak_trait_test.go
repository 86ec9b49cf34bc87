package postgres_test

import (
	"context"
	"testing"
	"time"

	"github.com/c360dev/c360"
	"github.com/c360dev/c360/internal/pgtest"
)

// A WhatsApp display name (an if-absent trait) is only a fallback: a real
// name observed after it replaces it whatever the date it carries (an
// identify from a historical import, a mobile SDK's offline queue), while
// it never overwrites a name the customer has. Both ingest paths alike,
// and a split's replay too; traitSources still names its source.
func TestIfAbsentTraitIsAWeakObservation(t *testing.T) {
	db := pgtest.Open(t)
	ws, _, _ := pgtest.Workspace(t, db)
	ctx := context.Background()
	now := time.Now().UTC().Truncate(time.Second)
	for _, path := range []string{"group", "per-event"} {
		t.Run(path, func(t *testing.T) {
			phone := map[string]string{"group": "+14155550171", "per-event": "+14155550172"}[path]
			wa := func(key, name string, at time.Time) *c360.Event {
				return &c360.Event{Type: c360.EventMessage, Source: "whatsapp", DedupeKey: key + "-" + path,
					Identities: ids("phone", phone), OccurredAt: at, TraitsIfAbsent: map[string]any{"name": name},
					Message: &c360.MessageInput{Channel: "whatsapp", Direction: "inbound", Body: "hi", Status: "received"}}
			}
			name := func() (string, c360.TraitSource) {
				t.Helper()
				c, err := db.FindCustomerByIdentity(ctx, ws, c360.Identity{Type: "phone", Value: phone})
				if err != nil {
					t.Fatal(err)
				}
				s, _ := c.Traits["name"].(string)
				return s, c.TraitSources["name"]
			}
			ingestOnPath(t, db, ws, path, wa("wa1", "Janie 🌸", now))
			if n, src := name(); n != "Janie 🌸" || src.Source != "whatsapp" {
				t.Fatalf("after the WhatsApp message: name %q from %+v, want the display name from whatsapp", n, src)
			}
			ingestOnPath(t, db, ws, path, &c360.Event{Type: c360.EventIdentify, Source: "segment", DedupeKey: "import-" + path,
				Identities: ids("phone", phone), Traits: map[string]any{"name": "Jane Doe"}, OccurredAt: now.AddDate(-1, 0, 0)})
			if n, src := name(); n != "Jane Doe" || src.Source != "segment" {
				t.Errorf("after an identify dated a year earlier: name %q from %+v, want Jane Doe from segment", n, src)
			}
			ingestOnPath(t, db, ws, path, wa("wa2", "J", now.Add(time.Minute)))
			if n, _ := name(); n != "Jane Doe" {
				t.Errorf("after a later WhatsApp message: name %q, want Jane Doe kept", n)
			}
			// An older real observation does not beat a newer real one.
			ingestOnPath(t, db, ws, path, &c360.Event{Type: c360.EventIdentify, Source: "segment", DedupeKey: "older-" + path,
				Identities: ids("phone", phone), Traits: map[string]any{"name": "Old Name"}, OccurredAt: now.AddDate(-2, 0, 0)})
			if n, _ := name(); n != "Jane Doe" {
				t.Errorf("after an identify dated two years earlier: name %q, want Jane Doe kept", n)
			}
		})
	}

	// A merge keeps the real name over the display name, newer or not.
	a := ingest1(t, db, ws, &c360.Event{Type: c360.EventMessage, Source: "whatsapp", DedupeKey: "merge-wa",
		Identities: ids("phone", "+14155550173"), OccurredAt: now, TraitsIfAbsent: map[string]any{"name": "Display"},
		Message: &c360.MessageInput{Channel: "whatsapp", Direction: "inbound", Body: "hi", Status: "received"}}).CustomerID
	b := ingest1(t, db, ws, &c360.Event{Type: c360.EventIdentify, Source: "segment", DedupeKey: "merge-id",
		Identities: ids("email", "real@weak.io"), Traits: map[string]any{"name": "Real Name"}, OccurredAt: now.AddDate(-1, 0, 0)}).CustomerID
	if _, err := db.MergeCustomers(ctx, ws, b, a, false, "test", "same person"); err != nil {
		t.Fatal(err)
	}
	if c, err := db.FindCustomerByIdentity(ctx, ws, c360.Identity{Type: "email", Value: "real@weak.io"}); err != nil || c.Traits["name"] != "Real Name" {
		t.Errorf("after a merge: %v %v, want Real Name", c.Traits, err)
	}
}

// A display name that filled over a clear (an identify's name: null) keeps
// the clear's date: an identify older than the clear does not replace it,
// as it would not have replaced the clear; one newer than the clear does.
// Both ingest paths alike, and a merge weighs the two the same way.
func TestWeakTraitKeepsTheDateOfTheClearItFilled(t *testing.T) {
	db := pgtest.Open(t)
	ws, _, _ := pgtest.Workspace(t, db)
	ctx := context.Background()
	now := time.Now().UTC().Truncate(time.Second)
	identify := func(key, phone string, name any, at time.Time) *c360.Event {
		return &c360.Event{Type: c360.EventIdentify, Source: "segment", DedupeKey: key,
			Identities: ids("phone", phone), Traits: map[string]any{"name": name}, OccurredAt: at}
	}
	wa := func(key, phone, name string, at time.Time) *c360.Event {
		return &c360.Event{Type: c360.EventMessage, Source: "whatsapp", DedupeKey: key,
			Identities: ids("phone", phone), OccurredAt: at, TraitsIfAbsent: map[string]any{"name": name},
			Message: &c360.MessageInput{Channel: "whatsapp", Direction: "inbound", Body: "hi", Status: "received"}}
	}
	name := func(phone string) any {
		t.Helper()
		c, err := db.FindCustomerByIdentity(ctx, ws, c360.Identity{Type: "phone", Value: phone})
		if err != nil {
			t.Fatal(err)
		}
		return c.Traits["name"]
	}
	for _, path := range []string{"group", "per-event"} {
		t.Run(path, func(t *testing.T) {
			phone := map[string]string{"group": "+14155550181", "per-event": "+14155550182"}[path]
			ingestOnPath(t, db, ws, path, identify("clear-"+path, phone, nil, now.Add(-time.Hour)))
			ingestOnPath(t, db, ws, path, wa("wa-"+path, phone, "Display", now))
			if n := name(phone); n != "Display" {
				t.Fatalf("after the display name over the clear: %v, want Display", n)
			}
			ingestOnPath(t, db, ws, path, identify("older-"+path, phone, "Before The Clear", now.Add(-2*time.Hour)))
			if n := name(phone); n != "Display" {
				t.Errorf("an identify older than the clear: name %v, want Display kept", n)
			}
			ingestOnPath(t, db, ws, path, identify("newer-"+path, phone, "After The Clear", now.Add(-30*time.Minute)))
			if n := name(phone); n != "After The Clear" {
				t.Errorf("an identify newer than the clear (older than the display name): name %v, want it", n)
			}
		})
	}

	// A merge: the survivor's real name, older than the clear the merged
	// customer's display name filled over, gives way to it.
	s := ingest1(t, db, ws, identify("m-real", "+14155550183", "Old Real", now.Add(-2*time.Hour))).CustomerID
	ingest1(t, db, ws, identify("m-clear", "+14155550184", nil, now.Add(-time.Hour)))
	m := ingest1(t, db, ws, wa("m-wa", "+14155550184", "Display", now)).CustomerID
	if _, err := db.MergeCustomers(ctx, ws, s, m, false, "test", "same person"); err != nil {
		t.Fatal(err)
	}
	if n := name("+14155550183"); n != "Display" {
		t.Errorf("after a merge: name %v, want Display (over a clear newer than Old Real)", n)
	}
}
