package postgres_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/c360dev/c360"
	"github.com/c360dev/c360/internal/pgtest"
)

// A consent decision whose change names no event (a provider's opt-out
// refusal as an earlier version recorded it) cannot be given to either
// side of a split: the split leaves it out and rebuilds the rest, where it
// failed for good ("cannot scan NULL into *int64"), so the customer could
// never be split again.
func TestSplitToleratesAConsentDecisionWithoutAnEvent(t *testing.T) {
	db := pgtest.Open(t)
	ws, _, _ := pgtest.Workspace(t, db)
	ctx := context.Background()
	t0 := time.Now().Add(-time.Hour)
	const phone = "+14155550181"
	c := ingest1(t, db, ws, &c360.Event{Type: c360.EventIdentify, Source: "t", DedupeKey: "id", OccurredAt: t0,
		Identities: ids("phone", phone, "email", "x181@example.com")}).CustomerID
	ingest1(t, db, ws, consentEvent("stop", phone, "whatsapp", c360.ConsentOptedOut, t0.Add(time.Minute)))
	ingest1(t, db, ws, track("later", ids("phone", phone)))
	// The last change, rewritten as such a decision: consent, no event.
	if _, err := db.Pool.Exec(ctx, `
		UPDATE customer_changes SET diff = '{"consent": {"channel": "sms", "status": "opted_out"}}'
		WHERE workspace_id = $1 AND customer_id = $2
		  AND version = (SELECT max(version) FROM customer_changes WHERE workspace_id = $1 AND customer_id = $2)`, ws, c); err != nil {
		t.Fatal(err)
	}
	res, err := db.SplitIdentity(ctx, ws, c, c360.Identity{Type: "email", Value: "x181@example.com"}, "agent", "two people")
	if err != nil {
		t.Fatalf("split: %v", err)
	}
	if got := consentsOf(t, db, ws); got[fmt.Sprintf("%d whatsapp", c)] != c360.ConsentOptedOut || len(got) != 1 {
		t.Errorf("consents after the split = %v, want only the phone's whatsapp opt-out (customer %d; split %d)", got, c, res.Split.ID)
	}
}
