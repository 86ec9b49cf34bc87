package postgres_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/c360dev/c360"
	"github.com/c360dev/c360/internal/pgtest"
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
	constraint := fmt.Sprintf("dl_client_%d", time.Now().UnixNano())
	if _, err := db.Pool.Exec(ctx, fmt.Sprintf(`ALTER TABLE events ADD CONSTRAINT %s CHECK (dedupe_key <> '%s') NOT VALID`, constraint, key)); err != nil {
		t.Fatal(err)
	}
	dropped := false
	drop := func() {
		if !dropped {
			dropped = true
			if _, err := db.Pool.Exec(ctx, `ALTER TABLE events DROP CONSTRAINT `+constraint); err != nil {
				t.Fatal(err)
			}
		}
	}
	t.Cleanup(drop)

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
	d, err := db.ReplayDeadLetter(ctx, ws, kept.IDs[0])
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
