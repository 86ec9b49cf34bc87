package postgres_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/c360dev/c360"
	"github.com/c360dev/c360/internal/pgtest"
	"github.com/c360dev/c360/postgres"
)

// A call sent with a client key that fails inside ingest is kept as a dead
// letter that remembers the key was a client's: replayed by an admin, its
// email and phone traits still identify nobody (a replay trusts it no more
// than its first try did).
func TestDeadLetterKeepsClientKeyTrust(t *testing.T) {
	db := pgtest.Open(t)
	ws, _, _ := pgtest.Workspace(t, db)
	ctx := context.Background()
	victim := ingest1(t, db, ws, &c360.Event{Type: c360.EventIdentify, Source: "test", DedupeKey: "v-1",
		Identities: ids("user_id", "victim-1", "email", "rosa@example.com")}).CustomerID

	key := fmt.Sprintf("client-dl-%d", time.Now().UnixNano())
	drop := refuseEvents(t, db, fmt.Sprintf(`dedupe_key <> '%s'`, key))

	ev := &c360.Event{Type: c360.EventIdentify, Source: "segment", DedupeKey: key, FromClientKey: true,
		Identities: ids("anonymous_id", "atk-1"),
		Traits:     map[string]any{"email": "rosa@example.com", "phone": "+14155550177"}}
	_, err := db.Ingest(ctx, ws, []*c360.Event{ev})
	var kept *c360.DeadLetteredError
	if !errors.As(err, &kept) {
		t.Fatalf("ingest: %v, want a dead letter", err)
	}
	dls := deadLetters(t, db, ws, true)
	if len(dls) != 1 || dls[0].Event["fromClientKey"] != true {
		t.Fatalf("dead letters = %+v, want one whose event says fromClientKey", dls)
	}

	drop()
	d, _, err := db.ReplayDeadLetter(ctx, ws, kept.IDs[0])
	if err != nil || d.ReplayedEventID == 0 {
		t.Fatalf("replay: %+v, %v", d, err)
	}
	if c, err := db.FindCustomerByIdentity(ctx, ws, c360.Identity{Type: "phone", Value: "+14155550177"}); c360.ErrorCode(err) != c360.ENOTFOUND {
		t.Errorf("after the replay the phone resolves to %+v, %v; want no customer", c, err)
	}
	atk, err := db.FindCustomerByIdentity(ctx, ws, c360.Identity{Type: "anonymous_id", Value: "atk-1"})
	if err != nil || atk.ID == victim {
		t.Errorf("after the replay atk-1 resolves to %+v, %v; want a customer apart from the victim (%d)", atk, err, victim)
	}
}

// An event sent with a client key links by none of its traits and dates
// them at receipt, on both ingest paths (the per-event one through
// IngestHeld): a forged timestamp 23 hours ahead no longer outlasts the
// next true update.
func TestClientKeyEventOnBothPaths(t *testing.T) {
	db := pgtest.Open(t)
	ws, _, _ := pgtest.Workspace(t, db)
	ctx := context.Background()
	base := time.Now().UTC().Truncate(time.Second).Add(-time.Hour)
	for _, path := range []string{"group", "per-event"} {
		t.Run(path, func(t *testing.T) {
			user, phone := "u-"+path, map[string]string{"group": "+14155550161", "per-event": "+14155550162"}[path]
			at := func(d time.Duration) (time.Time, time.Time) { return base.Add(d), base.Add(d) }
			ev := func(key string, client bool, occurred, received time.Time, traits map[string]any) *c360.Event {
				return &c360.Event{Type: c360.EventIdentify, Source: "segment", DedupeKey: key + "-" + path, FromClientKey: client,
					Identities: ids("user_id", user), Traits: traits, OccurredAt: occurred, ReceivedAt: received}
			}
			send := func(e *c360.Event) { t.Helper(); ingestOnPath(t, db, ws, path, e) }
			o, r := at(0)
			send(ev("basic", false, o, r, map[string]any{"plan": "basic"}))
			_, r = at(time.Second)
			send(ev("forged", true, r.Add(23*time.Hour), r, map[string]any{"plan": "forged", "phone": phone}))
			c, err := db.FindCustomerByIdentity(ctx, ws, c360.Identity{Type: "user_id", Value: user})
			if err != nil || c.Traits["plan"] != "forged" || c.Traits["phone"] != phone {
				t.Fatalf("after the client's identify: %+v, %v; want its traits set", c, err)
			}
			if _, err := db.FindCustomerByIdentity(ctx, ws, c360.Identity{Type: "phone", Value: phone}); c360.ErrorCode(err) != c360.ENOTFOUND {
				t.Errorf("the client's phone trait resolves: %v, want NOT_FOUND", err)
			}
			o, r = at(time.Minute)
			send(ev("pro", false, o, r, map[string]any{"plan": "pro"}))
			if c, err := db.FindCustomerByIdentity(ctx, ws, c360.Identity{Type: "user_id", Value: user}); err != nil || c.Traits["plan"] != "pro" {
				t.Errorf("after a later true update: %+v, %v; want plan pro", c, err)
			}
		})
	}
}

// A split rebuilds the original's traits by replaying its events
// (docs/identity.md, step 6), and dates a client key's traits at receipt
// as ingest did, whichever path stored them: splitting off an anonymous id
// that has nothing to do with them neither lets a timestamp forged 23
// hours ahead win over the later true update again, nor dates a trait in
// the future. Only the client's event stores a traits_at of its own.
func TestSplitKeepsClientKeyTraitsDatedAtReceipt(t *testing.T) {
	db := pgtest.Open(t)
	ws, _, _ := pgtest.Workspace(t, db)
	ctx := context.Background()
	base := time.Now().UTC().Truncate(time.Second).Add(-time.Hour)
	for _, path := range []string{"group", "per-event"} {
		t.Run(path, func(t *testing.T) {
			user, anon := "u-"+path, "a-"+path
			ev := func(key string, client bool, occurred, received time.Time, traits map[string]any, idents ...string) *c360.Event {
				return &c360.Event{Type: c360.EventIdentify, Source: "segment", DedupeKey: key + "-" + path, FromClientKey: client,
					Identities: ids(idents...), Traits: traits, OccurredAt: occurred, ReceivedAt: received}
			}
			send := func(e *c360.Event) { t.Helper(); ingestOnPath(t, db, ws, path, e) }
			received := base.Add(time.Second)
			send(ev("basic", false, base, base, map[string]any{"plan": "basic"}, "user_id", user, "anonymous_id", anon))
			send(ev("forged", true, received.Add(23*time.Hour), received, map[string]any{"plan": "forged", "theme": "dark"}, "user_id", user))
			send(ev("pro", false, base.Add(time.Minute), base.Add(time.Minute), map[string]any{"plan": "pro"}, "user_id", user))
			c, err := db.FindCustomerByIdentity(ctx, ws, c360.Identity{Type: "user_id", Value: user})
			if err != nil || c.Traits["plan"] != "pro" {
				t.Fatalf("before the split: %+v, %v; want plan pro", c, err)
			}
			if n := count(t, db, `SELECT count(*) FROM events WHERE workspace_id = $1 AND dedupe_key LIKE '%-' || $2 AND traits_at IS NOT NULL`, ws, path); n != 1 {
				t.Errorf("%d events store traits_at, want 1 (the client's)", n)
			}
			sp, err := db.SplitIdentity(ctx, ws, c.ID, c360.Identity{Type: "anonymous_id", Value: anon}, "admin", "shared device")
			if err != nil {
				t.Fatal(err)
			}
			if got := sp.Original.Traits["plan"]; got != "pro" {
				t.Errorf("after the split: plan %v (%+v), want pro", got, sp.Original.TraitSources["plan"])
			}
			if got := sp.Original.TraitSources["theme"]; got.Value != "dark" || !got.ObservedAt.Equal(received) {
				t.Errorf("after the split: theme %+v, want dark observed at its receipt %v", got, received)
			}
		})
	}
}

// ingestOnPath ingests e through one ingest path alone: "group" (the
// group commit's set-based path) or "per-event" (one transaction an
// event), so that a test holds for both.
func ingestOnPath(t *testing.T, db *postgres.DB, ws int64, path string, e *c360.Event) {
	t.Helper()
	ctx := context.Background()
	var err error
	switch path {
	case "per-event":
		hold := make(chan struct{})
		close(hold)
		err = db.IngestHeld(ctx, ws, e, make(chan struct{}), hold)
	case "group":
		_, err = db.IngestByGroupOnly(ctx, ws, []*c360.Event{e})
	default:
		t.Fatalf("no ingest path %q", path)
	}
	if err != nil {
		t.Fatalf("ingest %s on the %s path: %v", e.DedupeKey, path, err)
	}
}
