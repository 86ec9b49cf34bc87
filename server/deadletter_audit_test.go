package server_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/c360dev/c360"
	"github.com/c360dev/c360/server"
)

// A WhatsApp dead letter's dedupeKey is its wamid, which encodes the
// customer's number (as Message.providerId does): an admin's read of it is
// a pii.read in the audit log. A Twilio SID holds nothing of the customer
// and is read unaudited.
func TestDeadLetterDedupeKeyReadIsAudited(t *testing.T) {
	e := newSecEnv(t, server.Config{})
	ctx := context.Background()
	if _, err := e.db.UpdateIdentityRules(ctx, e.ws, c360.IdentityRules{DefaultLimit: 5, Blocked: []string{"+14155550177"}}); err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC()
	for _, key := range []string{"wamid.HBgLMTQxNTU1NTAxNzcVAgASGBQzQUI5RDk0", "SM00000000000000000000000000000177"} {
		_, err := e.db.Ingest(c360.WithInvalidAsDeadLetters(ctx), e.ws, []*c360.Event{{Type: c360.EventTrack, Name: "Kept",
			Identities: []c360.Identity{{Type: "phone", Value: "+14155550177"}}, Source: "whatsapp", DedupeKey: key,
			OccurredAt: now, ReceivedAt: now}})
		var kept *c360.DeadLetteredError
		if !errors.As(err, &kept) {
			t.Fatalf("ingest %s: %v, want a dead letter", key, err)
		}
	}
	r := gql(t, e.srv, e.keys["admin"], `{ deadLetters { edges { node { dedupeKey } } } }`, nil)
	if r.Status != 200 || len(r.Errors) != 0 || !strings.Contains(r.Body, "wamid.HBgL") {
		t.Fatalf("deadLetters: %d %s, want both letters unmasked to an admin", r.Status, r.Body)
	}
	if err := e.audit.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	entries, _, _, err := e.db.FindAuditEntries(ctx, e.ws, c360.AuditFilter{First: 100, Action: c360.AuditPIIRead})
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, a := range entries {
		if slices.Contains(a.Fields, "dedupeKey") {
			n++
		}
	}
	if n != 1 {
		t.Errorf("%d pii.read entries naming dedupeKey, want 1: %+v", n, entries)
	}
}
