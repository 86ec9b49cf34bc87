package postgres_test

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/c360dev/c360"
	"github.com/c360dev/c360/internal/pgtest"
	"github.com/c360dev/c360/postgres"
)

// annPII is what the test's person left behind, in every spelling it was
// given: no row of any tenant table may hold one of them after erasure.
var annPII = []string{"ann@x.io", "4155550101", "555-0101", "Ann Lee", "sess-ann", "u-ann"}

// tenantTables are every table that holds a workspace's data.
var tenantTables = []string{"customers", "identities", "events", "conversations", "messages", "consents",
	"customer_changes", "merges", "customer_separations", "audit_log", "observations", "dead_letters"}

// annAndBob stores one person as two customers (Ann, Bob) with events,
// messages on two channels, a consent, a chatbot session and a status
// callback of an unknown message naming her phone, merges Bob into Ann,
// and records an observation through Bob's id, two audit entries about
// her and a dead letter naming her phone as it was typed. Zed is someone
// else, with a dead letter of his own.
func annAndBob(t *testing.T, db *postgres.DB, ws int64) (ann, bob, zed int64) {
	t.Helper()
	ctx := context.Background()
	t0 := time.Now().Add(-time.Hour).UTC()
	ann = ingest1(t, db, ws, &c360.Event{Type: c360.EventIdentify, Source: "test", DedupeKey: "a1", OccurredAt: t0,
		Identities: ids("email", "ann@x.io", "phone", "+14155550101"),
		Traits:     map[string]any{"name": "Ann Lee", "email": "ann@x.io"}}).CustomerID
	ingest1(t, db, ws, &c360.Event{Type: c360.EventMessage, Source: "test", DedupeKey: "a2", OccurredAt: t0.Add(time.Second),
		Identities: ids("phone", "+14155550101"), Consent: &c360.ConsentInput{Channel: "sms", Status: c360.ConsentOptedOut},
		Message: &c360.MessageInput{Channel: "sms", Direction: c360.DirectionInbound, Body: "STOP, this is ann@x.io", Status: "received"}})
	ingest1(t, db, ws, &c360.Event{Type: c360.EventMessage, Source: "chatbot", DedupeKey: "a3", OccurredAt: t0.Add(2 * time.Second),
		Identities: ids("chatbot:web", "sess-ann", "email", "ann@x.io"), RepeatSharesIdentity: true,
		Properties: map[string]any{"threadKey": "sess-ann"},
		Message:    &c360.MessageInput{Channel: "chat", Direction: c360.DirectionInbound, Body: "hello, Ann Lee here", Status: "received"}})
	bob = ingest1(t, db, ws, &c360.Event{Type: c360.EventTrack, Name: "Viewed", Source: "test", DedupeKey: "b1", OccurredAt: t0.Add(3 * time.Second),
		Identities: ids("user_id", "u-ann"), Properties: map[string]any{"email": "ann@x.io", "plan": "pro"},
		Context: map[string]any{"traits": map[string]any{"name": "Ann Lee"}}}).CustomerID
	if ann == bob {
		t.Fatal("Ann and Bob are one customer before the merge")
	}
	// A status callback of a message c360 does not know: stored with her
	// number and no customer.
	if res := ingest1(t, db, ws, &c360.Event{Type: c360.EventMessageStatus, Source: "twilio", DedupeKey: "s1",
		Identities: ids("phone", "+14155550101"),
		Message:    &c360.MessageInput{Channel: "sms", ProviderID: "SMunknown", Status: "delivered"}}); res.CustomerID != 0 {
		t.Fatalf("the unknown status callback reached customer %d", res.CustomerID)
	}
	if _, err := db.MergeCustomers(ctx, ws, ann, bob, true, "key ad0000000001", "same person"); err != nil {
		t.Fatal(err)
	}
	if _, err := db.RecordObservation(ctx, ws, c360.ObservationInput{CustomerID: bob, Text: "prefers email to ann@x.io",
		RecordedBy: "key x", RecordedByRole: c360.RoleAgent}); err != nil {
		t.Fatal(err)
	}
	merge := c360.NewAuditEntry(&c360.Principal{WorkspaceID: ws, Role: c360.RoleAdmin, KeyID: 1, KeyPrefix: "p"}, ws, c360.AuditCustomerMerge, time.Now())
	merge.CustomerID, merge.Detail = ann, map[string]any{"mergedId": bob, "reason": "ann@x.io called twice"}
	read := c360.NewAuditEntry(&c360.Principal{WorkspaceID: ws, Role: c360.RoleAssistant, KeyID: 2, KeyPrefix: "q"}, ws, c360.AuditPIIRead, time.Now())
	read.CustomerID, read.Fields, read.Detail = ann, []string{"identity.email"}, map[string]any{"operation": "Lookup"}
	if err := db.RecordAudit(ctx, []*c360.AuditEntry{merge, read}); err != nil {
		t.Fatal(err)
	}
	zed = ingest1(t, db, ws, &c360.Event{Type: c360.EventIdentify, Source: "test", DedupeKey: "z1",
		Identities: ids("email", "zed@x.io"), Traits: map[string]any{"name": "Zed"}}).CustomerID
	// Refused as invalid (+1 234 is no number) and kept: one names her
	// phone as she typed it, the other Zed.
	for _, ev := range []*c360.Event{
		track("dl-ann", ids("phone", "(415) 555-0101", "phone", "+1 234")),
		track("dl-zed", ids("email", "zed@x.io", "phone", "+1 234")),
	} {
		if _, err := db.Ingest(c360.WithInvalidAsDeadLetters(ctx), ws, []*c360.Event{ev}); err == nil {
			t.Fatalf("%s was accepted", ev.DedupeKey)
		}
	}
	return ann, bob, zed
}

// Erasing a person through a merged-away id erases the customer it lives
// in and every customer merged into it: no table holds anything of the
// person afterwards, the events stay as their exactly-once keys only, and
// the answer counts what went.
func TestEraseCustomerLeavesNothingOfThePerson(t *testing.T) {
	db := pgtest.Open(t)
	ws, _, _ := pgtest.Workspace(t, db)
	ctx := context.Background()
	ann, bob, zed := annAndBob(t, db, ws)
	changes := count(t, db, `SELECT count(*) FROM customer_changes WHERE workspace_id = $1 AND customer_id IN ($2, $3)`, ws, ann, bob)
	var version int64
	if err := db.Pool.QueryRow(ctx, `SELECT version FROM customers WHERE workspace_id = $1 AND id = $2`, ws, ann).Scan(&version); err != nil {
		t.Fatal(err)
	}

	e, err := db.EraseCustomer(ctx, ws, bob, "key ad0000000001", "ticket 42")
	if err != nil {
		t.Fatal(err)
	}
	want := c360.CustomerErasure{CustomerID: ann, MergedCustomerIDs: []int64{bob}, Identities: 4, EventsScrubbed: 5,
		Messages: 2, Conversations: 2, Consents: 1, Observations: 1, Changes: changes, MergeRecords: 1, Separations: 0,
		DeadLetters: 1, AuditEntriesScrubbed: 1, ErasedAt: e.ErasedAt}
	if e.ErasedAt.IsZero() || !slices.Equal(e.MergedCustomerIDs, want.MergedCustomerIDs) {
		t.Errorf("erasure = %+v, want %+v", *e, want)
	}
	e.MergedCustomerIDs, want.MergedCustomerIDs = nil, nil
	if !reflect.DeepEqual(*e, want) {
		t.Errorf("erasure = %+v,\n want %+v", *e, want)
	}

	// Nothing of hers in any table, in any spelling.
	for _, table := range tenantTables {
		for _, p := range annPII {
			if n := count(t, db, `SELECT count(*) FROM `+table+` x WHERE workspace_id = $1 AND x::text ILIKE '%' || $2 || '%'`, ws, p); n != 0 {
				t.Errorf("%d rows of %s hold %q", n, table, p)
			}
		}
	}
	for _, q := range []string{
		`SELECT count(*) FROM customers WHERE workspace_id = $1 AND (id IN ($2, $3) OR merged_into IN ($2, $3))`,
		`SELECT count(*) FROM identities WHERE workspace_id = $1 AND customer_id IN ($2, $3)`,
		`SELECT count(*) FROM events WHERE workspace_id = $1 AND customer_id IN ($2, $3)`,
		`SELECT count(*) FROM conversations WHERE workspace_id = $1 AND customer_id IN ($2, $3)`,
		`SELECT count(*) FROM messages WHERE workspace_id = $1 AND customer_id IN ($2, $3)`,
		`SELECT count(*) FROM consents WHERE workspace_id = $1 AND customer_id IN ($2, $3)`,
		`SELECT count(*) FROM observations WHERE workspace_id = $1 AND customer_id IN ($2, $3)`,
		`SELECT count(*) FROM merges WHERE workspace_id = $1 AND (survivor_id IN ($2, $3) OR merged_id IN ($2, $3))`,
		`SELECT count(*) FROM customer_separations WHERE workspace_id = $1 AND (customer_a IN ($2, $3) OR customer_b IN ($2, $3))`,
		`SELECT count(*) FROM customer_changes WHERE workspace_id = $1 AND customer_id IN ($2, $3) AND kind <> 'erased'`,
	} {
		if n := count(t, db, q, ws, ann, bob); n != 0 {
			t.Errorf("%s: %d, want 0", q, n)
		}
	}
	// Her feed ends with one erased change, empty, at the next version.
	if n := count(t, db, `SELECT count(*) FROM customer_changes WHERE workspace_id = $1 AND customer_id = $2
		AND version = $3 AND kind = 'erased' AND diff = '{}'`, ws, ann, version+1); n != 1 {
		t.Errorf("erased changes of Ann at v%d: %d, want 1", version+1, n)
	}
	// Every event is kept, as its key alone, and a marker of each of its
	// identities, which is no identifier of hers.
	if n := count(t, db, `SELECT count(*) FROM events WHERE workspace_id = $1 AND dedupe_key IN ('a1', 'a2', 'a3', 'b1', 's1')
		AND customer_id IS NULL AND name IS NULL AND properties = '{}' AND traits IS NULL
		AND context IS NULL AND dropped IS NULL AND traits_if_absent IS NULL
		AND jsonb_array_length(identities) > 0
		AND NOT EXISTS (SELECT 1 FROM jsonb_to_recordset(identities) AS x(type text, value text)
			WHERE x.type <> 'erased' OR x.value !~ '^[0-9a-f]{64}$')`, ws); n != 5 {
		t.Errorf("scrubbed events kept: %d, want 5", n)
	}
	// The audit log still says who read her and when, without her data.
	if n := count(t, db, `SELECT count(*) FROM audit_log WHERE workspace_id = $1 AND customer_id = $2`, ws, ann); n != 2 {
		t.Errorf("audit entries about Ann: %d, want 2", n)
	}
	// Zed is untouched, and so is his dead letter.
	if c, err := db.FindCustomerByIdentity(ctx, ws, c360.Identity{Type: "email", Value: "zed@x.io"}); err != nil || c.ID != zed || c.Traits["name"] != "Zed" {
		t.Errorf("Zed = %+v, %v", c, err)
	}
	if n := count(t, db, `SELECT count(*) FROM dead_letters WHERE workspace_id = $1 AND dedupe_key = 'dl-zed'`, ws); n != 1 {
		t.Errorf("Zed's dead letters: %d, want 1", n)
	}

	// Lookups find nobody.
	for _, id := range []int64{ann, bob} {
		if _, err := db.FindCustomerByID(ctx, ws, id); c360.ErrorCode(err) != c360.ENOTFOUND {
			t.Errorf("customer %d: %v, want NOT_FOUND", id, err)
		}
	}
	for _, id := range ids("email", "ann@x.io", "phone", "+14155550101", "user_id", "u-ann", "chatbot:web", "sess-ann") {
		if _, err := db.FindCustomerByIdentity(ctx, ws, id); c360.ErrorCode(err) != c360.ENOTFOUND {
			t.Errorf("customerByIdentity %v: %v, want NOT_FOUND", id, err)
		}
	}
	for _, q := range []string{"ann", "Ann Lee", "4155550101"} {
		page, err := db.FindCustomers(ctx, ws, c360.CustomerFilter{Query: q, First: 10})
		if err != nil {
			t.Fatalf("search %q: %v", q, err)
		}
		if len(page.Items) != 0 {
			t.Errorf("search %q: %d customers, want none", q, len(page.Items))
		}
	}
	// Erasing again, through either id: she is gone, and the answer says
	// when she went (it was "customer N not found", as for a mistyped id:
	// a client repeating an erasure whose answer it lost could not tell).
	at := e.ErasedAt.UTC().Format(time.RFC3339)
	for _, id := range []int64{ann, bob} {
		_, err := db.EraseCustomer(ctx, ws, id, "key ad0000000001", "ticket 42")
		if want := fmt.Sprintf("customer %d was erased at %s", id, at); c360.ErrorCode(err) != c360.ENOTFOUND || c360.ErrorMessage(err) != want {
			t.Errorf("erasing %d again: %v, want NOT_FOUND %q", id, err, want)
		}
	}
	if _, err := db.EraseCustomer(ctx, ws, zed+1_000_000, "key ad0000000001", "ticket 42"); c360.ErrorMessage(err) != fmt.Sprintf("customer %d not found", zed+1_000_000) {
		t.Errorf("erasing an unknown id: %v, want NOT_FOUND, not found", err)
	}
}

// A provider's redelivery of an erased person's event (a webhook retried
// for hours) is a duplicate, on the group path and on the per-event path,
// for a chatbot's key too (a repeat must share an identity with the stored
// event, and an erased one has none left): it stores nothing and creates
// no customer. A new event with one of her identifiers creates a new
// customer.
func TestEraseCustomerRedeliveryCreatesNobody(t *testing.T) {
	db := pgtest.Open(t)
	ws, _, _ := pgtest.Workspace(t, db)
	ctx := context.Background()
	ann, bob, _ := annAndBob(t, db, ws)
	if _, err := db.EraseCustomer(ctx, ws, ann, "key ad0000000001", "ticket 42"); err != nil {
		t.Fatal(err)
	}
	customers := count(t, db, `SELECT count(*) FROM customers WHERE workspace_id = $1`, ws)
	events := count(t, db, `SELECT count(*) FROM events WHERE workspace_id = $1`, ws)
	redeliveries := func() []*c360.Event {
		return []*c360.Event{
			{Type: c360.EventIdentify, Source: "test", DedupeKey: "a1", Identities: ids("email", "ann@x.io"),
				Traits: map[string]any{"name": "Ann Lee"}},
			{Type: c360.EventMessage, Source: "test", DedupeKey: "a2", Identities: ids("phone", "+14155550101"),
				Message: &c360.MessageInput{Channel: "sms", Direction: c360.DirectionInbound, Body: "STOP", Status: "received"}},
			{Type: c360.EventMessage, Source: "chatbot", DedupeKey: "a3", Identities: ids("chatbot:web", "sess-ann"),
				RepeatSharesIdentity: true, Properties: map[string]any{"threadKey": "sess-ann"},
				Message: &c360.MessageInput{Channel: "chat", Direction: c360.DirectionInbound, Body: "hello", Status: "received"}},
			track("b1", ids("user_id", "u-ann")),
		}
	}
	for _, ev := range redeliveries() {
		res := ingest1(t, db, ws, ev)
		if !res.Duplicate || res.CustomerID != 0 {
			t.Errorf("redelivery of %s: %+v, want a duplicate of no customer", ev.DedupeKey, res)
		}
	}
	if res, err := db.IngestByGroupOnly(ctx, ws, redeliveries()); err != nil {
		t.Errorf("redelivery on the group path: %v", err)
	} else {
		for i, r := range res {
			if !r.Duplicate || r.CustomerID != 0 {
				t.Errorf("group redelivery %d: %+v, want a duplicate of no customer", i, r)
			}
		}
	}
	for _, ev := range redeliveries() {
		ready, hold := make(chan struct{}), make(chan struct{})
		close(hold)
		if err := db.IngestHeld(ctx, ws, ev, ready, hold); err != nil {
			t.Errorf("redelivery of %s on the per-event path: %v", ev.DedupeKey, err)
		}
	}
	if got := count(t, db, `SELECT count(*) FROM customers WHERE workspace_id = $1`, ws); got != customers {
		t.Errorf("customers after redeliveries: %d, want %d", got, customers)
	}
	if got := count(t, db, `SELECT count(*) FROM events WHERE workspace_id = $1`, ws); got != events {
		t.Errorf("events after redeliveries: %d, want %d", got, events)
	}
	for _, p := range annPII {
		if n := count(t, db, `SELECT count(*) FROM events x WHERE workspace_id = $1 AND x::text ILIKE '%' || $2 || '%'`, ws, p); n != 0 {
			t.Errorf("%d events hold %q after redeliveries", n, p)
		}
	}

	// A new event is a new customer.
	res := ingest1(t, db, ws, &c360.Event{Type: c360.EventIdentify, Source: "test", DedupeKey: "a-new",
		Identities: ids("email", "ann@x.io")})
	if res.Duplicate || res.CustomerID == 0 || res.CustomerID == ann || res.CustomerID == bob {
		t.Fatalf("new event: %+v, want a new customer", res)
	}
	c, err := db.FindCustomerByIdentity(ctx, ws, c360.Identity{Type: "email", Value: "ann@x.io"})
	if err != nil || c.ID != res.CustomerID || len(c.Traits) != 0 {
		t.Errorf("customerByIdentity = %+v, %v; want the new customer %d, without traits", c, err, res.CustomerID)
	}
}

// Refusals change nothing: an unknown id, and another workspace's customer,
// are NOT_FOUND.
func TestEraseCustomerRefusals(t *testing.T) {
	db := pgtest.Open(t)
	ws, _, _ := pgtest.Workspace(t, db)
	other, _, _ := pgtest.Workspace(t, db)
	ctx := context.Background()
	ann, _, _ := annAndBob(t, db, ws)
	before := tableCounts(t, db, ws)
	for _, tc := range []struct {
		ws, id int64
	}{{ws, ann + 1_000_000}, {other, ann}} {
		if _, err := db.EraseCustomer(ctx, tc.ws, tc.id, "key ad0000000001", "ticket 42"); c360.ErrorCode(err) != c360.ENOTFOUND {
			t.Errorf("erase %d in workspace %d: %v, want NOT_FOUND", tc.id, tc.ws, err)
		}
	}
	if after := tableCounts(t, db, ws); !slices.Equal(after, before) {
		t.Errorf("rows per table %v, want %v", after, before)
	}
}

func tableCounts(t *testing.T, db *postgres.DB, ws int64) []int {
	t.Helper()
	out := make([]int, len(tenantTables))
	for i, table := range tenantTables {
		out[i] = count(t, db, `SELECT count(*) FROM `+table+` WHERE workspace_id = $1`, ws)
	}
	return out
}

// A customer merged away between the read of its survivor and the lock of
// its row (a concurrent merge) is erased where it went: the transaction is
// tried again, as a merge's is, and the answer names the new survivor.
func TestEraseCustomerFollowsAConcurrentMerge(t *testing.T) {
	db := pgtest.Open(t)
	ws, _, _ := pgtest.Workspace(t, db)
	ctx := context.Background()
	ann := ingest1(t, db, ws, &c360.Event{Type: c360.EventIdentify, Source: "test", DedupeKey: "r1", Identities: ids("email", "r1@x.io")}).CustomerID
	cid := ingest1(t, db, ws, &c360.Event{Type: c360.EventIdentify, Source: "test", DedupeKey: "r2", Identities: ids("email", "r2@x.io")}).CustomerID
	var merged atomic.Bool
	db.BeforeCustomerLock(func() {
		// Another transaction merges Ann into Cid before the erasure
		// locks her, once (the merge runs this hook too).
		if merged.CompareAndSwap(false, true) {
			if _, err := db.MergeCustomers(ctx, ws, cid, ann, true, "key ad0000000002", ""); err != nil {
				t.Errorf("concurrent merge: %v", err)
			}
		}
	})
	e, err := db.EraseCustomer(ctx, ws, ann, "key ad0000000001", "ticket 43")
	if err != nil {
		t.Fatal(err)
	}
	if e.CustomerID != cid || !slices.Equal(e.MergedCustomerIDs, []int64{ann}) || e.Identities != 2 {
		t.Errorf("erasure = %+v, want Cid %d with Ann %d merged into it and both identities", *e, cid, ann)
	}
	if n := count(t, db, `SELECT count(*) FROM customers WHERE workspace_id = $1`, ws); n != 0 {
		t.Errorf("%d customers left, want 0", n)
	}
}

// A customer with many events is erased whatever the pool's
// statement_timeout: the erasure's transaction sets its own, longer bound
// (eraseStatementTimeout). Before, the erasure's statements ran under the
// pool's 10 s, and a customer of a million events could never be erased:
// every try ended with 57014 and "the database is busy; retry". Here the
// pool's bound is 2 s, and the customer has 200,000 events (generated in
// SQL, as a bulk import would leave them) and the workspace as many dead
// letters of others, which the erasure reads only when they may name her:
// hers, spelled as people and providers write numbers and addresses, go,
// and those of others go nowhere.
func TestEraseCustomerWithManyEventsIsNotBoundByThePoolsTimeout(t *testing.T) {
	seed := pgtest.Open(t)
	ws, _, _ := pgtest.Workspace(t, seed)
	ctx := context.Background()
	ann := ingest1(t, seed, ws, &c360.Event{Type: c360.EventIdentify, Source: "test", DedupeKey: "a1",
		Identities: ids("email", "ann@x.io", "phone", "+14155550101")}).CustomerID
	const events = 200_000
	if _, err := seed.Pool.Exec(ctx, `
		INSERT INTO events (workspace_id, customer_id, type, name, properties, identities, source, dedupe_key, occurred_at)
		SELECT $1, $2, 'track', 'Viewed', '{"plan": "pro"}', '[{"type": "email", "value": "ann@x.io"}]', 'import', 'k' || g, now()
		FROM generate_series(1, $3) g`, ws, ann, events); err != nil {
		t.Fatal(err)
	}
	if _, err := seed.Pool.Exec(ctx, `
		INSERT INTO dead_letters (workspace_id, source, dedupe_key, event_type, event, error)
		SELECT $1::bigint, 'import', 'd' || g, 'identify',
			jsonb_build_object('type', 'identify', 'identities', jsonb_build_array(jsonb_build_object('type', 'email', 'value', 'zed' || g || '@x.io'))), 'boom'
		FROM generate_series(1, $2) g
		UNION ALL VALUES
			-- Hers, each spelled otherwise than stored, or keyed as one of her events.
			($1, 'import', 'd-ann1', 'identify', '{"type": "identify", "traits": {"phone": "(415) 555-0101"}}'::jsonb, 'boom'),
			($1, 'import', 'd-ann2', 'identify', '{"type": "identify", "identities": [{"type": "email", "value": " Ann@X.io"}]}', 'boom'),
			($1, 'import', 'd-ann3', 'message', '{"type": "message", "identities": [{"type": "phone", "value": "whatsapp:+1 (415) 555‑0101"}]}', 'boom'),
			($1, 'import', 'd-ann4', 'identify', '{"type": "identify", "traits": {"phone": "４１５.５５５.０１０１"}}', 'boom'),
			($1, 'import', 'k7', 'track', '{"type": "track"}', 'boom'),
			-- Others', alike in part.
			($1, 'import', 'd-zed1', 'identify', '{"type": "identify", "identities": [{"type": "phone", "value": "+1 415 555 0102"}]}', 'boom'),
			($1, 'import', 'd-zed2', 'identify', '{"type": "identify", "identities": [{"type": "email", "value": "annie@x.io"}], "previousId": {"type": "phone", "value": "+44 415 555 0101"}}', 'boom')`,
		ws, events); err != nil {
		t.Fatal(err)
	}
	if _, err := seed.Pool.Exec(ctx, `ANALYZE events; ANALYZE dead_letters`); err != nil {
		t.Fatal(err)
	}
	db := pgtest.OpenStore(t, url.Values{"statement_timeout": {"2s"}}, postgres.IngestConfig{})
	start := time.Now()
	got, err := db.EraseCustomer(ctx, ws, ann, "key ad0000000001", "ticket 3")
	if err != nil {
		t.Fatalf("erase after %v: %v", time.Since(start), err)
	}
	t.Logf("erased %d events and %d dead letters in %v", got.EventsScrubbed, got.DeadLetters, time.Since(start))
	if got.EventsScrubbed != events+1 || got.DeadLetters != 5 {
		t.Errorf("scrubbed %d events and deleted %d dead letters, want %d and 5", got.EventsScrubbed, got.DeadLetters, events+1)
	}
	if n := count(t, seed, `SELECT count(*) FROM dead_letters WHERE workspace_id = $1 AND (dedupe_key LIKE 'd-ann%' OR dedupe_key = 'k7')`, ws); n != 0 {
		t.Errorf("%d of her dead letters are kept", n)
	}
	if n := count(t, seed, `SELECT count(*) FROM dead_letters WHERE workspace_id = $1`, ws); n != events+2 {
		t.Errorf("%d dead letters kept, want the %d of others", n, events+2)
	}
	if n := count(t, seed, `SELECT count(*) FROM events WHERE workspace_id = $1 AND customer_id = $2`, ws, ann); n != 0 {
		t.Errorf("%d events still name her", n)
	}
}

// A person split off from someone else (two people who shared a number's
// customer) loses her own messages at her erasure, also those left in a
// conversation the two shared, which stays the original customer's: the
// split moves her events, and a shared conversation keeps all its
// messages. Before, messages were deleted only through the erased
// customers' own conversations, and hers stayed.
// Al's phone and Bea's, one customer until a split tells them apart.
const alPhone, beaPhone = "+14155550101", "+14155550102"

// sharedAt is when sharedThenSplit's first message was sent; each next
// one is a minute later.
var sharedAt = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// sharedThenSplit makes Al, a customer of alPhone and beaPhone, has each
// of msgs ({phone, body}) sent from its phone into the conversation they
// share, and splits beaPhone off: the split leaves the shared conversation
// with Al, since messages of his stay in it. It returns Al and Bea.
func sharedThenSplit(t *testing.T, db *postgres.DB, ws int64, msgs ...[2]string) (al, bea int64) {
	t.Helper()
	al = ingest1(t, db, ws, &c360.Event{Type: c360.EventIdentify, Source: "test", DedupeKey: "i1",
		Identities: ids("phone", alPhone, "phone", beaPhone)}).CustomerID
	for i, m := range msgs {
		ingest1(t, db, ws, &c360.Event{Type: c360.EventMessage, Source: "test", DedupeKey: fmt.Sprintf("m%d", i+1),
			Identities: ids("phone", m[0]), OccurredAt: sharedAt.Add(time.Duration(i) * time.Minute),
			Message: &c360.MessageInput{Channel: "sms", Direction: c360.DirectionInbound, Body: m[1], Status: "received"}})
	}
	res, err := db.SplitIdentity(context.Background(), ws, al, c360.Identity{Type: "phone", Value: beaPhone}, "key ad0000000001", "two people")
	if err != nil {
		t.Fatal(err)
	}
	if res.MovedConversations != 0 {
		t.Fatalf("the split moved %d conversations, want the shared one kept by Al", res.MovedConversations)
	}
	return al, res.Split.ID
}

func TestEraseSplitCustomerLeavesNoneOfHerMessages(t *testing.T) {
	db := pgtest.Open(t)
	ws, _, _ := pgtest.Workspace(t, db)
	ctx := context.Background()
	al, bea := sharedThenSplit(t, db, ws, [2]string{alPhone, "hi from Al"}, [2]string{beaPhone, "this is Bea Smith, not Al"})
	got, err := db.EraseCustomer(ctx, ws, bea, "key ad0000000001", "ticket 2")
	if err != nil {
		t.Fatal(err)
	}
	if n := count(t, db, `SELECT count(*) FROM messages WHERE workspace_id = $1 AND body LIKE '%Bea Smith%'`, ws); n != 0 {
		t.Errorf("%d messages Bea sent survive her erasure", n)
	}
	if got.Messages != 1 {
		t.Errorf("erasure counted %d messages, want 1", got.Messages)
	}
	if n := count(t, db, `SELECT count(*) FROM messages WHERE workspace_id = $1 AND customer_id = $2 AND body = 'hi from Al'`, ws, al); n != 1 {
		t.Errorf("Al has %d of his messages, want 1", n)
	}
}

// A person split off from the erased one keeps the messages she sent
// while the two were one customer. The split left them in the
// conversation the two shared, which is the erased customer's; the
// erasure moves them into a conversation of hers, tells her subscribers
// through a change of kind message, and erases the rest. Before, her
// messages were deleted with his conversation.
func TestEraseCustomerKeepsTheMessagesOfAPersonSplitOffFromHim(t *testing.T) {
	db := pgtest.Open(t)
	ws, _, _ := pgtest.Workspace(t, db)
	ctx := context.Background()
	al, bea := sharedThenSplit(t, db, ws, [2]string{alPhone, "hi from Al"}, [2]string{beaPhone, "this is Bea Smith, not Al"},
		[2]string{beaPhone, "Bea again"})
	at := sharedAt
	var beaVersion int64
	if err := db.Pool.QueryRow(ctx, `SELECT version FROM customers WHERE workspace_id = $1 AND id = $2`, ws, bea).Scan(&beaVersion); err != nil {
		t.Fatal(err)
	}
	got, err := db.EraseCustomer(ctx, ws, al, "key ad0000000001", "ticket 3")
	if err != nil {
		t.Fatal(err)
	}
	if got.MessagesMoved != 2 || got.Messages != 1 || got.Conversations != 1 {
		t.Errorf("erasure moved %d messages and erased %d messages in %d conversations, want 2 moved, 1 in 1 erased",
			got.MessagesMoved, got.Messages, got.Conversations)
	}
	if n := count(t, db, `SELECT count(*) FROM messages WHERE workspace_id = $1 AND body = 'hi from Al'`, ws); n != 0 {
		t.Errorf("%d of Al's messages survive his erasure", n)
	}
	// Hers, in one conversation of her own, closed, as it stood.
	var conv int64
	var status, channel string
	var last, lastIn time.Time
	if err := db.Pool.QueryRow(ctx, `SELECT v.id, v.status, v.channel, v.last_message_at, v.last_inbound_at
		FROM conversations v WHERE v.workspace_id = $1 AND v.customer_id = $2`, ws, bea).Scan(&conv, &status, &channel, &last, &lastIn); err != nil {
		t.Fatalf("Bea's conversation: %v", err)
	}
	if status != "closed" || channel != "sms" || !last.Equal(at.Add(2*time.Minute)) || !lastIn.Equal(last) {
		t.Errorf("Bea's conversation: %s %s, last %v, last inbound %v; want closed sms, both %v", status, channel, last, lastIn, at.Add(2*time.Minute))
	}
	if n := count(t, db, `SELECT count(*) FROM messages WHERE workspace_id = $1 AND customer_id = $2 AND conversation_id = $3
		AND body IN ('this is Bea Smith, not Al', 'Bea again')`, ws, bea, conv); n != 2 {
		t.Errorf("Bea has %d of her 2 messages in her conversation", n)
	}
	// Through the API as through the rows: her profile reads them.
	pages, err := db.ConversationsByCustomers(ctx, ws, []int64{bea}, c360.PageArgs{First: 10})
	if err != nil || pages[bea] == nil || len(pages[bea].Items) != 1 || pages[bea].Items[0].ID != conv {
		t.Fatalf("Bea's conversations: %+v, %v; want %d", pages[bea], err, conv)
	}
	// Her feed says so, at her next version.
	var kind string
	var diff map[string]any
	if err := db.Pool.QueryRow(ctx, `SELECT kind, diff FROM customer_changes WHERE workspace_id = $1 AND customer_id = $2 AND version = $3`,
		ws, bea, beaVersion+1).Scan(&kind, &diff); err != nil {
		t.Fatalf("Bea's change at v%d: %v", beaVersion+1, err)
	}
	moved, _ := diff["conversationsMoved"].([]any)
	if kind != c360.ChangeMessage || len(moved) != 1 {
		t.Fatalf("Bea's change: %s %v, want message with one conversation moved", kind, diff)
	}
	if c := moved[0].(map[string]any); c["id"] != strconv.FormatInt(conv, 10) || c["channel"] != "sms" || fmt.Sprint(c["messages"]) != "2" {
		t.Errorf("Bea's moved conversation: %v, want id %d, sms, 2 messages", c, conv)
	}
	if n := count(t, db, `SELECT count(*) FROM customer_changes x WHERE workspace_id = $1 AND customer_id = $2 AND x::text LIKE '%Al%'`, ws, bea); n != 0 {
		t.Errorf("%d of Bea's changes name Al", n)
	}
}

// A split of the person split off from him, committed while the erasure
// waits to lock her, moves her messages' events to a third customer: the
// erasure reads their owners again once they are locked, and tries again
// when they changed, so the third customer keeps them. Before, the
// erasure moved the messages of the owners it had read first (none left),
// and deleted the third customer's with his conversation.
func TestEraseCustomerRacingASplitOfThePersonSplitOffFromHim(t *testing.T) {
	db := pgtest.Open(t)
	ws, _, _ := pgtest.Workspace(t, db)
	ctx := context.Background()
	al, bea := sharedThenSplit(t, db, ws, [2]string{alPhone, "hi from Al"}, [2]string{beaPhone, "this is Cy"})
	ingest1(t, db, ws, &c360.Event{Type: c360.EventIdentify, Source: "test", DedupeKey: "i2",
		Identities: ids("phone", beaPhone, "email", "bea@example.com")})
	var calls atomic.Int32
	var cy int64
	db.BeforeCustomerLock(func() {
		if calls.Add(1) != 2 { // before the lock of the others, the first time
			return
		}
		r, err := db.SplitIdentity(ctx, ws, bea, c360.Identity{Type: "phone", Value: beaPhone}, "key ad0000000001", "Cy")
		if err != nil {
			t.Error(err)
			return
		}
		cy = r.Split.ID
	})
	got, err := db.EraseCustomer(ctx, ws, al, "key ad0000000001", "ticket 4")
	db.BeforeCustomerLock(nil)
	if err != nil {
		t.Fatal(err)
	}
	if calls.Load() < 4 {
		t.Errorf("the erasure locked %d times, want it tried again after the split", calls.Load())
	}
	if n := count(t, db, `SELECT count(*) FROM messages WHERE workspace_id = $1 AND body = 'this is Cy' AND customer_id = $2`, ws, cy); got.MessagesMoved != 1 || n != 1 {
		t.Errorf("%d moved, Cy (%d) has his message %d times; want 1 moved, kept", got.MessagesMoved, cy, n)
	}
}

// A chatbot's key is unique per person (RepeatSharesIdentity). After the
// erasure, the person's redelivery of a turn is still a duplicate, and
// another person's turn under the same key is still refused as a reused
// key, on both ingest paths: the erased event keeps one-way markers of its
// identities, and the repeat's identities are compared with them. Before,
// an erased event kept no identity and any repeat was a duplicate: the
// other person's turn was answered 200 and stored nowhere.
func TestEraseCustomerKeepsAChatbotKeyReusedByAnotherRefused(t *testing.T) {
	db := pgtest.Open(t)
	ws, _, _ := pgtest.Workspace(t, db)
	ctx := context.Background()
	ann, _, _ := annAndBob(t, db, ws)
	if _, err := db.EraseCustomer(ctx, ws, ann, "key ad0000000001", "ticket 42"); err != nil {
		t.Fatal(err)
	}
	turn := func(session string) *c360.Event {
		return &c360.Event{Type: c360.EventMessage, Source: "chatbot", DedupeKey: "a3", Identities: ids("chatbot:web", session),
			RepeatSharesIdentity: true, Properties: map[string]any{"threadKey": session},
			Message: &c360.MessageInput{Channel: "chat", Direction: c360.DirectionInbound, Body: "hello", Status: "received"}}
	}
	before := tableCounts(t, db, ws)
	// Hers, as stored (sess-ann) or spelled as the bot sent it first.
	for _, session := range []string{"sess-ann", " sess-ann "} {
		if res := ingest1(t, db, ws, turn(session)); !res.Duplicate || res.CustomerID != 0 {
			t.Errorf("her redelivery (%q): %+v, want a duplicate of no customer", session, res)
		}
		if res, err := db.IngestByGroupOnly(ctx, ws, []*c360.Event{turn(session)}); err != nil || !res[0].Duplicate {
			t.Errorf("her redelivery (%q) on the group path: %+v, %v; want a duplicate", session, res, err)
		}
	}
	// Another visitor's, of another bot numbering its turns alike.
	var reused *c360.KeyReusedError
	if _, err := db.Ingest(ctx, ws, []*c360.Event{turn("sess-cal")}); !errors.As(err, &reused) || c360.ErrorCode(err) != c360.ECONFLICT {
		t.Errorf("another person's turn under the key: %v, want a KeyReusedError (CONFLICT)", err)
	}
	if _, err := db.IngestByGroupOnly(ctx, ws, []*c360.Event{turn("sess-cal")}); !errors.As(err, &reused) {
		t.Errorf("another person's turn under the key, group path: %v, want a KeyReusedError", err)
	}
	ready, hold := make(chan struct{}), make(chan struct{})
	close(hold)
	if err := db.IngestHeld(ctx, ws, turn("sess-cal"), ready, hold); !errors.As(err, &reused) {
		t.Errorf("another person's turn under the key, per-event path: %v, want a KeyReusedError", err)
	}
	if after := tableCounts(t, db, ws); !slices.Equal(after, before) {
		t.Errorf("rows per table %v, want %v", after, before)
	}
	// The markers name nobody: no event holds her session id.
	if n := count(t, db, `SELECT count(*) FROM events x WHERE workspace_id = $1 AND x::text LIKE '%sess-ann%'`, ws); n != 0 {
		t.Errorf("%d events hold her session id", n)
	}
}

// zedNaming makes Zed (user_id u-a-zed) and has his second event, z2, name
// the identities others too ({type, value} pairs), which the rules drop
// from it (a second user_id) or keep on another customer: an event of
// someone else that names the person's identifiers.
func zedNaming(t *testing.T, db *postgres.DB, ws int64, others ...string) (zed int64, z2 c360.IngestResult) {
	t.Helper()
	zed = ingest1(t, db, ws, &c360.Event{Type: c360.EventIdentify, Source: "test", DedupeKey: "z1",
		Identities: ids("user_id", "u-a-zed")}).CustomerID
	z2 = ingest1(t, db, ws, &c360.Event{Type: c360.EventIdentify, Source: "test", DedupeKey: "z2",
		Identities: ids(append([]string{"user_id", "u-a-zed"}, others...)...)})
	return zed, z2
}

// An event of someone else that named one of the person's identifiers,
// whose merge the identity rules refused (two user_ids are two people),
// went to the other customer with her identifier in its identities, in
// its dropped list and in that customer's change. The erasure takes her
// identifier out of all three, and leaves the rest of them.
func TestEraseCustomerTakesHerIdentifierOutOfOthersEvents(t *testing.T) {
	db := pgtest.Open(t)
	ws, _, _ := pgtest.Workspace(t, db)
	ctx := context.Background()
	ann := ingest1(t, db, ws, &c360.Event{Type: c360.EventIdentify, Source: "test", DedupeKey: "a1",
		Identities: ids("user_id", "u-ann", "email", "ann@x.io")}).CustomerID
	zed, res := zedNaming(t, db, ws, "user_id", "u-b-other", "email", "Ann@X.io")
	if res.CustomerID != zed || len(res.Dropped) != 2 {
		t.Fatalf("z2: %+v, want Zed's, with u-b-other and Ann's email dropped", res)
	}
	if _, err := db.EraseCustomer(ctx, ws, ann, "key ad0000000001", "ticket 5"); err != nil {
		t.Fatal(err)
	}
	for _, table := range []string{"events", "customer_changes"} {
		if n := count(t, db, `SELECT count(*) FROM `+table+` x WHERE workspace_id = $1 AND x::text ILIKE '%ann@x.io%'`, ws); n != 0 {
			t.Errorf("%d rows of %s hold her email", n, table)
		}
	}
	var identities, dropped string
	if err := db.Pool.QueryRow(ctx, `SELECT identities::text, dropped::text FROM events WHERE workspace_id = $1 AND dedupe_key = 'z2'`,
		ws).Scan(&identities, &dropped); err != nil {
		t.Fatal(err)
	}
	if want := `[{"type": "user_id", "value": "u-a-zed"}, {"type": "user_id", "value": "u-b-other"}]`; identities != want {
		t.Errorf("z2's identities = %s, want %s", identities, want)
	}
	if !strings.HasPrefix(dropped, `["user_id \"u-b-other\": `) || strings.Count(dropped, `": `) != 1 {
		t.Errorf("z2's dropped = %s, want u-b-other's alone", dropped)
	}
	if n := count(t, db, `SELECT count(*) FROM customer_changes WHERE workspace_id = $1 AND customer_id = $2
		AND jsonb_array_length(diff->'dropped') = 1 AND diff->'dropped'->>0 LIKE 'user_id "u-b-other": %'`, ws, zed); n != 1 {
		t.Errorf("Zed's changes dropping u-b-other alone: %d, want 1", n)
	}
}

// A sendMessage audit entry keeps the message's channel and id after the
// erasure, but not its provider id: a WhatsApp Cloud API message id
// (wamid.) encodes the recipient's number.
func TestEraseCustomerStripsProviderIDsFromTheAudit(t *testing.T) {
	db := pgtest.Open(t)
	ws, _, _ := pgtest.Workspace(t, db)
	ctx := context.Background()
	ann := ingest1(t, db, ws, &c360.Event{Type: c360.EventIdentify, Source: "test", DedupeKey: "a1",
		Identities: ids("phone", "+14155550101")}).CustomerID
	// base64 of "14155550101" and the rest of Meta's id.
	const wamid = "wamid.HBgLMTQxNTU1NTAxMDEVAgARGBI5QTNDQTVCM0Q0Q0Q2RTY3RTcA"
	send := c360.NewAuditEntry(&c360.Principal{WorkspaceID: ws, Role: c360.RoleAgent, KeyID: 1, KeyPrefix: "p"}, ws, c360.AuditMessageSend, time.Now())
	send.CustomerID, send.Detail = ann, map[string]any{"channel": "whatsapp", "messageId": 7, "providerId": wamid, "bodyLength": 5}
	if err := db.RecordAudit(ctx, []*c360.AuditEntry{send}); err != nil {
		t.Fatal(err)
	}
	got, err := db.EraseCustomer(ctx, ws, ann, "key ad0000000001", "ticket 6")
	if err != nil {
		t.Fatal(err)
	}
	if got.AuditEntriesScrubbed != 1 {
		t.Errorf("audit entries scrubbed: %d, want 1", got.AuditEntriesScrubbed)
	}
	if n := count(t, db, `SELECT count(*) FROM audit_log WHERE workspace_id = $1 AND customer_id = $2
		AND detail = '{"channel": "whatsapp", "messageId": 7, "bodyLength": 5}'`, ws, ann); n != 1 {
		t.Errorf("send entries without the provider id: %d, want 1", n)
	}
}

// A read of personal data names what it read by its path, and a path holds
// the keys of the customer's traits as written: a contact's name, an
// invitee's address (masked, but for its first letter and domain). The
// erasure generalises the segments that are not names c360 writes or
// words for personal data, in the erased customer's entries only.
func TestEraseCustomerGeneralisesAuditedReadPaths(t *testing.T) {
	db := pgtest.Open(t)
	ws, _, _ := pgtest.Workspace(t, db)
	ctx := context.Background()
	ann := ingest1(t, db, ws, &c360.Event{Type: c360.EventIdentify, Source: "test", DedupeKey: "a1",
		Identities: ids("email", "ann@x.io")}).CustomerID
	bob := ingest1(t, db, ws, &c360.Event{Type: c360.EventIdentify, Source: "test", DedupeKey: "b1",
		Identities: ids("email", "bob@x.io")}).CustomerID
	read := func(customer int64, fields ...string) *c360.AuditEntry {
		e := c360.NewAuditEntry(&c360.Principal{WorkspaceID: ws, Role: c360.RoleAgent, KeyID: 1, KeyPrefix: "p"}, ws, c360.AuditPIIRead, time.Now())
		e.CustomerID, e.Fields = customer, fields
		return e
	}
	personal := []string{"traits.contacts.Emma Doe.phone", "traits.contacts.b***@example.com",
		"customerContext.text.traits.b***@example.com", "identity.crm_id(phone)", "traits.Emma_Doe_email",
		"identity.email", "body(email)", "traits.first_name", "traits.Phone_2", "traitSources.name.", "diff.traits.contacts.Emma Doe.phone",
		// A word for personal data with a number joined to it is kept only
		// for a short suffix (phone2): a key holding a whole number is
		// generalised (to traits.*, which the list already holds).
		"traits.phone_4155550100", "traits.Phone 4155550100", "traits.zip90210"}
	plain := []string{"identity.email", "traits.name", "customerContext.text.messages.phone"}
	if err := db.RecordAudit(ctx, []*c360.AuditEntry{read(ann, personal...), read(ann, plain...), read(bob, personal...)}); err != nil {
		t.Fatal(err)
	}
	got, err := db.EraseCustomer(ctx, ws, ann, "key ad0000000001", "ticket 11")
	if err != nil {
		t.Fatal(err)
	}
	if got.AuditEntriesScrubbed != 1 {
		t.Errorf("audit entries scrubbed: %d, want 1", got.AuditEntriesScrubbed)
	}
	fields := func(customer int64) [][]string {
		rows, err := db.Pool.Query(ctx, `SELECT fields FROM audit_log WHERE workspace_id = $1 AND customer_id = $2 AND action = $3 ORDER BY id`,
			ws, customer, c360.AuditPIIRead)
		if err != nil {
			t.Fatal(err)
		}
		out, err := pgx.CollectRows(rows, pgx.RowTo[[]string])
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	want := [][]string{{"traits.*.*.phone", "traits.*.*.*", "customerContext.text.traits.*.*", "identity.*(phone)", "traits.*",
		"identity.email", "body(email)", "traits.first_name", "traits.Phone_2", "traitSources.name.", "diff.traits.*.*.phone"}, plain}
	if a := fields(ann); !reflect.DeepEqual(a, want) {
		t.Errorf("the erased customer's reads name\n%q\nwant\n%q", a, want)
	}
	if b := fields(bob); !reflect.DeepEqual(b, [][]string{personal}) {
		t.Errorf("another customer's reads changed: %q", b)
	}
}

// Another customer's dropped reason about the same value under another
// identity type is that customer's own, and stays: reasons are matched by
// type and value, as they are written.
func TestEraseKeepsOthersDroppedReasonOfAnotherType(t *testing.T) {
	db := pgtest.Open(t)
	ws, _, _ := pgtest.Workspace(t, db)
	ctx := context.Background()
	ann := ingest1(t, db, ws, &c360.Event{Type: c360.EventIdentify, Source: "test", DedupeKey: "a1",
		Identities: ids("anonymous_id", "u-b-other")}).CustomerID
	zed, res := zedNaming(t, db, ws, "user_id", "u-b-other")
	if res.CustomerID != zed || len(res.Dropped) != 1 {
		t.Fatalf("z2: %+v, want Zed's, with u-b-other dropped", res)
	}
	if _, err := db.EraseCustomer(ctx, ws, ann, "key ad0000000001", "ticket 5"); err != nil {
		t.Fatal(err)
	}
	var dropped *string
	if err := db.Pool.QueryRow(ctx, `SELECT dropped::text FROM events WHERE workspace_id = $1 AND dedupe_key = 'z2'`, ws).Scan(&dropped); err != nil {
		t.Fatal(err)
	}
	if dropped == nil {
		t.Errorf("Zed's z2 lost its dropped reason for user_id u-b-other when Ann's anonymous_id u-b-other was erased")
	}
	if n := count(t, db, `SELECT count(*) FROM customer_changes WHERE workspace_id = $1 AND customer_id = $2 AND diff ? 'dropped'`, ws, zed); n != 1 {
		t.Errorf("Zed's changes with dropped: %d, want 1", n)
	}
}

// The erasure's bound cuts off a read it shares with merges (here the
// lock of the customer's row, which another transaction holds): the
// answer names the bound, as it does for the erasure's own statements,
// not a busy database. Before, that step answered "the database is
// unavailable; retry", and an erasure under load could not say why.
func TestEraseCustomerPastItsBoundWhileLocking(t *testing.T) {
	db := pgtest.Open(t)
	ws, _, _ := pgtest.Workspace(t, db)
	ctx := context.Background()
	ann := ingest1(t, db, ws, &c360.Event{Type: c360.EventIdentify, Source: "test", DedupeKey: "a1",
		Identities: ids("email", "ann@x.io")}).CustomerID
	tx, err := db.Pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	if _, err := tx.Exec(ctx, `SELECT 1 FROM customers WHERE workspace_id = $1 AND id = $2 FOR UPDATE`, ws, ann); err != nil {
		t.Fatal(err)
	}
	postgres.SetEraseStatementTimeout(t, 50*time.Millisecond)
	_, err = db.EraseCustomer(ctx, ws, ann, "key ad0000000001", "ticket 10")
	if c360.ErrorCode(err) != c360.EUNAVAILABLE || !strings.Contains(c360.ErrorMessage(err), "did not finish within 50ms (at: lock the customer)") {
		t.Fatalf("erasure cut off while locking: %v, want UNAVAILABLE naming the bound and the step", err)
	}
}

// An erasure cut off by its own statement bound answers UNAVAILABLE naming
// the bound and the step it reached, not "busy; retry" (trying again at
// once meets the same bound), and erases nothing: its transaction rolls
// back whole.
func TestEraseCustomerPastItsBoundErasesNothing(t *testing.T) {
	db := pgtest.Open(t)
	ws, _, _ := pgtest.Workspace(t, db)
	ctx := context.Background()
	ann := ingest1(t, db, ws, &c360.Event{Type: c360.EventIdentify, Source: "test", DedupeKey: "a1",
		Identities: ids("email", "ann@x.io")}).CustomerID
	if _, err := db.Pool.Exec(ctx, `
		INSERT INTO events (workspace_id, customer_id, type, name, properties, identities, source, dedupe_key, occurred_at)
		SELECT $1, $2, 'track', 'Viewed', '{}', '[{"type": "email", "value": "ann@x.io"}]', 'import', 'k' || g, now()
		FROM generate_series(1, 50000) g`, ws, ann); err != nil {
		t.Fatal(err)
	}
	postgres.SetEraseStatementTimeout(t, time.Millisecond)
	_, err := db.EraseCustomer(ctx, ws, ann, "key ad0000000001", "ticket 9")
	if c360.ErrorCode(err) != c360.EUNAVAILABLE || !strings.Contains(c360.ErrorMessage(err), "did not finish within 1ms (at: ") {
		t.Fatalf("erasure past its bound: %v, want UNAVAILABLE naming the bound and the step", err)
	}
	if n := count(t, db, `SELECT count(*) FROM events WHERE workspace_id = $1 AND customer_id = $2`, ws, ann); n != 50001 {
		t.Errorf("%d of her 50,001 events left after the failed erasure, want all", n)
	}
	if n := count(t, db, `SELECT count(*) FROM identities WHERE workspace_id = $1 AND customer_id = $2`, ws, ann); n != 1 {
		t.Errorf("%d identities left, want 1", n)
	}
}

// The dead letters of a person whose identifier holds a backslash or a
// double quote (a Windows account, CORP\ann, as Segment sends user_ids
// of enterprise directories) are erased with her. The candidates' query
// read the identities' values as the JSON text of their array, where the
// value is escaped (CORP\\ann), and matched it with patterns of the raw
// value: her dead letter was never a candidate, stayed, and the answer
// said deadLetters: 0.
func TestEraseCustomerDeletesDeadLettersOfIdentifiersWithBackslashesAndQuotes(t *testing.T) {
	db := pgtest.Open(t)
	ws, _, _ := pgtest.Workspace(t, db)
	ctx := context.Background()
	for _, v := range []string{`CORP\ann`, `ann "the" lee`} {
		ann := ingest1(t, db, ws, &c360.Event{Type: c360.EventIdentify, Source: "test", DedupeKey: "a-" + v,
			Identities: ids("user_id", v)}).CustomerID
		ev := track("dl-"+v, ids("user_id", v, "phone", "+1 234"))
		if _, err := db.Ingest(c360.WithInvalidAsDeadLetters(ctx), ws, []*c360.Event{ev}); err == nil {
			t.Fatal("accepted")
		}
		if n := count(t, db, `SELECT count(*) FROM dead_letters WHERE workspace_id = $1 AND dedupe_key = $2`, ws, "dl-"+v); n != 1 {
			t.Fatalf("dead letters before: %d", n)
		}
		e, err := db.EraseCustomer(ctx, ws, ann, "key ad0000000001", "ticket 1")
		if err != nil {
			t.Fatal(err)
		}
		if n := count(t, db, `SELECT count(*) FROM dead_letters WHERE workspace_id = $1 AND dedupe_key = $2`, ws, "dl-"+v); n != 0 || e.DeadLetters != 1 {
			t.Errorf("user_id %s: %d of her dead letters survive the erasure (deadLetters=%d)", v, n, e.DeadLetters)
		}
	}
}

// A reason that names the person (kept in the audit log after her data is
// gone) is refused, and the erasure changes nothing: one of her
// identifiers, however spelled (her number written bare, her user_id in
// capitals), or a trait naming her (a word of her name). A request's
// number, however long, and words her name is only part of, are not hers.
func TestEraseCustomerRefusesAReasonThatNamesThePerson(t *testing.T) {
	db := pgtest.Open(t)
	ws, _, _ := pgtest.Workspace(t, db)
	ctx := context.Background()
	ann, bob, _ := annAndBob(t, db, ws)
	// Bob's row, merged into Ann's, keeps a trait of its own.
	if _, err := db.Pool.Exec(ctx, `UPDATE customers SET traits = '{"lastName": "Lindqvist", "plan": "pro"}' WHERE workspace_id = $1 AND id = $2`, ws, bob); err != nil {
		t.Fatal(err)
	}
	before := tableCounts(t, db, ws)
	for reason, what := range map[string]string{
		"she called from 4155550101": "phone",
		"she called from 555 01 01":  "phone",
		"account U-ANN":              "user_id",
		"session sess-ann":           "chatbot:web",
		"asked by ANN@x.io":          "email",
		"request of ann lee":         "name",
		"Lee's lawyer wrote":         "name",
		"ticket 77 (lindqvist)":      "name",
	} {
		_, err := db.EraseCustomer(ctx, ws, ann, "key ad0000000001", reason)
		want := "reason holds the customer's " + what + ":"
		if c360.ErrorCode(err) != c360.EINVALID || !strings.HasPrefix(c360.ErrorMessage(err), want) {
			t.Errorf("reason %q: %v, want BAD_USER_INPUT %q…", reason, err, want)
		}
	}
	if after := tableCounts(t, db, ws); !slices.Equal(after, before) {
		t.Errorf("refusals changed rows: %v, want %v", after, before)
	}
	if _, err := db.EraseCustomer(ctx, ws, ann, "key ad0000000001", "annual DSAR 1234567890, pro plan, ticket 4155550"); err != nil {
		t.Errorf("a reason naming nothing of hers: %v", err)
	}
}

// A trait whose key may name an email or a phone but holds a flag or a
// word (direct_mail "subscribed", is_mobile "yes") is no address and no
// number of hers: a reason that uses the word erases her. An address or a
// number under such a key is still hers, and a reason naming it is
// refused.
func TestEraseCustomerReasonMayShareAWordWithHerFlags(t *testing.T) {
	db := pgtest.Open(t)
	ws, _, _ := pgtest.Workspace(t, db)
	ctx := context.Background()
	ann := ingest1(t, db, ws, &c360.Event{Type: c360.EventIdentify, Source: "test", DedupeKey: "a1",
		Identities: ids("user_id", "u-ann"),
		Traits: map[string]any{"direct_mail": "subscribed", "marketing_mail": "opted_in", "is_mobile": "yes",
			"consent_whatsapp": "granted", "work_mail": "ann.l@corp.io", "contact_mobile": "415 555 0177"}}).CustomerID
	for reason, what := range map[string]string{
		"write to ANN.L@corp.io":       "email",
		"she called from 415-555-0177": "phone",
	} {
		_, err := db.EraseCustomer(ctx, ws, ann, "key ad0000000001", reason)
		want := "reason holds the customer's " + what + ":"
		if c360.ErrorCode(err) != c360.EINVALID || !strings.HasPrefix(c360.ErrorMessage(err), want) {
			t.Errorf("reason %q: %v, want BAD_USER_INPUT %q…", reason, err, want)
		}
	}
	if _, err := db.EraseCustomer(ctx, ws, ann, "key ad0000000001", "Customer subscribed to erasure notices, ticket 12, opted_in, yes, granted"); err != nil {
		t.Errorf("a reason sharing words with her flags: %v", err)
	}
}

// An erased chatbot event keeps its key as the bot wrote it, whatever it
// holds, so that the bot's redelivery is still a duplicate: a bot that
// uses the person's number as its session id leaves the number in the
// keys (docs/erasure.md, "Chatbot event keys"; docs/connectors.md tells
// bot authors to use an opaque session id). The rest of the event is
// scrubbed.
func TestEraseCustomerKeepsChatbotKeysAsSent(t *testing.T) {
	db := pgtest.Open(t)
	ws, _, _ := pgtest.Workspace(t, db)
	ctx := context.Background()
	turn := func() *c360.Event {
		return &c360.Event{Type: c360.EventMessage, Source: "chatbot", DedupeKey: "+14155550101:1",
			Identities: ids("phone", "+14155550101"), RepeatSharesIdentity: true, Properties: map[string]any{"threadKey": "+14155550101"},
			Message: &c360.MessageInput{Channel: "chat", Direction: c360.DirectionInbound, Body: "hi", Status: "received"}}
	}
	ann := ingest1(t, db, ws, turn()).CustomerID
	if _, err := db.EraseCustomer(ctx, ws, ann, "key ad0000000001", "ticket 1"); err != nil {
		t.Fatal(err)
	}
	if n := count(t, db, `SELECT count(*) FROM events x WHERE workspace_id = $1 AND x::text LIKE '%4155550101%'`, ws); n != 1 {
		t.Errorf("%d erased events hold her number, want 1 (in its key)", n)
	}
	if n := count(t, db, `SELECT count(*) FROM events x WHERE workspace_id = $1 AND (x.identities || x.properties)::text LIKE '%4155550101%'`, ws); n != 0 {
		t.Errorf("%d erased events hold her number outside their key", n)
	}
	if res := ingest1(t, db, ws, turn()); !res.Duplicate || res.CustomerID != 0 {
		t.Errorf("the bot's redelivery: %+v, want a duplicate of no customer", res)
	}
}

// holdsAny reports the rows of the workspace's tenant tables that hold one
// of texts, case aside.
func holdsAny(t *testing.T, db *postgres.DB, ws int64, texts ...string) []string {
	t.Helper()
	var out []string
	for _, table := range tenantTables {
		for _, p := range texts {
			rows, err := db.Pool.Query(context.Background(), `SELECT x::text FROM `+table+` x WHERE workspace_id = $1 AND x::text ILIKE '%' || $2 || '%'`, ws, p)
			if err != nil {
				t.Fatal(err)
			}
			for rows.Next() {
				var s string
				if err := rows.Scan(&s); err != nil {
					t.Fatal(err)
				}
				out = append(out, table+": "+s)
			}
			rows.Close()
		}
	}
	return out
}

// A wrong merge undone by a split, then the person's erasure. Ann was
// customer A; an operator merged A into Zed's customer Q by mistake, then
// split her email off Q, which made a new customer N (a split's
// contract). Erasing N erased N alone: A's row kept her traits and search
// text, A's feed replayed her profile to customerChanged(id: A, after:
// v0) (its created change, with her name and email), Q's merged change
// kept her identity, traits and the operator's reason, Q's split change
// her identity, and A's audit entries her provider id. A's identities
// all came back to N: A is her, and is erased with N (formerCustomerIds);
// Q is Zed, and keeps his profile and his feed's changes, without hers.
// A merge now clears the merged row's traits; here A's row is given them
// back, as a merge before that change left them.
func TestEraseCustomerAfterAWrongMergeUndoneByASplit(t *testing.T) {
	db := pgtest.Open(t)
	ws, _, _ := pgtest.Workspace(t, db)
	ctx := context.Background()
	a := ingest1(t, db, ws, &c360.Event{Type: c360.EventIdentify, Source: "test", DedupeKey: "a1",
		Identities: ids("email", "ann@x.io"), Traits: map[string]any{"name": "Ann Lee", "email": "Ann@X.io"}}).CustomerID
	q := ingest1(t, db, ws, &c360.Event{Type: c360.EventIdentify, Source: "test", DedupeKey: "z1",
		Identities: ids("user_id", "u-zed"), Traits: map[string]any{"name": "Zed"}}).CustomerID
	admin := &c360.Principal{WorkspaceID: ws, Role: c360.RoleAdmin, KeyID: 1, KeyPrefix: "p"}
	send := c360.NewAuditEntry(admin, ws, c360.AuditMessageSend, time.Now())
	send.CustomerID, send.Detail = a, map[string]any{"channel": "whatsapp", "messageId": 7, "providerId": "wamid.HBgLMTQxNTU1NTAxMDEVAgARGBI5QTNDQTVCM0Q0Q0Q2RTY3RTcA", "bodyLength": 5}
	if _, err := db.MergeCustomers(ctx, ws, q, a, true, "key ad0000000001", "Ann Lee is Zed"); err != nil {
		t.Fatal(err)
	}
	merge := c360.NewAuditEntry(admin, ws, c360.AuditCustomerMerge, time.Now())
	merge.CustomerID, merge.Detail = q, map[string]any{"survivorId": fmt.Sprint(q), "mergedId": fmt.Sprint(a), "reason": "Ann Lee is Zed"}
	if err := db.RecordAudit(ctx, []*c360.AuditEntry{send, merge}); err != nil {
		t.Fatal(err)
	}
	// The merge cleared A's row.
	if n := count(t, db, `SELECT count(*) FROM customers WHERE workspace_id = $1 AND id = $2 AND traits = '{}' AND trait_meta = '{}' AND search_text = ''`, ws, a); n != 1 {
		t.Errorf("the merged row keeps traits or search text: %v", holdsAny(t, db, ws, "Ann Lee"))
	}
	if _, err := db.Pool.Exec(ctx, `UPDATE customers SET traits = '{"name": "Ann Lee", "email": "Ann@X.io"}', search_text = 'ann lee ann@x.io'
		WHERE workspace_id = $1 AND id = $2`, ws, a); err != nil {
		t.Fatal(err)
	}
	split, err := db.SplitIdentity(ctx, ws, q, c360.Identity{Type: "email", Value: "ann@x.io"}, "key ad0000000001", "Ann Lee is not Zed")
	if err != nil {
		t.Fatal(err)
	}
	n := split.Split.ID
	if split.Original.Traits["name"] != "Zed" || split.Split.Traits["name"] != "Ann Lee" {
		t.Fatalf("split: Q %v, N %v", split.Original.Traits, split.Split.Traits)
	}

	e, err := db.EraseCustomer(ctx, ws, n, "key ad0000000001", "ticket 77")
	if err != nil {
		t.Fatal(err)
	}
	if e.CustomerID != n || len(e.MergedCustomerIDs) != 0 || !slices.Equal(e.FormerCustomerIDs, []int64{a}) {
		t.Errorf("erasure = %+v, want N=%d with former A=%d", *e, n, a)
	}
	for _, row := range holdsAny(t, db, ws, "ann@x.io", "Ann Lee", "HBgLMTQxNTU1NTAxMDEV") {
		t.Errorf("after the erasure, %s", row)
	}
	for _, id := range []int64{a, n} {
		if _, err := db.FindCustomerByID(ctx, ws, id); c360.ErrorCode(err) != c360.ENOTFOUND {
			t.Errorf("customer(%d): %v, want NOT_FOUND", id, err)
		}
		chs, err := db.ChangesAfter(ctx, []c360.Change{{WorkspaceID: ws, CustomerID: id, Version: 0}}, 100)
		if err != nil {
			t.Fatal(err)
		}
		if len(chs) != 1 || chs[0].Kind != c360.ChangeErased {
			t.Errorf("feed of %d after v0: %v, want its erased change alone", id, chs)
		}
	}
	if _, err := db.EraseCustomer(ctx, ws, a, "key ad0000000001", "ticket 77"); c360.ErrorMessage(err) != fmt.Sprintf("customer %d was erased at %s", a, e.ErasedAt.UTC().Format(time.RFC3339)) {
		t.Errorf("erasing A again: %v", err)
	}
	// Zed keeps his profile, and his feed its changes, without hers: the
	// merge still names A's id, the split its kind.
	zed, err := db.FindCustomerByID(ctx, ws, q)
	if err != nil || zed.Traits["name"] != "Zed" {
		t.Errorf("customer(Q) = %v, %v", zed, err)
	}
	chs, err := db.ChangesAfter(ctx, []c360.Change{{WorkspaceID: ws, CustomerID: q, Version: 0}}, 100)
	if err != nil {
		t.Fatal(err)
	}
	var kinds []string
	for _, c := range chs {
		kinds = append(kinds, c.Kind)
		if c.Kind == c360.ChangeMerged && fmt.Sprint(c.Diff["merged"]) != fmt.Sprintf("[%d]", a) {
			t.Errorf("Q's merged change: %v, want it to name A", c.Diff)
		}
	}
	if want := []string{c360.ChangeCreated, c360.ChangeMerged, c360.ChangeSplit}; !slices.Equal(kinds, want) {
		t.Errorf("Q's feed: %v, want %v", kinds, want)
	}
	if n := count(t, db, `SELECT count(*) FROM merges WHERE workspace_id = $1`, ws); n != 0 {
		t.Errorf("%d ledger entries left, want none (the merge of A and the split of N)", n)
	}
}

// When one of the merged-away customer's identifiers stayed with the
// customer it was merged into (Ann's anonymous visitor, merged into her
// customer before the wrong merge, was not split off), nothing says that
// customer was hers alone: it stays, merged, but loses her identifiers
// from its feed, and from the changes of the customer it was merged into,
// as any other customer's changes do, and its row the traits a merge
// before merges cleared them left.
func TestEraseCustomerAfterAWrongMergeKeepsACustomerWithAnIdentifierLeftBehind(t *testing.T) {
	db := pgtest.Open(t)
	ws, _, _ := pgtest.Workspace(t, db)
	ctx := context.Background()
	a := ingest1(t, db, ws, &c360.Event{Type: c360.EventIdentify, Source: "test", DedupeKey: "a1",
		Identities: ids("email", "ann@x.io"), Traits: map[string]any{"name": "Ann Lee", "email": "ann@x.io"}}).CustomerID
	visitor := ingest1(t, db, ws, track("a2", ids("anonymous_id", "anon-a"))).CustomerID
	q := ingest1(t, db, ws, &c360.Event{Type: c360.EventIdentify, Source: "test", DedupeKey: "z1",
		Identities: ids("user_id", "u-zed"), Traits: map[string]any{"name": "Zed"}}).CustomerID
	if _, err := db.MergeCustomers(ctx, ws, a, visitor, true, "key ad0000000001", "same visitor"); err != nil {
		t.Fatal(err)
	}
	if _, err := db.MergeCustomers(ctx, ws, q, a, true, "key ad0000000001", "same person"); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Pool.Exec(ctx, `UPDATE customers SET traits = '{"name": "Ann Lee", "email": "ann@x.io"}', search_text = 'ann lee ann@x.io'
		WHERE workspace_id = $1 AND id = $2`, ws, a); err != nil {
		t.Fatal(err)
	}
	split, err := db.SplitIdentity(ctx, ws, q, c360.Identity{Type: "email", Value: "ann@x.io"}, "key ad0000000001", "wrong merge")
	if err != nil {
		t.Fatal(err)
	}
	e, err := db.EraseCustomer(ctx, ws, split.Split.ID, "key ad0000000001", "ticket 77")
	if err != nil {
		t.Fatal(err)
	}
	if len(e.FormerCustomerIDs) != 0 {
		t.Errorf("former customers %v, want none: anon-a is still Q's", e.FormerCustomerIDs)
	}
	for _, row := range holdsAny(t, db, ws, "ann@x.io") {
		t.Errorf("after the erasure, %s", row)
	}
	if n := count(t, db, `SELECT count(*) FROM customers WHERE workspace_id = $1 AND id = $2 AND merged_into = $3 AND traits = '{}' AND search_text = ''`, ws, a, q); n != 1 {
		t.Errorf("A's row: %v", holdsAny(t, db, ws, "Ann Lee"))
	}
	// A's feed keeps her visitor's identifier and the name it recorded
	// (documented: nothing says they were hers alone); the reasons of
	// merges not of her erased customers stay.
	var created, merged string
	if err := db.Pool.QueryRow(ctx, `SELECT diff::text FROM customer_changes WHERE workspace_id = $1 AND customer_id = $2 AND kind = 'created'`, ws, a).Scan(&created); err != nil {
		t.Fatal(err)
	}
	if !strings.HasSuffix(created, `"type": "identify"}, "traits": {"name": "Ann Lee"}}`) {
		t.Errorf("A's created change: %s", created)
	}
	if err := db.Pool.QueryRow(ctx, `SELECT diff::text FROM customer_changes WHERE workspace_id = $1 AND customer_id = $2 AND kind = 'merged'`, ws, q).Scan(&merged); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(merged, `"identitiesAdded": [{"type": "anonymous_id", "value": "anon-a"}]`) || !strings.Contains(merged, `"reason": "same person"`) {
		t.Errorf("Q's merged change: %s", merged)
	}
}

// Someone else's trait that happens to equal one of her identifiers other
// than an email address or a phone number is his, and stays in his feed:
// Zed's zip "10001" is not Ann's user_id "10001", nor his plan "anon-7"
// her anonymous_id. A trait named as an email address or a phone number
// that is hers, however it is written, goes, and nothing else of his.
func TestEraseCustomerKeepsOthersTraitsEqualToHerOtherIdentifiers(t *testing.T) {
	db := pgtest.Open(t)
	ws, _, _ := pgtest.Workspace(t, db)
	ctx := context.Background()
	ann := ingest1(t, db, ws, &c360.Event{Type: c360.EventIdentify, Source: "test", DedupeKey: "a1",
		Identities: ids("user_id", "10001", "anonymous_id", "anon-7", "email", "ann@x.io", "phone", "+14155550101")}).CustomerID
	zed := ingest1(t, db, ws, &c360.Event{Type: c360.EventIdentify, Source: "test", DedupeKey: "z1",
		Identities: ids("user_id", "u-zed"),
		Traits: map[string]any{"name": "Zed", "zip": "10001", "plan": "anon-7", "user_id": "10001",
			"backup_email": "Ann@X.io", "mobile": "(415) 555-0101", "email": "zed@x.io", "phone": "+1 415 555 0199"}}).CustomerID
	if _, err := db.EraseCustomer(ctx, ws, ann, "key ad0000000001", "ticket 5"); err != nil {
		t.Fatal(err)
	}
	var created map[string]any
	if err := db.Pool.QueryRow(ctx, `SELECT diff->'traits' FROM customer_changes WHERE workspace_id = $1 AND customer_id = $2 AND kind = 'created'`,
		ws, zed).Scan(&created); err != nil {
		t.Fatal(err)
	}
	want := map[string]any{"name": "Zed", "zip": "10001", "plan": "anon-7", "user_id": "10001",
		"email": "zed@x.io", "phone": "+1 415 555 0199"}
	if !reflect.DeepEqual(created, want) {
		t.Errorf("Zed's created change's traits = %v, want %v", created, want)
	}
}
