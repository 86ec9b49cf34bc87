package postgres_test

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"runtime"
	"runtime/metrics"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/c360dev/c360"
	"github.com/c360dev/c360/internal/pgtest"
	"github.com/c360dev/c360/postgres"
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

// Migration 00021 brings email identities stored in the old forms to the
// normalizer's, with the normalizer itself: NFD, fullwidth, halfwidth
// katakana, a punycode domain, domains with compatibility letters UTS #46
// maps (ﬁ, ſ), with the events that carry them and the customer's search
// text, reading and writing pages of two rows. A value whose form another
// row holds, and two values with one form, are left as they are, named in
// the log by customer id and never by value, and the migration does not
// fail. The rewritten addresses are found, split and identified again by
// any form, without a new customer. Run again, it changes nothing.
func TestMigrationRenormalizesStoredEmails(t *testing.T) {
	db := pgtest.Open(t)
	ws, _, _ := pgtest.Workspace(t, db)
	ctx := context.Background()
	cust := map[string]int64{}
	for i, name := range []string{"ann", "bob", "cid", "dan", "eve", "fay", "gus", "hal", "ivy"} {
		cust[name] = ingest1(t, db, ws, track(name, ids("phone", fmt.Sprintf("+1415555%04d", 101+i)))).CustomerID
	}
	// Rows as the previous release stored them: lowercased, not brought
	// to one form.
	for _, s := range []struct{ cust, value string }{
		{"ann", "jose\u0301@example.com"},               // NFD: rewritten
		{"bob", "\uff52\uff4f\uff53\uff41@example.com"}, // fullwidth: rewritten
		{"bob", "z\u00f6e@example.com"},                 // already canonical
		{"cid", "zo\u0308e@example.com"},                // NFD, bob holds its form: left
		{"dan", "rosa@xn--bcher-kva.de"},                // punycode: rewritten
		{"eve", "\uff76\uff9e@example.jp"},              // halfwidth katakana: rewritten
		{"fay", "a@\ufb01le.com"},                       // ligature in the domain: a@file.com
		{"gus", "a@\u017ftadt.de"},                      // long s in the domain: a@stadt.de
		{"hal", "kim@xn--bcher-kva.de"},                 // hal and ivy: one form, both left
		{"ivy", "kim@bu\u0308cher.de"},
		{"ivy", "ivy@example.com"}, // ASCII: not read
	} {
		if _, err := db.Pool.Exec(ctx, `INSERT INTO identities (workspace_id, type, value, customer_id) VALUES ($1, 'email', $2, $3)`,
			ws, s.value, cust[s.cust]); err != nil {
			t.Fatal(err)
		}
	}
	event := func(key, customer, identities, dropped string) {
		t.Helper()
		var d any
		if dropped != "" {
			d = dropped
		}
		if _, err := db.Pool.Exec(ctx, `INSERT INTO events (workspace_id, customer_id, type, source, dedupe_key, occurred_at, identities, dropped)
			VALUES ($1, $2, 'track', 'test', $3, now(), $4, $5)`, ws, cust[customer], key, identities, d); err != nil {
			t.Fatal(err)
		}
	}
	event("old-ann", "ann", `[{"type":"phone","value":"+14155550101"},{"type":"email","value":"jose\u0301@example.com"}]`,
		`["email \"jose\u0301@example.com\": limit: email allows 1", "phone \"+1\": x"]`)
	event("old-ann-2", "ann", `[{"type":"email","value":"jose\u0301@example.com"}]`, "")
	event("old-dan", "dan", `[{"type":"email","value":"rosa@xn--bcher-kva.de"}]`, `["email \"rosa@xn--bcher-kva.de\": blocked value"]`)
	event("old-hal", "hal", `[{"type":"email","value":"kim@xn--bcher-kva.de"}]`, "")
	var logs bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	if err := postgres.RenormalizeEmails(ctx, db, 2, log); err != nil {
		t.Fatalf("migration: %v", err)
	}
	emails := func(name string) string {
		var v string
		if err := db.Pool.QueryRow(ctx, `SELECT string_agg(value, ',' ORDER BY value) FROM identities
			WHERE workspace_id = $1 AND customer_id = $2 AND type = 'email'`, ws, cust[name]).Scan(&v); err != nil {
			t.Fatal(err)
		}
		return v
	}
	for name, want := range map[string]string{
		"ann": "jos\u00e9@example.com",
		"bob": "rosa@example.com,z\u00f6e@example.com",
		"cid": "zo\u0308e@example.com",
		"dan": "rosa@b\u00fccher.de",
		"eve": "\u30ac@example.jp",
		"fay": "a@file.com",
		"gus": "a@stadt.de",
		"hal": "kim@xn--bcher-kva.de",
		"ivy": "ivy@example.com,kim@bu\u0308cher.de",
	} {
		if got := emails(name); got != want {
			t.Errorf("%s's emails = %+q, want %+q", name, got, want)
		}
	}
	eventCols := func(key string) (idents, dropped string) {
		t.Helper()
		if err := db.Pool.QueryRow(ctx, `SELECT identities::text, coalesce(dropped::text, '') FROM events WHERE workspace_id = $1 AND dedupe_key = $2`,
			ws, key).Scan(&idents, &dropped); err != nil {
			t.Fatal(err)
		}
		return idents, dropped
	}
	idents, dropped := eventCols("old-ann")
	if !strings.Contains(idents, "jos\u00e9@example.com") || strings.Contains(idents, "e\u0301") || !strings.Contains(idents, "+14155550101") {
		t.Errorf("event identities = %s, want the email in NFC and the phone kept", idents)
	}
	if !strings.Contains(dropped, `email \"jos`+"\u00e9"+`@example.com\": limit`) || !strings.Contains(dropped, `phone \"+1\": x`) {
		t.Errorf("event dropped = %s, want the email's record rewritten and the other kept", dropped)
	}
	if idents, dropped := eventCols("old-dan"); !strings.Contains(idents, "rosa@b\u00fccher.de") || !strings.Contains(dropped, `email \"rosa@b`+"\u00fc"+`cher.de\": blocked`) {
		t.Errorf("dan's event = %s %s, want the punycode address rewritten in both", idents, dropped)
	}
	if idents, _ := eventCols("old-hal"); !strings.Contains(idents, "kim@xn--bcher-kva.de") {
		t.Errorf("hal's event = %s, want the address left, as its identity is", idents)
	}
	// The search text holds the rewritten values.
	for name, want := range map[string]string{"dan": "rosa@b\u00fccher.de", "fay": "a@file.com", "eve": "\u30ac@example.jp"} {
		if n := count(t, db, `SELECT count(*) FROM customers WHERE workspace_id = $1 AND id = $2 AND strpos(search_text, $3) > 0`,
			ws, cust[name], want); n != 1 {
			t.Errorf("%s's search text does not hold %+q", name, want)
		}
	}
	// Counts and the customers of the collisions are logged, no value.
	out := logs.String()
	for _, want := range []string{"rewritten=6", "left_collision=3", fmt.Sprintf("customers=\"%v\"", []int64{cust["bob"], cust["cid"], cust["hal"], cust["ivy"]})} {
		if !strings.Contains(out, fmt.Sprintf("workspace=%d", ws)) || !strings.Contains(out, want) {
			t.Errorf("log does not say %s:\n%s", want, out)
		}
	}
	if strings.Contains(out, "@") {
		t.Errorf("log names a value:\n%s", out)
	}
	// Every form finds the rewritten identity, and identifies its customer
	// again instead of creating one.
	for v, name := range map[string]string{"JOSE\u0301@example.com": "ann", "rosa@xn--bcher-kva.de": "dan", "ROSA@B\u00dcCHER.DE": "dan",
		"\uff76\uff9e@example.jp": "eve", "a@\ufb01le.com": "fay", "A@\u017fTADT.DE": "gus"} {
		if c, err := db.FindCustomerByIdentity(ctx, ws, c360.Identity{Type: "email", Value: v}); err != nil || c.ID != cust[name] {
			t.Errorf("lookup of %+q after the migration = %v, %v; want %s", v, c, err, name)
		}
		if r := ingest1(t, db, ws, track("again-"+v, ids("email", v))); r.CustomerID != cust[name] {
			t.Errorf("ingest of %+q after the migration: customer %d, want %s's %d", v, r.CustomerID, name, cust[name])
		}
	}
	sp, err := db.SplitIdentity(ctx, ws, cust["dan"], c360.Identity{Type: "email", Value: "ROSA@XN--BCHER-KVA.DE"}, "admin", "")
	if err != nil || sp.MovedEvents != 2 {
		t.Errorf("split after the migration: %+v, %v; want dan's old event and the new one moved", sp, err)
	}
	// Run again: nothing changes.
	snapshot := func() string {
		var v string
		if err := db.Pool.QueryRow(ctx, `SELECT
			(SELECT string_agg(value || '/' || customer_id, ',' ORDER BY value) FROM identities WHERE workspace_id = $1) ||
			(SELECT string_agg(identities::text || coalesce(dropped::text, ''), ',' ORDER BY id) FROM events WHERE workspace_id = $1) ||
			(SELECT string_agg(search_text, ',' ORDER BY id) FROM customers WHERE workspace_id = $1)`, ws).Scan(&v); err != nil {
			t.Fatal(err)
		}
		return v
	}
	before := snapshot()
	logs.Reset()
	if err := postgres.RenormalizeEmails(ctx, db, 2, log); err != nil {
		t.Fatalf("migration, again: %v", err)
	}
	if after := snapshot(); after != before {
		t.Errorf("the second run changed rows:\n%s\n%s", before, after)
	}
	if !strings.Contains(logs.String(), "rewritten=0") {
		t.Errorf("second run's log:\n%s", logs.String())
	}
}

// Migration 00021 folds the old forms of one address that belong to one
// customer into the address's form, instead of leaving them unreachable:
// two stored values with one form (the oldest row by first seen is kept,
// its source and first seen with the latest last seen), and a value whose
// form the same customer already holds (that row is kept, with the
// earliest first seen). The customer's events carry the form once, its
// drop records name it, every input finds the customer and identifies it
// again without creating one. Only values of different customers are
// left, and the log names each of those customers once.
func TestMigrationFoldsOneCustomersForms(t *testing.T) {
	db := pgtest.Open(t)
	ws, _, _ := pgtest.Workspace(t, db)
	ctx := context.Background()
	cust := map[string]int64{}
	for i, name := range []string{"kim", "lee", "mia", "ned", "oli", "pat"} {
		cust[name] = ingest1(t, db, ws, track("fold-"+name, ids("phone", fmt.Sprintf("+1415556%04d", 101+i)))).CustomerID
	}
	for _, s := range []struct{ cust, value, source, first, last string }{
		{"kim", "kim@bu\u0308cher.de", "b", "2024-03-01", "2024-09-01"}, // kim: two old forms, no row holds the form
		{"kim", "kim@xn--bcher-kva.de", "a", "2024-01-01", "2024-02-01"},
		{"lee", "lee@b\u00fccher.de", "c", "2024-05-01", "2024-05-02"}, // lee: holds the form, and an old one
		{"lee", "lee@xn--bcher-kva.de", "d", "2024-04-01", "2024-06-01"},
		{"mia", "mia@xn--bcher-kva.de", "", "2024-01-01", "2024-01-01"}, // mia and ned: one form, left
		{"mia", "mia@bu\u0308cher.de", "", "2024-01-01", "2024-01-01"},
		{"ned", "mia@\uff42\u00fccher.de", "", "2024-01-01", "2024-01-01"},
		{"oli", "oli@xn--bcher-kva.de", "", "2024-01-01", "2024-01-01"}, // oli: two old forms, pat holds the form: left
		{"oli", "oli@bu\u0308cher.de", "", "2024-01-01", "2024-01-01"},
		{"pat", "oli@b\u00fccher.de", "", "2024-01-01", "2024-01-01"},
	} {
		if _, err := db.Pool.Exec(ctx, `INSERT INTO identities (workspace_id, type, value, customer_id, source, first_seen, last_seen)
			VALUES ($1, 'email', $2, $3, $4, $5, $6)`, ws, s.value, cust[s.cust], s.source, s.first, s.last); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := db.Pool.Exec(ctx, `INSERT INTO events (workspace_id, customer_id, type, source, dedupe_key, occurred_at, identities, dropped)
		VALUES ($1, $2, 'track', 'test', 'old-kim', now(), $3, $4)`, ws, cust["kim"],
		`[{"type":"phone","value":"+14155560101"},{"type":"email","value":"kim@xn--bcher-kva.de"},{"type":"email","value":"kim@bu\u0308cher.de"}]`,
		`["email \"kim@bu\u0308cher.de\": limit: email allows 1"]`); err != nil {
		t.Fatal(err)
	}
	var logs bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	if err := postgres.RenormalizeEmails(ctx, db, 2, log); err != nil {
		t.Fatalf("migration: %v", err)
	}
	rows := func(name string) string {
		var v string
		if err := db.Pool.QueryRow(ctx, `SELECT string_agg(value || ' ' || source || ' ' || to_char(first_seen AT TIME ZONE 'UTC', 'YYYY-MM-DD')
			|| ' ' || to_char(last_seen AT TIME ZONE 'UTC', 'YYYY-MM-DD'), ',' ORDER BY value) FROM identities
			WHERE workspace_id = $1 AND customer_id = $2 AND type = 'email'`, ws, cust[name]).Scan(&v); err != nil {
			t.Fatal(err)
		}
		return v
	}
	for name, want := range map[string]string{
		"kim": "kim@b\u00fccher.de a 2024-01-01 2024-09-01",
		"lee": "lee@b\u00fccher.de d 2024-04-01 2024-06-01",
		"mia": "mia@bu\u0308cher.de  2024-01-01 2024-01-01,mia@xn--bcher-kva.de  2024-01-01 2024-01-01",
		"ned": "mia@\uff42\u00fccher.de  2024-01-01 2024-01-01",
		"oli": "oli@bu\u0308cher.de  2024-01-01 2024-01-01,oli@xn--bcher-kva.de  2024-01-01 2024-01-01",
		"pat": "oli@b\u00fccher.de  2024-01-01 2024-01-01",
	} {
		if got := rows(name); got != want {
			t.Errorf("%s's email identities = %+q, want %+q", name, got, want)
		}
	}
	var idents, dropped string
	if err := db.Pool.QueryRow(ctx, `SELECT identities::text, dropped::text FROM events WHERE workspace_id = $1 AND dedupe_key = 'old-kim'`,
		ws).Scan(&idents, &dropped); err != nil {
		t.Fatal(err)
	}
	if want := `[{"type": "phone", "value": "+14155560101"}, {"type": "email", "value": "kim@b` + "\u00fc" + `cher.de"}]`; idents != want {
		t.Errorf("kim's event identities = %s, want %s", idents, want)
	}
	if !strings.Contains(dropped, `email \"kim@b`+"\u00fc"+`cher.de\": limit`) {
		t.Errorf("kim's event dropped = %s, want the record rewritten", dropped)
	}
	if n := count(t, db, `SELECT count(*) FROM customers WHERE workspace_id = $1 AND id = $2 AND strpos(search_text, $3) > 0 AND strpos(search_text, 'xn--') = 0`,
		ws, cust["kim"], "kim@b\u00fccher.de"); n != 1 {
		t.Errorf("kim's search text does not hold the form alone")
	}
	var line string
	for _, l := range strings.Split(logs.String(), "\n") {
		if strings.Contains(l, fmt.Sprintf("workspace=%d ", ws)) {
			line += l + "\n"
		}
	}
	for _, want := range []string{"rewritten=1", "folded=2", "left_collision=5",
		fmt.Sprintf("customers=\"%v\"", []int64{cust["mia"], cust["ned"], cust["oli"], cust["pat"]})} {
		if !strings.Contains(line, want) {
			t.Errorf("log does not say %s:\n%s", want, line)
		}
	}
	for v, name := range map[string]string{"kim@b\u00fccher.de": "kim", "KIM@XN--BCHER-KVA.DE": "kim", "kim@bu\u0308cher.de": "kim",
		"lee@xn--bcher-kva.de": "lee", "LEE@B\u00dcCHER.DE": "lee"} {
		if c, err := db.FindCustomerByIdentity(ctx, ws, c360.Identity{Type: "email", Value: v}); err != nil || c.ID != cust[name] {
			t.Errorf("lookup of %+q after the migration = %v, %v; want %s", v, c, err, name)
		}
		if r := ingest1(t, db, ws, track("fold-again-"+v, ids("email", v))); r.CustomerID != cust[name] {
			t.Errorf("ingest of %+q after the migration: customer %d, want %s's %d", v, r.CustomerID, name, cust[name])
		}
	}
	sp, err := db.SplitIdentity(ctx, ws, cust["kim"], c360.Identity{Type: "email", Value: "KIM@XN--BCHER-KVA.DE"}, "admin", "")
	if err != nil || sp.MovedEvents < 2 {
		t.Errorf("split after the migration: %+v, %v; want kim's old event and the new ones moved", sp, err)
	}
	// Run again: the rows left stay left, nothing else is read.
	logs.Reset()
	if err := postgres.RenormalizeEmails(ctx, db, 2, log); err != nil {
		t.Fatalf("migration, again: %v", err)
	}
	if want := fmt.Sprintf("workspace=%d rewritten=0 folded=0 events=0 left_collision=5", ws); !strings.Contains(logs.String(), want) {
		t.Errorf("second run's log does not say %s:\n%s", want, logs.String())
	}
}

// Migration 00021 holds a page of a workspace's changes in memory, not
// the whole list: rewriting 30,000 punycode addresses, the live heap,
// measured by a sampler forcing collections during the run, grows by
// less than 3 MB above what it was when the migration started (some
// 1.4 MB whatever the number of addresses, a connection's buffers and
// statements; the list in memory took some 215 B an address, 6.4 MB
// here). Every address is still rewritten.
func TestMigrationHoldsAPageOfChangesInMemory(t *testing.T) {
	db := pgtest.Open(t)
	ws, _, _ := pgtest.Workspace(t, db)
	ctx := context.Background()
	const n = 30000
	// 300 customers of 100 addresses each.
	if _, err := db.Pool.Exec(ctx, `WITH c AS (INSERT INTO customers (workspace_id) SELECT $1 FROM generate_series(1, $2 / 100) RETURNING id)
		INSERT INTO identities (workspace_id, type, value, customer_id)
		SELECT $1, 'email', 'customer-' || c.id || '-' || i || '@xn--bcher-kva.de', c.id FROM c, generate_series(1, 100) AS i`, ws, n); err != nil {
		t.Fatal(err)
	}
	live := func() uint64 {
		s := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
		runtime.GC()
		metrics.Read(s)
		return s[0].Value.Uint64()
	}
	// The live heap when the migration starts (its migrator open), then
	// its largest while it runs.
	var base uint64
	var peak atomic.Uint64
	started := make(chan struct{})
	done := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		<-started
		for {
			if l := live(); l > peak.Load() {
				peak.Store(l)
			}
			select {
			case <-done:
				return
			case <-time.After(5 * time.Millisecond):
			}
		}
	}()
	var logs bytes.Buffer
	err := postgres.RenormalizeEmailsAfter(ctx, db, 500, slog.New(slog.NewTextHandler(&logs, nil)), func() {
		live()
		base = live()
		close(started)
	})
	close(done)
	<-sampled
	if err != nil {
		t.Fatalf("migration: %v", err)
	}
	if want := fmt.Sprintf("workspace=%d rewritten=%d ", ws, n); !strings.Contains(logs.String(), want) {
		t.Errorf("log does not say %s:\n%s", want, logs.String())
	}
	if got := count(t, db, `SELECT count(*) FROM identities WHERE workspace_id = $1 AND value LIKE '%@b`+"\u00fc"+`cher.de'`, ws); got != n {
		t.Errorf("%d addresses rewritten, want %d", got, n)
	}
	grew := int64(peak.Load()) - int64(base)
	t.Logf("live heap grew by %d B during the run (%d B an address)", grew, grew/int64(n))
	if grew > 3<<20 {
		t.Errorf("live heap grew by %d B during the run (%d B an address), want under 3 MB: the changes are held in memory", grew, grew/int64(n))
	}
}
