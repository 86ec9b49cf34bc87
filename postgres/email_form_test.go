package postgres_test

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/c360dev/c360"
	"github.com/c360dev/c360/internal/pgtest"
)

// One email address sent in two Unicode forms reaches one customer:
// composed and decomposed accents, fullwidth and ASCII letters, a domain in
// Unicode and in punycode. Ingest links them, customerByIdentity finds the
// customer by any of them, a split takes the address out written in
// another form, and a blocked entry in one form blocks the others.
func TestEmailUnicodeFormsAreOneCustomer(t *testing.T) {
	db := pgtest.Open(t)
	ws, _, _ := pgtest.Workspace(t, db)
	ctx := context.Background()
	for _, tc := range []struct{ name, first, second, stored string }{
		{"NFC and NFD", "jos\u00e9@example.com", "jose\u0301@example.com", "jos\u00e9@example.com"},
		{"fullwidth and ASCII", "\uff52\uff4f\uff53\uff41@example.com", "rosa@example.com", "rosa@example.com"},
		{"Unicode and punycode domain", "rosa@b\u00fccher.de", "rosa@xn--bcher-kva.de", "rosa@b\u00fccher.de"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := ingest1(t, db, ws, track(tc.name+"-1", ids("email", tc.first)))
			b := ingest1(t, db, ws, track(tc.name+"-2", ids("email", tc.second)))
			if a.CustomerID != b.CustomerID {
				t.Fatalf("%+q and %+q: customers %d and %d, want one", tc.first, tc.second, a.CustomerID, b.CustomerID)
			}
			for _, v := range []string{tc.first, tc.second, strings.ToUpper(tc.second)} {
				c, err := db.FindCustomerByIdentity(ctx, ws, c360.Identity{Type: "email", Value: v})
				if err != nil || c.ID != a.CustomerID {
					t.Errorf("customerByIdentity(%+q) = %v, %v; want customer %d", v, c, err, a.CustomerID)
				}
			}
			if n := count(t, db, `SELECT count(*) FROM identities WHERE workspace_id = $1 AND type = 'email' AND value = $2`, ws, tc.stored); n != 1 {
				t.Errorf("identities holding %+q: %d, want 1", tc.stored, n)
			}
		})
	}
	// A split names the address in another form than ingest stored.
	c := ingest1(t, db, ws, track("split", ids("email", "jose\u0301@example.com", "phone", "+14155550177"))).CustomerID
	sp, err := db.SplitIdentity(ctx, ws, c, c360.Identity{Type: "email", Value: "JOS\u00c9@EXAMPLE.COM"}, "admin", "two people")
	if err != nil || sp.MovedEvents == 0 {
		t.Fatalf("split by another form: %+v, %v; want the address split out with its events", sp, err)
	}
	// A blocked entry in one form blocks the address sent in another.
	if _, err := db.UpdateIdentityRules(ctx, ws, c360.IdentityRules{Limits: map[string]int{}, DefaultLimit: 5,
		Blocked: []string{"qa@xn--bcher-kva.de"}}); err != nil {
		t.Fatal(err)
	}
	r := ingest1(t, db, ws, track("blocked", ids("email", "QA@B\u00dcCHER.DE", "user_id", "u-blocked")))
	if len(r.Dropped) != 1 || !strings.Contains(r.Dropped[0], "blocked") {
		t.Errorf("blocked address in another form: dropped %q, want it dropped as blocked", r.Dropped)
	}
}

// An identify carrying an address whose domain IDNA refuses, or whose
// punycode label is longer than 63 bytes in Unicode, is ingested, not
// refused with its whole event: the address is stored in the form the
// normalizer keeps (the label IDNA refuses as typed), and found by the
// forms that give it.
func TestEmailIDNARefusedDomainIsIngested(t *testing.T) {
	db := pgtest.Open(t)
	ws, _, _ := pgtest.Workspace(t, db)
	ctx := context.Background()
	jp := strings.Repeat("\u65e5\u672c\u8a9e", 8)
	for i, tc := range []struct{ sent, stored, other string }{
		{"taro@xn--wgvaaaaaaa050ababbbbbb8535mcacccccc.jp", "taro@" + jp + ".jp", "TARO@" + jp + ".JP"},
		{"user@xn--abc.com", "user@xn--abc.com", "USER@XN--ABC.COM"},
		{"jos\u00e9@ab--cd.example.com", "jos\u00e9@ab--cd.example.com", "JOSE\u0301@AB--CD.EXAMPLE.COM"},
		{"a@1\u05e9\u05dc\u05d5\u05dd.co.il", "a@1\u05e9\u05dc\u05d5\u05dd.co.il", "A@1\u05e9\u05dc\u05d5\u05dd.CO.IL"},
	} {
		ev := &c360.Event{Type: c360.EventIdentify, Source: "test", DedupeKey: fmt.Sprintf("idna-%d", i),
			Identities: ids("email", tc.sent)}
		res, err := db.Ingest(ctx, ws, []*c360.Event{ev})
		if err != nil {
			t.Errorf("identify with %+q: %v, want it ingested", tc.sent, err)
			continue
		}
		if n := count(t, db, `SELECT count(*) FROM identities WHERE workspace_id = $1 AND type = 'email' AND value = $2 AND customer_id = $3`,
			ws, tc.stored, res[0].CustomerID); n != 1 {
			t.Errorf("identify with %+q: %d identities %+q, want 1", tc.sent, n, tc.stored)
		}
		if c, err := db.FindCustomerByIdentity(ctx, ws, c360.Identity{Type: "email", Value: tc.other}); err != nil || c.ID != res[0].CustomerID {
			t.Errorf("customerByIdentity(%+q) = %v, %v; want customer %d", tc.other, c, err, res[0].CustomerID)
		}
	}
}

// Migration 00021 brings email identities stored in the old forms (NFD,
// fullwidth) to the new one, with the events that carry them, where no
// other row of the workspace holds the result; a value that collides is
// left as it is, and the migration does not fail. Run again, it changes
// nothing.
func TestMigrationRenormalizesStoredEmails(t *testing.T) {
	db := pgtest.Open(t)
	ws, _, _ := pgtest.Workspace(t, db)
	ctx := context.Background()
	raw, err := os.ReadFile("../migrations/00021_email_unicode_form.sql")
	if err != nil {
		t.Fatal(err)
	}
	up := string(raw)
	up = up[:strings.Index(up, "-- +goose Down")]
	// Rows as the previous release stored them: lowercased, not brought
	// to one form.
	ann := ingest1(t, db, ws, track("ann", ids("phone", "+14155550101"))).CustomerID
	bob := ingest1(t, db, ws, track("bob", ids("phone", "+14155550102"))).CustomerID
	cid := ingest1(t, db, ws, track("cid", ids("phone", "+14155550103"))).CustomerID
	for _, s := range []struct {
		cust  int64
		value string
	}{
		{ann, "jose\u0301@example.com"},               // NFD, alone: rewritten
		{bob, "\uff52\uff4f\uff53\uff41@example.com"}, // fullwidth, alone: rewritten
		{cid, "zo\u0308e@example.com"},                // NFD, collides with the NFC row below: kept
		{bob, "z\u00f6e@example.com"},                 // already canonical
	} {
		if _, err := db.Pool.Exec(ctx, `INSERT INTO identities (workspace_id, type, value, customer_id) VALUES ($1, 'email', $2, $3)`,
			ws, s.value, s.cust); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := db.Pool.Exec(ctx, `INSERT INTO events (workspace_id, customer_id, type, source, dedupe_key, occurred_at, identities, dropped)
		VALUES ($1, $2, 'track', 'test', 'old-ann', now(), $3, $4)`, ws, ann,
		`[{"type":"phone","value":"+14155550101"},{"type":"email","value":"jose\u0301@example.com"}]`,
		`["email \"jose\u0301@example.com\": limit: email allows 1", "phone \"+1\": x"]`); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Pool.Exec(ctx, `INSERT INTO events (workspace_id, customer_id, type, source, dedupe_key, occurred_at, identities)
		VALUES ($1, $2, 'track', 'test', 'old-ann-2', now(), $3)`, ws, ann,
		`[{"type":"email","value":"jose\u0301@example.com"}]`); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if _, err := db.Pool.Exec(ctx, up); err != nil {
			t.Fatalf("migration: %v", err)
		}
	}
	emails := func(cust int64) string {
		var v string
		if err := db.Pool.QueryRow(ctx, `SELECT string_agg(value, ',' ORDER BY value) FROM identities
			WHERE workspace_id = $1 AND customer_id = $2 AND type = 'email'`, ws, cust).Scan(&v); err != nil {
			t.Fatal(err)
		}
		return v
	}
	if got := emails(ann); got != "jos\u00e9@example.com" {
		t.Errorf("ann's email = %+q, want the NFC form", got)
	}
	if got := emails(bob); got != "rosa@example.com,z\u00f6e@example.com" {
		t.Errorf("bob's emails = %+q, want the fullwidth one folded, the canonical one as it was", got)
	}
	if got := emails(cid); got != "zo\u0308e@example.com" {
		t.Errorf("cid's email = %+q, want the colliding NFD row left as it was", got)
	}
	var idents, dropped string
	if err := db.Pool.QueryRow(ctx, `SELECT identities::text, dropped::text FROM events WHERE workspace_id = $1 AND dedupe_key = 'old-ann'`,
		ws).Scan(&idents, &dropped); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(idents, "jos\u00e9@example.com") || strings.Contains(idents, "e\u0301") || !strings.Contains(idents, "+14155550101") {
		t.Errorf("event identities = %s, want the email in NFC and the phone kept", idents)
	}
	if !strings.Contains(dropped, `email \"jos`+"\u00e9"+`@example.com\": limit`) || !strings.Contains(dropped, `phone \"+1\": x`) {
		t.Errorf("event dropped = %s, want the email's record rewritten and the other kept", dropped)
	}
	// The rewritten identity is found, and split, by any form.
	if c, err := db.FindCustomerByIdentity(ctx, ws, c360.Identity{Type: "email", Value: "JOSE\u0301@example.com"}); err != nil || c.ID != ann {
		t.Errorf("lookup after the migration = %v, %v; want ann", c, err)
	}
	sp, err := db.SplitIdentity(ctx, ws, ann, c360.Identity{Type: "email", Value: "jos\u00e9@example.com"}, "admin", "")
	if err != nil || sp.MovedEvents != 1 {
		t.Errorf("split after the migration: %+v, %v; want the event that came through it alone moved", sp, err)
	}
}
