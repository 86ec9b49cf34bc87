package postgres_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/c360dev/c360"
	"github.com/c360dev/c360/internal/pgtest"
	"github.com/c360dev/c360/postgres"
)

func ids(pairs ...string) []c360.Identity {
	var out []c360.Identity
	for i := 0; i+1 < len(pairs); i += 2 {
		out = append(out, c360.Identity{Type: pairs[i], Value: pairs[i+1]})
	}
	return out
}

func track(key string, identities []c360.Identity) *c360.Event {
	return &c360.Event{Type: c360.EventTrack, Name: "Viewed", Source: "test", DedupeKey: key, Identities: identities}
}

func ingest1(t *testing.T, db *postgres.DB, ws int64, ev *c360.Event) c360.IngestResult {
	t.Helper()
	res, err := db.Ingest(context.Background(), ws, []*c360.Event{ev})
	if err != nil {
		t.Fatalf("ingest %s: %v", ev.DedupeKey, err)
	}
	return res[0]
}

func count(t *testing.T, db *postgres.DB, sql string, args ...any) int {
	t.Helper()
	var n int
	if err := db.Pool.QueryRow(context.Background(), sql, args...).Scan(&n); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return n
}

func TestIngestExactlyOnce(t *testing.T) {
	db := pgtest.Open(t)
	ws, _, _ := pgtest.Workspace(t, db)
	ctx := context.Background()

	first := ingest1(t, db, ws, track("m-1", ids("email", "a@example.com")))
	if first.Duplicate {
		t.Fatalf("first delivery: Duplicate = true, want false")
	}
	c1, err := db.FindCustomerByID(ctx, ws, first.CustomerID)
	if err != nil {
		t.Fatal(err)
	}
	again := ingest1(t, db, ws, track("m-1", ids("email", "a@example.com", "phone", "+14155550100")))
	if !again.Duplicate || again.EventID != first.EventID || again.CustomerID != first.CustomerID {
		t.Fatalf("repeat = %+v, want duplicate of %+v", again, first)
	}
	c2, _ := db.FindCustomerByID(ctx, ws, first.CustomerID)
	if c2.Version != c1.Version {
		t.Errorf("version after repeat = %d, want %d", c2.Version, c1.Version)
	}
	if n := count(t, db, `SELECT count(*) FROM events WHERE workspace_id = $1`, ws); n != 1 {
		t.Errorf("events = %d, want 1", n)
	}
	if n := count(t, db, `SELECT count(*) FROM identities WHERE workspace_id = $1`, ws); n != 1 {
		t.Errorf("identities = %d, want 1 (the repeat's new phone must not be attached)", n)
	}
	// The same key from another source is another event.
	other := track("m-1", ids("email", "a@example.com"))
	other.Source = "other"
	if r := ingest1(t, db, ws, other); r.Duplicate {
		t.Errorf("same key, other source: Duplicate = true, want false")
	}
}

func TestIngestConcurrentDuplicates(t *testing.T) {
	db := pgtest.Open(t)
	ws, _, _ := pgtest.Workspace(t, db)
	var wg sync.WaitGroup
	results := make([]c360.IngestResult, 16)
	errs := make([]error, 16)
	for i := range results {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r, err := db.Ingest(context.Background(), ws, []*c360.Event{track("dup", ids("phone", "+14155550111"))})
			if err == nil {
				results[i] = r[0]
			}
			errs[i] = err
		}()
	}
	wg.Wait()
	fresh := 0
	for i, r := range results {
		if errs[i] != nil {
			t.Fatalf("delivery %d: %v", i, errs[i])
		}
		if !r.Duplicate {
			fresh++
		}
		if r.EventID != results[0].EventID {
			t.Errorf("delivery %d event = %d, want %d", i, r.EventID, results[0].EventID)
		}
	}
	if fresh != 1 {
		t.Errorf("non-duplicate deliveries = %d, want 1", fresh)
	}
	if n := count(t, db, `SELECT count(*) FROM events WHERE workspace_id = $1`, ws); n != 1 {
		t.Errorf("events = %d, want 1", n)
	}
}

func TestIngestFirstContactRace(t *testing.T) {
	db := pgtest.Open(t)
	ws, _, _ := pgtest.Workspace(t, db)
	const n = 32
	var wg sync.WaitGroup
	custs := make([]int64, n)
	errs := make([]error, n)
	start := make(chan struct{})
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			// Different spellings of one new email and phone.
			ev := track(fmt.Sprintf("race-%d", i), ids("email", fmt.Sprintf(" New.Person@Example.com%s", []string{"", " "}[i%2]),
				"phone", []string{"+1 415 555 0199", "(415) 555-0199", "whatsapp:+14155550199"}[i%3]))
			r, err := db.Ingest(context.Background(), ws, []*c360.Event{ev})
			if err == nil {
				custs[i] = r[0].CustomerID
			}
			errs[i] = err
		}()
	}
	close(start)
	wg.Wait()
	for i := range custs {
		if errs[i] != nil {
			t.Fatalf("event %d: %v", i, errs[i])
		}
		if custs[i] != custs[0] {
			t.Errorf("event %d customer = %d, want %d", i, custs[i], custs[0])
		}
	}
	if got := count(t, db, `SELECT count(*) FROM customers WHERE workspace_id = $1`, ws); got != 1 {
		t.Errorf("customers = %d, want 1", got)
	}
	if got := count(t, db, `SELECT count(*) FROM identities WHERE workspace_id = $1`, ws); got != 2 {
		t.Errorf("identities = %d, want 2", got)
	}
	if got := count(t, db, `SELECT count(*) FROM events WHERE workspace_id = $1 AND customer_id = $2`, ws, custs[0]); got != n {
		t.Errorf("events on the customer = %d, want %d", got, n)
	}
	// One change row per event plus consecutive versions 1..n.
	if got := count(t, db, `SELECT count(*) FROM customer_changes WHERE workspace_id = $1 AND customer_id = $2`, ws, custs[0]); got != n {
		t.Errorf("change rows = %d, want %d", got, n)
	}
	if got := count(t, db, `SELECT max(version) - min(version) + 1 FROM customer_changes WHERE workspace_id = $1 AND customer_id = $2`, ws, custs[0]); got != n {
		t.Errorf("version span = %d, want %d (consecutive)", got, n)
	}
}

func TestIngestRefusesBadInputAndWritesNothing(t *testing.T) {
	db := pgtest.Open(t)
	ws, _, _ := pgtest.Workspace(t, db)
	cases := map[string][]c360.Identity{
		"bad phone":       ids("phone", "12"),
		"bad email":       ids("email", "not-an-email"),
		"bad type":        ids("Email", "a@example.com"),
		"only blocked":    ids("user_id", "null", "anonymous_id", "0"),
		"no identities":   nil,
		"one bad of many": ids("email", "ok@example.com", "phone", "abc"),
	}
	for name, identities := range cases {
		t.Run(name, func(t *testing.T) {
			_, err := db.Ingest(context.Background(), ws, []*c360.Event{track("bad-"+name, identities)})
			if got := c360.ErrorCode(err); got != c360.EINVALID {
				t.Fatalf("code = %q (%v), want %q", got, err, c360.EINVALID)
			}
		})
	}
	// A message status without the provider's id names no message.
	for name, msg := range map[string]*c360.MessageInput{"no message": nil, "no provider id": {Status: "delivered"}} {
		ev := track("status-"+name, ids("phone", "+14155550100"))
		ev.Type, ev.Name, ev.Message = c360.EventMessageStatus, "", msg
		if _, err := db.Ingest(context.Background(), ws, []*c360.Event{ev}); c360.ErrorCode(err) != c360.EINVALID {
			t.Errorf("status with %s: %v, want %s", name, err, c360.EINVALID)
		}
	}
	// Objects kept as bytes must be plain: the store writes them unread.
	for name, raw := range map[string]string{"an exponent": `{"x":1e5}`, "a \\u escape": `{"x":"\u0000"}`, "not an object": `[1]`} {
		for _, inContext := range []bool{false, true} {
			ev := track("raw-"+name, ids("email", "raw@example.com"))
			if inContext {
				ev.RawContext = json.RawMessage(raw)
			} else {
				ev.RawProperties = json.RawMessage(raw)
			}
			if _, err := db.Ingest(t.Context(), ws, []*c360.Event{ev}); c360.ErrorCode(err) != c360.EINVALID {
				t.Errorf("raw object with %s (context %v): %v, want %s", name, inContext, err, c360.EINVALID)
			}
		}
	}
	// A dedupe key or source no text column takes: refused with its
	// reason, as it could be kept neither as an event nor a dead letter.
	for name, bad := range map[string]string{"a NUL": "k\x00ey", "bytes that are not UTF-8": "k\xffey"} {
		for _, field := range []string{"messageId", "source"} {
			ev := track("key-"+name, ids("email", "key@example.com"))
			if field == "source" {
				ev.Source = bad
			} else {
				ev.DedupeKey = bad
			}
			_, err := db.Ingest(t.Context(), ws, []*c360.Event{ev})
			if c360.ErrorCode(err) != c360.EINVALID || !strings.Contains(c360.ErrorMessage(err), field) {
				t.Errorf("%s with %s: %v, want %s naming it", field, name, err, c360.EINVALID)
			}
		}
	}
	// A batch with one bad event writes none of them.
	_, err := db.Ingest(context.Background(), ws, []*c360.Event{
		track("good", ids("email", "good@example.com")), track("bad", ids("phone", "x")),
	})
	if got := c360.ErrorCode(err); got != c360.EINVALID {
		t.Fatalf("batch code = %q, want %q", got, c360.EINVALID)
	}
	for _, table := range []string{"events", "customers", "identities", "customer_changes", "dead_letters"} {
		if n := count(t, db, `SELECT count(*) FROM `+table+` WHERE workspace_id = $1`, ws); n != 0 {
			t.Errorf("%s rows = %d, want 0", table, n)
		}
	}
}

func TestIngestResolvesAndAttaches(t *testing.T) {
	db := pgtest.Open(t)
	ws, _, _ := pgtest.Workspace(t, db)
	ctx := context.Background()

	a := ingest1(t, db, ws, track("1", ids("email", "Pat@Example.com")))
	b := ingest1(t, db, ws, track("2", ids("email", "pat@example.com", "phone", "(415) 555-0123")))
	if b.CustomerID != a.CustomerID {
		t.Fatalf("second event customer = %d, want %d", b.CustomerID, a.CustomerID)
	}
	got, err := db.FindCustomerByIdentity(ctx, ws, c360.Identity{Type: "phone", Value: "whatsapp:+1 415 555 0123"})
	if err != nil || got.ID != a.CustomerID {
		t.Fatalf("by phone = %v, %v; want customer %d", got, err, a.CustomerID)
	}
	m, err := db.IdentitiesByCustomers(ctx, ws, []int64{a.CustomerID})
	if err != nil {
		t.Fatal(err)
	}
	want := []c360.Identity{{Type: "email", Value: "pat@example.com"}, {Type: "phone", Value: "+14155550123"}}
	var got2 []c360.Identity
	for _, r := range m[a.CustomerID] {
		got2 = append(got2, r.Identity)
		if r.Source != "test" || r.FirstSeen.IsZero() || r.LastSeen.Before(r.FirstSeen) {
			t.Errorf("provenance of %v = source %q first %v last %v", r.Identity, r.Source, r.FirstSeen, r.LastSeen)
		}
	}
	if fmt.Sprint(got2) != fmt.Sprint(want) {
		t.Errorf("identities = %v, want %v", got2, want)
	}
	// A blocked value is ignored, not refused, and never becomes an identity.
	c := ingest1(t, db, ws, track("3", ids("email", "pat@example.com", "user_id", "undefined")))
	if c.CustomerID != a.CustomerID || len(c.Dropped) != 1 {
		t.Errorf("blocked value: customer %d dropped %v; want %d and one drop", c.CustomerID, c.Dropped, a.CustomerID)
	}
	if _, err := db.FindCustomerByIdentity(ctx, ws, c360.Identity{Type: "user_id", Value: "undefined"}); c360.ErrorCode(err) != c360.ENOTFOUND {
		t.Errorf("lookup of blocked value: %v, want NOT_FOUND", err)
	}
}

func TestIngestMergesAndOldIDResolves(t *testing.T) {
	db := pgtest.Open(t)
	ws, _, _ := pgtest.Workspace(t, db)
	ctx := context.Background()
	anon := ingest1(t, db, ws, track("a", ids("anonymous_id", "anon-1")))
	known := ingest1(t, db, ws, track("b", ids("email", "m@example.com")))
	if anon.CustomerID == known.CustomerID {
		t.Fatal("two unrelated identities share a customer")
	}
	link := ingest1(t, db, ws, track("c", ids("anonymous_id", "anon-1", "email", "m@example.com")))
	survivor := min(anon.CustomerID, known.CustomerID)
	merged := max(anon.CustomerID, known.CustomerID)
	if link.CustomerID != survivor {
		t.Fatalf("linking event customer = %d, want survivor %d", link.CustomerID, survivor)
	}
	c, err := db.FindCustomerByID(ctx, ws, merged)
	if err != nil || c.ID != survivor {
		t.Fatalf("merged id resolves to %v (%v), want %d", c, err, survivor)
	}
	if n := count(t, db, `SELECT count(*) FROM events WHERE workspace_id = $1 AND customer_id = $2`, ws, survivor); n != 3 {
		t.Errorf("survivor events = %d, want 3", n)
	}
	if n := count(t, db, `SELECT count(*) FROM merges WHERE workspace_id = $1 AND survivor_id = $2 AND merged_id = $3`, ws, survivor, merged); n != 1 {
		t.Errorf("ledger rows = %d, want 1", n)
	}
	if n := count(t, db, `SELECT count(*) FROM customer_changes WHERE workspace_id = $1 AND customer_id = $2 AND kind = 'merged_into'`, ws, merged); n != 1 {
		t.Errorf("merged_into change rows = %d, want 1", n)
	}
	page, err := db.FindCustomers(ctx, ws, c360.CustomerFilter{First: 10})
	if err != nil || len(page.Items) != 1 || page.Items[0].ID != survivor {
		t.Errorf("live customers = %v (%v), want only %d", page, err, survivor)
	}
}

func TestIngestNeverMergesTwoUserIDs(t *testing.T) {
	db := pgtest.Open(t)
	ws, _, _ := pgtest.Workspace(t, db)
	a := ingest1(t, db, ws, track("1", ids("user_id", "u1", "email", "shared@example.com")))
	b := ingest1(t, db, ws, track("2", ids("user_id", "u2", "email", "shared@example.com")))
	if a.CustomerID == b.CustomerID {
		t.Fatalf("customers with user_ids u1 and u2 were merged")
	}
	if len(b.Dropped) == 0 {
		t.Errorf("dropped = none, want the conflicting email recorded")
	}
}

// In one group, an event that only names a customer's own identities
// (settled: its identities are not read) comes before one that would give
// that customer a second user_id. The second is still judged on all of the
// customer's identities: its email is dropped and it gets a customer of its
// own.
func TestGroupJudgesUnsettledEventsOnAllIdentities(t *testing.T) {
	db := pgtest.Open(t)
	ws, _, _ := pgtest.Workspace(t, db)
	a := ingest1(t, db, ws, track("1", ids("user_id", "u1", "email", "a@example.com")))
	res, err := db.Ingest(context.Background(), ws, []*c360.Event{
		track("2", ids("email", "a@example.com")),
		track("3", ids("email", "a@example.com", "user_id", "u2")),
	})
	if err != nil {
		t.Fatal(err)
	}
	if res[0].CustomerID != a.CustomerID {
		t.Errorf("settled event went to customer %d, want %d", res[0].CustomerID, a.CustomerID)
	}
	if res[1].CustomerID == a.CustomerID || len(res[1].Dropped) != 1 {
		t.Errorf("event with a second user_id = %+v, want a new customer and the email dropped", res[1])
	}
	if n := count(t, db, `SELECT count(*) FROM identities WHERE workspace_id = $1 AND customer_id = $2 AND type = 'user_id'`, ws, a.CustomerID); n != 1 {
		t.Errorf("customer %d has %d user_ids, want 1", a.CustomerID, n)
	}
}

// A group reads traits only for customers with an event that sets them.
// In a group where one customer's event sets traits and another's does
// not, the first gets its traits and the second keeps its own.
func TestGroupKeepsTraitsItDoesNotRead(t *testing.T) {
	db := pgtest.Open(t)
	ws, _, _ := pgtest.Workspace(t, db)
	ctx := context.Background()
	identify := func(key, user string, traits map[string]any) *c360.Event {
		ev := track(key, ids("user_id", user))
		ev.Type, ev.Name, ev.Traits = c360.EventIdentify, "", traits
		return ev
	}
	a := ingest1(t, db, ws, identify("1", "ua", map[string]any{"plan": "free"}))
	b := ingest1(t, db, ws, identify("2", "ub", map[string]any{"plan": "pro"}))
	if _, err := db.Ingest(ctx, ws, []*c360.Event{
		track("3", ids("user_id", "ub")),
		identify("4", "ua", map[string]any{"plan": "team"}),
		track("5", ids("user_id", "ub")),
	}); err != nil {
		t.Fatal(err)
	}
	for c, want := range map[int64]string{a.CustomerID: "team", b.CustomerID: "pro"} {
		var plan string
		var version int64
		if err := db.Pool.QueryRow(ctx, `SELECT traits->>'plan', version FROM customers WHERE workspace_id = $1 AND id = $2`, ws, c).Scan(&plan, &version); err != nil {
			t.Fatal(err)
		}
		if plan != want {
			t.Errorf("customer %d plan = %q, want %q", c, plan, want)
		}
		if c == b.CustomerID && version != 3 {
			t.Errorf("customer %d version = %d, want 3 (its two tracks counted)", c, version)
		}
	}
}

// smsIn is an inbound SMS from the given identities, as the Twilio
// connector makes it.
func smsIn(key string, identities []c360.Identity) *c360.Event {
	now := time.Now().UTC()
	return &c360.Event{Type: c360.EventMessage, Source: "twilio", DedupeKey: key, Identities: identities,
		OccurredAt: now, ReceivedAt: now,
		Message: &c360.MessageInput{Channel: c360.ChannelSMS, Direction: c360.DirectionInbound, Body: "hi", ProviderID: key, Status: "received"}}
}

// A source whose keys are unique per person (RepeatSharesIdentity) has a
// stored key repeated by another person refused, whole and without a dead
// letter, on both paths and within one group; a repeat that shares an
// identity is a duplicate, and other sources keep taking any repeat as one.
func TestIngestRefusesAKeyReusedByAnotherPerson(t *testing.T) {
	db := pgtest.Open(t)
	ws, _, _ := pgtest.Workspace(t, db)
	ctx := context.Background()
	perPerson := func(key string, identities []c360.Identity) *c360.Event {
		ev := track(key, identities)
		ev.RepeatSharesIdentity = true
		return ev
	}
	wantReused := func(what string, err error, key string) {
		t.Helper()
		var reused *c360.KeyReusedError
		if !errors.As(err, &reused) || reused.DedupeKey != key || c360.ErrorCode(err) != c360.ECONFLICT {
			t.Errorf("%s: %v, want a KeyReusedError for %q with code CONFLICT", what, err, key)
		}
	}
	first := ingest1(t, db, ws, perPerson("s:1", ids("email", "A@example.com")))
	rows := func() int {
		return count(t, db, `SELECT (SELECT count(*) FROM events WHERE workspace_id = $1) + (SELECT count(*) FROM customers WHERE workspace_id = $1)
			+ (SELECT count(*) FROM dead_letters WHERE workspace_id = $1)`, ws)
	}
	before := rows()

	_, err := db.Ingest(ctx, ws, []*c360.Event{perPerson("s:2", ids("email", "b@example.com")), perPerson("s:1", ids("email", "b@example.com"))})
	wantReused("stored key, group path", err, "s:1")
	_, err = db.IngestByGroupOnly(ctx, ws, []*c360.Event{perPerson("s:3", ids("email", "a@example.com")), perPerson("s:3", ids("email", "b@example.com"))})
	wantReused("key repeated within the group", err, "s:3")
	outbound := perPerson("s:1", ids("email", "b@example.com"))
	outbound.Type, outbound.Name = c360.EventMessage, ""
	outbound.Message = &c360.MessageInput{Channel: c360.ChannelChat, Direction: c360.DirectionOutbound, Body: "hi", Status: "sent"}
	_, err = db.Ingest(ctx, ws, []*c360.Event{outbound})
	wantReused("stored key, per-event path", err, "s:1")
	if got := rows(); got != before {
		t.Errorf("events + customers + dead letters = %d after the refusals, want %d", got, before)
	}

	// The same person, normalized alike and with one more identity.
	again := ingest1(t, db, ws, perPerson("s:1", ids("phone", "+14155550100", "email", " a@EXAMPLE.com")))
	if !again.Duplicate || again.EventID != first.EventID {
		t.Errorf("redelivery = %+v, want a duplicate of event %d", again, first.EventID)
	}
	res, err := db.IngestByGroupOnly(ctx, ws, []*c360.Event{perPerson("s:4", ids("email", "a@example.com")), perPerson("s:4", ids("email", "a@example.com"))})
	if err != nil || !res[1].Duplicate {
		t.Errorf("repeat within the group = %+v (%v), want a duplicate", res, err)
	}
	// Without the flag a stored key is a repeat, whoever sends it.
	if r := ingest1(t, db, ws, track("s:1", ids("email", "c@example.com"))); !r.Duplicate {
		t.Errorf("unflagged repeat = %+v, want a duplicate", r)
	}
}

// An event can reach a customer through an identity that an earlier event
// of its group attached to it. The group reads what that customer needs
// (here its traits) without falling back to the per-event path, and the
// traits land on it.
func TestGroupReadsTheTraitsOfCustomersReachedThroughAttachedIdentities(t *testing.T) {
	db := pgtest.Open(t)
	ws, _, _ := pgtest.Workspace(t, db)
	ctx := context.Background()
	a := ingest1(t, db, ws, track("1", ids("user_id", "u1")))
	identify := track("3", ids("email", "new@example.com"))
	identify.Type, identify.Name, identify.Traits = c360.EventIdentify, "", map[string]any{"plan": "pro"}
	res, err := db.IngestByGroupOnly(ctx, ws, []*c360.Event{track("2", ids("user_id", "u1", "email", "new@example.com")), identify})
	if err != nil {
		t.Fatalf("group path: %v", err)
	}
	if res[1].CustomerID != a.CustomerID {
		t.Errorf("identify went to customer %d, want %d", res[1].CustomerID, a.CustomerID)
	}
	var plan string
	if err := db.Pool.QueryRow(ctx, `SELECT traits->>'plan' FROM customers WHERE workspace_id = $1 AND id = $2`, ws, a.CustomerID).Scan(&plan); err != nil || plan != "pro" {
		t.Errorf("plan = %q (%v), want pro", plan, err)
	}
}

// Likewise for a message: it goes into the open conversation of the
// customer reached through an attached identity, not into a second one.
func TestGroupReusesTheConversationOfCustomersReachedThroughAttachedIdentities(t *testing.T) {
	db := pgtest.Open(t)
	ws, _, _ := pgtest.Workspace(t, db)
	ctx := context.Background()
	a := ingest1(t, db, ws, smsIn("SM1", ids("user_id", "u1")))
	res, err := db.IngestByGroupOnly(ctx, ws, []*c360.Event{
		track("2", ids("user_id", "u1", "phone", "+14155550123")),
		smsIn("SM3", ids("phone", "+14155550123")),
	})
	if err != nil {
		t.Fatalf("group path: %v", err)
	}
	if res[1].CustomerID != a.CustomerID {
		t.Errorf("message went to customer %d, want %d", res[1].CustomerID, a.CustomerID)
	}
	if n := count(t, db, `SELECT count(*) FROM conversations WHERE workspace_id = $1 AND customer_id = $2 AND status = 'open'`, ws, a.CustomerID); n != 1 {
		t.Errorf("customer has %d open conversations, want 1", n)
	}
	if n := count(t, db, `SELECT count(DISTINCT conversation_id) FROM messages WHERE workspace_id = $1 AND customer_id = $2`, ws, a.CustomerID); n != 1 {
		t.Errorf("its messages are in %d conversations, want 1", n)
	}
}

// A group stores each message's media as given: none as an empty list,
// several in order.
func TestGroupStoresMessageMedia(t *testing.T) {
	db := pgtest.Open(t)
	ws, _, _ := pgtest.Workspace(t, db)
	ctx := context.Background()
	with := smsIn("SM1", ids("phone", "+14155550124"))
	with.Message.MediaURLs = []string{"https://example.com/b.jpg", "https://example.com/a.jpg"}
	res, err := db.IngestByGroupOnly(ctx, ws, []*c360.Event{with, smsIn("SM2", ids("phone", "+14155550125"))})
	if err != nil {
		t.Fatal(err)
	}
	for i, want := range [][]string{with.Message.MediaURLs, {}} {
		var media []string
		if err := db.Pool.QueryRow(ctx, `SELECT media_urls FROM messages WHERE workspace_id = $1 AND event_id = $2`, ws, res[i].EventID).Scan(&media); err != nil {
			t.Fatal(err)
		}
		if media == nil || !slices.Equal(media, want) {
			t.Errorf("message %d media = %#v, want %#v", i, media, want)
		}
	}
}

// A blocked identity is dropped even when a customer owns it (the block
// list grew after), before resolution. An event naming it and another
// customer's user_id is then settled on that customer: it is resolved
// without reading any customer's identities, and still reports the drop.
func TestSettledEventReportsBlockedIdentities(t *testing.T) {
	counter := &pgtest.StatementCounter{}
	db := pgtest.Open(t, counter.Install)
	ws, _, _ := pgtest.Workspace(t, db)
	ctx := context.Background()
	a := ingest1(t, db, ws, track("1", ids("email", "qa@example.com")))
	b := ingest1(t, db, ws, track("2", ids("user_id", "u2")))
	if _, err := db.UpdateIdentityRules(ctx, ws, c360.IdentityRules{Limits: map[string]int{"user_id": 1}, DefaultLimit: 5,
		Blocked: []string{"qa@example.com"}}); err != nil {
		t.Fatal(err)
	}
	counter.Reset()
	res, err := db.IngestByGroupOnly(ctx, ws, []*c360.Event{track("3", ids("email", "qa@example.com", "user_id", "u2")), track("4", ids("user_id", "u2"))})
	if err != nil {
		t.Fatal(err)
	}
	if res[0].CustomerID != b.CustomerID || len(res[0].Dropped) != 1 {
		t.Errorf("event = %+v, want customer %d (not %d) and the blocked email dropped", res[0], b.CustomerID, a.CustomerID)
	}
	const readIdentities = "SELECT k.id, i.type, i.value FROM unnest"
	if sent := counter.Statements(); strings.Contains(sent, readIdentities) {
		t.Errorf("a settled group read customers' identities:\n%s", sent)
	}
	// The control: an event that attaches a new identity to b is judged on
	// b's identities, so its group reads them.
	counter.Reset()
	if _, err := db.IngestByGroupOnly(ctx, ws, []*c360.Event{track("5", ids("user_id", "u2", "phone", "+14155550177"))}); err != nil {
		t.Fatal(err)
	}
	if sent := counter.Statements(); !strings.Contains(sent, readIdentities) {
		t.Errorf("an unsettled group read no identities:\n%s", sent)
	}
}

// An identify trait email on the workspace's block list is dropped with
// its reason recorded, as the same address sent as an identity is, on
// both ingest paths; sent as both, it is recorded once.
func TestBlockedIdentifyTraitIsRecorded(t *testing.T) {
	db := pgtest.Open(t)
	ws, _, _ := pgtest.Workspace(t, db)
	ctx := context.Background()
	if _, err := db.UpdateIdentityRules(ctx, ws, c360.IdentityRules{Limits: map[string]int{"user_id": 1}, DefaultLimit: 5,
		Blocked: []string{"qa@example.com"}}); err != nil {
		t.Fatal(err)
	}
	const want = `email "qa@example.com": blocked by the workspace's rules`
	identify := func(key string, traits map[string]any, idents ...string) *c360.Event {
		return &c360.Event{Type: c360.EventIdentify, Source: "test", DedupeKey: key, Identities: ids(idents...), Traits: traits}
	}
	group, err := db.IngestByGroupOnly(ctx, ws, []*c360.Event{identify("g", map[string]any{"email": "QA@example.com"}, "user_id", "u-g")})
	if err != nil {
		t.Fatal(err)
	}
	perEvent, err := db.IngestPerEventOnly(ctx, ws, identify("p", map[string]any{"email": "QA@example.com"}, "user_id", "u-p"))
	if err != nil {
		t.Fatal(err)
	}
	both := ingest1(t, db, ws, identify("b", map[string]any{"email": "qa@example.com"}, "user_id", "u-b", "email", "qa@example.com"))
	for name, got := range map[string][]string{"group path": group[0].Dropped, "per-event path": perEvent.Dropped, "trait and identity": both.Dropped} {
		if len(got) != 1 || got[0] != want {
			t.Errorf("%s: dropped %q, want [%q]", name, got, want)
		}
	}
	if _, err := db.FindCustomerByIdentity(ctx, ws, c360.Identity{Type: "email", Value: "qa@example.com"}); c360.ErrorCode(err) != c360.ENOTFOUND {
		t.Errorf("the blocked address resolves: %v, want NOT_FOUND", err)
	}
}

func TestTraitsNewestObservationWins(t *testing.T) {
	db := pgtest.Open(t)
	ws, _, _ := pgtest.Workspace(t, db)
	ctx := context.Background()
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	identify := func(key string, at time.Time, traits map[string]any) c360.IngestResult {
		return ingest1(t, db, ws, &c360.Event{Type: c360.EventIdentify, Source: "test", DedupeKey: key,
			Identities: ids("user_id", "u-traits"), Traits: traits, OccurredAt: at})
	}
	r := identify("1", t0.Add(time.Hour), map[string]any{"plan": "pro", "name": "Ann"})
	identify("2", t0, map[string]any{"plan": "free", "city": "Oslo"}) // older: plan stays, city is new
	c, err := db.FindCustomerByID(ctx, ws, r.CustomerID)
	if err != nil {
		t.Fatal(err)
	}
	if c.Traits["plan"] != "pro" || c.Traits["city"] != "Oslo" || c.Traits["name"] != "Ann" {
		t.Errorf("traits = %v, want plan pro, city Oslo, name Ann", c.Traits)
	}
	// Identify traits email and phone become identities.
	identify("3", t0.Add(2*time.Hour), map[string]any{"email": "ANN@example.com"})
	if got, err := db.FindCustomerByIdentity(ctx, ws, c360.Identity{Type: "email", Value: "ann@example.com"}); err != nil || got.ID != r.CustomerID {
		t.Errorf("email trait as identity: %v, %v", got, err)
	}
}

func TestWorkspaceIsolation(t *testing.T) {
	db := pgtest.Open(t)
	wsA, _, _ := pgtest.Workspace(t, db)
	wsB, _, _ := pgtest.Workspace(t, db)
	ctx := context.Background()
	a := ingest1(t, db, wsA, track("1", ids("email", "iso@example.com")))
	if _, err := db.FindCustomerByID(ctx, wsB, a.CustomerID); c360.ErrorCode(err) != c360.ENOTFOUND {
		t.Errorf("by id from B: %v, want NOT_FOUND", err)
	}
	if _, err := db.FindCustomerByIdentity(ctx, wsB, c360.Identity{Type: "email", Value: "iso@example.com"}); c360.ErrorCode(err) != c360.ENOTFOUND {
		t.Errorf("by identity from B: %v, want NOT_FOUND", err)
	}
	// The same identity in B is a different customer.
	b := ingest1(t, db, wsB, track("1", ids("email", "iso@example.com")))
	if b.CustomerID == a.CustomerID || b.Duplicate {
		t.Errorf("B's event = %+v; want its own customer, not a duplicate of A's", b)
	}
}

func TestFindCustomersPages(t *testing.T) {
	db := pgtest.Open(t)
	ws, _, _ := pgtest.Workspace(t, db)
	ctx := context.Background()
	for i := 0; i < 7; i++ {
		ingest1(t, db, ws, &c360.Event{Type: c360.EventIdentify, Source: "test", DedupeKey: fmt.Sprint(i),
			Identities: ids("email", fmt.Sprintf("p%d@example.com", i)), Traits: map[string]any{"name": fmt.Sprintf("Person %d", i)}})
	}
	seen := map[int64]bool{}
	after := ""
	for {
		page, err := db.FindCustomers(ctx, ws, c360.CustomerFilter{First: 3, After: after})
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range page.Items {
			if seen[c.ID] {
				t.Fatalf("customer %d on two pages", c.ID)
			}
			seen[c.ID] = true
		}
		if !page.HasNext {
			break
		}
		after = page.Cursors[len(page.Cursors)-1]
	}
	if len(seen) != 7 {
		t.Errorf("customers seen = %d, want 7", len(seen))
	}
	page, err := db.FindCustomers(ctx, ws, c360.CustomerFilter{First: 10, Query: "SON 3"})
	if err != nil {
		t.Fatalf("search by name fragment: %v", err)
	}
	if len(page.Items) != 1 {
		t.Errorf("search by name fragment: %d results, want 1", len(page.Items))
	}
	page, err = db.FindCustomers(ctx, ws, c360.CustomerFilter{First: 10, Query: "p5@exa"})
	if err != nil {
		t.Fatalf("search by email fragment: %v", err)
	}
	if len(page.Items) != 1 {
		t.Errorf("search by email fragment: %d results, want 1", len(page.Items))
	}
	if _, err := db.FindCustomers(ctx, ws, c360.CustomerFilter{First: 10, After: "%%%"}); c360.ErrorCode(err) != c360.EINVALID {
		t.Errorf("bad cursor: %v, want BAD_USER_INPUT", err)
	}
}

// Two replicas' groups that carry the same event: one stores it, the other
// finds it (on its duplicate check, or by losing the insert and retrying),
// and both answer with the one stored event.
func TestGroupsOfTwoReplicasShareAnEvent(t *testing.T) {
	db1 := pgtest.Open(t)
	db2 := pgtest.Open(t)
	ws, _, _ := pgtest.Workspace(t, db1)
	ctx := context.Background()
	const rounds = 20
	for r := 0; r < rounds; r++ {
		shared := fmt.Sprintf("shared-%d", r)
		var wg sync.WaitGroup
		got := make([]c360.IngestResult, 8)
		errs := make([]error, 8)
		for g := 0; g < 8; g++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				db := db1
				if g%2 == 1 {
					db = db2
				}
				res, err := db.Ingest(ctx, ws, []*c360.Event{
					track(fmt.Sprintf("own-%d-%d", r, g), ids("phone", fmt.Sprintf("+1415555%04d", g))),
					track(shared, ids("phone", "+14155559999")),
				})
				if err == nil {
					got[g] = res[1]
				}
				errs[g] = err
			}()
		}
		wg.Wait()
		for g := range got {
			if errs[g] != nil {
				t.Fatalf("round %d sender %d: %v", r, g, errs[g])
			}
			if got[g].EventID != got[0].EventID || got[g].EventID == 0 {
				t.Fatalf("round %d: sender %d got event %d, sender 0 got %d", r, g, got[g].EventID, got[0].EventID)
			}
		}
		if n := count(t, db1, `SELECT count(*) FROM events WHERE workspace_id = $1 AND dedupe_key = $2`, ws, shared); n != 1 {
			t.Fatalf("round %d: shared event stored %d times", r, n)
		}
	}
	if n := count(t, db1, `SELECT count(*) FROM events WHERE workspace_id = $1`, ws); n != rounds*9 {
		t.Errorf("events = %d, want %d", n, rounds*9)
	}
}

// What PlainObject lets through, PostgreSQL's jsonb takes with the meaning
// a decoder gives it: the same object, numbers and escapes included.
func TestPlainObjectsAreTakenAsTheyRead(t *testing.T) {
	db := pgtest.Open(t)
	for _, raw := range []string{
		`{}`, `{"a":[1,-0,0.5,-12.250,{"b":null}],"t":true,"f":false}`,
		`{"id":12345678901234567890123456789,"price":18.990}`,
		`{"long":` + strings.Repeat("7", 300) + `}`, `{"fraction":-0.` + strings.Repeat("3", 297) + `}`,
		`{"esc":"\u00e9 \u003c\u0026\u003e \/ \" \\ \b\f\n\r\t \u0001 \uFFFD \ue000","caf\u00e9":1}`,
		`{"dup":1,"dup":2}`, "{\"utf8\":\"日本 😀\"}",
	} {
		if !c360.PlainObject([]byte(raw)) {
			t.Fatalf("PlainObject(%.80q) = false", raw)
		}
		m, err := c360.DecodeObject([]byte(raw))
		if err != nil {
			t.Fatal(err)
		}
		decoded, _ := json.Marshal(m)
		var same bool
		if err := db.Pool.QueryRow(t.Context(), `SELECT $1::text::jsonb = $2::text::jsonb`, raw, string(decoded)).Scan(&same); err != nil || !same {
			t.Errorf("jsonb of %.80q: equal to its decoding %v, %v; want true", raw, same, err)
		}
	}
}

// Every connection reads json, jsonb and their arrays with numbers as
// json.Number: a float64 would round these.
func TestJSONColumnsReadNumbersExactly(t *testing.T) {
	db := pgtest.Open(t)
	var (
		jb  map[string]any
		js  any
		arr []map[string]any
	)
	if err := db.Pool.QueryRow(t.Context(), `SELECT '{"n":12345678901234567}'::jsonb, '{"n":18.990}'::json,
		ARRAY['{"n":98765432109876543}'::jsonb]`).Scan(&jb, &js, &arr); err != nil {
		t.Fatal(err)
	}
	m, _ := js.(map[string]any)
	if jb["n"] != json.Number("12345678901234567") || m["n"] != json.Number("18.990") ||
		len(arr) != 1 || arr[0]["n"] != json.Number("98765432109876543") {
		t.Errorf("read %#v, %#v, %#v; want every number as written", jb, js, arr)
	}
}

// A trait's observedAt is its event's occurredAt as stored: PostgreSQL
// keeps microseconds, and a time sent with nanoseconds is cut to them
// before either is written, so a console can match a trait to its event.
func TestTraitObservedAtIsTheEventsStoredTime(t *testing.T) {
	db := pgtest.Open(t)
	ws, _, _ := pgtest.Workspace(t, db)
	at := time.Date(2026, 1, 2, 3, 4, 5, 123456789, time.UTC)
	res := ingest1(t, db, ws, &c360.Event{Type: c360.EventIdentify, Source: "t", DedupeKey: "ns", Identities: ids("email", "ns@example.com"),
		Traits: map[string]any{"plan": "pro"}, OccurredAt: at})
	c, err := db.FindCustomerByID(context.Background(), ws, res.CustomerID)
	if err != nil {
		t.Fatal(err)
	}
	var stored time.Time
	if err := db.Pool.QueryRow(context.Background(), `SELECT occurred_at FROM events WHERE workspace_id = $1 AND dedupe_key = 'ns'`, ws).Scan(&stored); err != nil {
		t.Fatal(err)
	}
	if want := at.Truncate(time.Microsecond); !stored.Equal(want) {
		t.Fatalf("stored occurred_at = %v, want %v", stored, want)
	}
	if got := c.TraitSources["plan"].ObservedAt; !got.Equal(stored) {
		t.Errorf("traitSources.plan.observedAt = %v, want the event's occurredAt %v", got.Format(time.RFC3339Nano), stored.Format(time.RFC3339Nano))
	}
	// A client key's traits are dated at receipt: their observedAt is the
	// event's received_at as stored.
	res = ingest1(t, db, ws, &c360.Event{Type: c360.EventIdentify, Source: "t", DedupeKey: "ns-client", Identities: ids("email", "ns@example.com"),
		Traits: map[string]any{"theme": "dark"}, FromClientKey: true, ReceivedAt: at.Add(time.Hour)})
	if c, err = db.FindCustomerByID(context.Background(), ws, res.CustomerID); err != nil {
		t.Fatal(err)
	}
	if err := db.Pool.QueryRow(context.Background(), `SELECT received_at FROM events WHERE workspace_id = $1 AND dedupe_key = 'ns-client'`, ws).Scan(&stored); err != nil {
		t.Fatal(err)
	}
	if got := c.TraitSources["theme"].ObservedAt; !got.Equal(stored) {
		t.Errorf("a client key's traitSources.theme.observedAt = %v, want the event's received_at %v", got.Format(time.RFC3339Nano), stored.Format(time.RFC3339Nano))
	}
}

// A search by fragment is bounded (searchTimeout): one that the database
// has not answered by then is refused, saying why, and does not hold its
// connection for as long as the database takes. Here the customers'
// table is locked, as a slow scan would keep the search; a listing
// without a query is not bounded so.
func TestCustomerSearchIsBounded(t *testing.T) {
	db := pgtest.Open(t)
	ws, _, _ := pgtest.Workspace(t, db)
	ctx := context.Background()
	ingest1(t, db, ws, &c360.Event{Type: c360.EventIdentify, Source: "t", DedupeKey: "s1", Identities: ids("email", "quinn@example.com"),
		Traits: map[string]any{"name": "Quinn"}})
	postgres.SetSearchTimeout(t, 200*time.Millisecond)
	tx, err := db.Pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, `LOCK TABLE customers IN ACCESS EXCLUSIVE MODE`); err != nil {
		t.Fatal(err)
	}
	_, err = db.FindCustomers(ctx, ws, c360.CustomerFilter{Query: "quinn", First: 10})
	if c360.ErrorCode(err) != c360.EUNAVAILABLE || !strings.Contains(c360.ErrorMessage(err), "the search took longer than 200ms") {
		t.Errorf("a search the database does not answer: %v, want UNAVAILABLE saying it took longer than 200ms", err)
	}
	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	page, err := db.FindCustomers(ctx, ws, c360.CustomerFilter{Query: "quinn", First: 10})
	if err != nil || len(page.Items) != 1 {
		t.Errorf("the search once the lock is gone: %+v, %v, want Quinn", page, err)
	}
}
