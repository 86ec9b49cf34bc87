package postgres_test

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/c360dev/c360"
	"github.com/c360dev/c360/internal/pgtest"
	"github.com/c360dev/c360/postgres"
)

func TestIdentityRulesRoundTripAndValidation(t *testing.T) {
	db := pgtest.Open(t)
	ws, _, _ := pgtest.Workspace(t, db)
	ctx := context.Background()
	got, err := db.IdentityRules(ctx, ws)
	if err != nil {
		t.Fatal(err)
	}
	if got.Limits["user_id"] != 1 || got.DefaultLimit != 5 {
		t.Fatalf("default rules = %+v, want user_id 1 and default 5", got)
	}
	in := c360.IdentityRules{Limits: map[string]int{"user_id": 1, "email": 2}, DefaultLimit: 3,
		Priority: []string{"crm_id", "user_id"}, Blocked: []string{"qa@example.com"}}
	if _, err := db.UpdateIdentityRules(ctx, ws, in); err != nil {
		t.Fatal(err)
	}
	got, _ = db.IdentityRules(ctx, ws)
	if got.Limits["email"] != 2 || got.DefaultLimit != 3 || got.Priority[0] != "crm_id" || got.Blocked[0] != "qa@example.com" {
		t.Errorf("stored rules = %+v, want %+v", got, in)
	}
	for name, bad := range map[string]c360.IdentityRules{
		"zero default": {DefaultLimit: 0},
		"zero limit":   {Limits: map[string]int{"email": 0}, DefaultLimit: 5},
		"bad type":     {Limits: map[string]int{"Email": 1}, DefaultLimit: 5},
		"dup priority": {DefaultLimit: 5, Priority: []string{"email", "email"}},
	} {
		if _, err := db.UpdateIdentityRules(ctx, ws, bad); c360.ErrorCode(err) != c360.EINVALID {
			t.Errorf("%s: %v, want BAD_USER_INPUT", name, err)
		}
	}
	// The workspace's block list applies at once on this replica.
	_, err = db.Ingest(ctx, ws, []*c360.Event{track("blk", ids("email", "QA@example.com"))})
	if c360.ErrorCode(err) != c360.EINVALID {
		t.Errorf("event whose only identity is blocked: %v, want BAD_USER_INPUT", err)
	}
	// A phone number blocked as an admin writes it matches the E.164 value
	// identities carry; the stored list stays as written.
	in.Blocked = append(in.Blocked, "(415) 555-0199")
	if _, err := db.UpdateIdentityRules(ctx, ws, in); err != nil {
		t.Fatal(err)
	}
	if got, _ := db.IdentityRules(ctx, ws); len(got.Blocked) != 2 || got.Blocked[1] != "(415) 555-0199" {
		t.Errorf("stored block list = %v, want it as written", got.Blocked)
	}
	ann := ingest1(t, db, ws, track("blk-ann", ids("email", "ann@blk.io", "phone", "+1 415 555 0199")))
	bob := ingest1(t, db, ws, track("blk-bob", ids("email", "bob@blk.io", "phone", "4155550199")))
	if ann.CustomerID == bob.CustomerID || len(ann.Dropped) != 1 || len(bob.Dropped) != 1 {
		t.Errorf("two people sharing a blocked number: %+v and %+v, want two customers, the number dropped from each", ann, bob)
	}
	// The email limit of 2 now holds.
	r := ingest1(t, db, ws, track("e1", ids("user_id", "u", "email", "a@x.io")))
	ingest1(t, db, ws, track("e2", ids("user_id", "u", "email", "b@x.io")))
	r3 := ingest1(t, db, ws, track("e3", ids("user_id", "u", "email", "c@x.io")))
	if len(r3.Dropped) != 1 || r3.CustomerID != r.CustomerID {
		t.Errorf("third email: %+v, want dropped on customer %d", r3, r.CustomerID)
	}
	if n := count(t, db, `SELECT count(*) FROM events WHERE workspace_id = $1 AND dropped IS NOT NULL AND dedupe_key NOT LIKE 'blk-%'`, ws); n != 1 {
		t.Errorf("events recording a drop = %d, want 1", n)
	}
}

func TestManualMerge(t *testing.T) {
	db := pgtest.Open(t)
	ws, _, _ := pgtest.Workspace(t, db)
	ctx := context.Background()
	a := ingest1(t, db, ws, &c360.Event{Type: c360.EventIdentify, Source: "t", DedupeKey: "a", Identities: ids("email", "a@m.io"),
		Traits: map[string]any{"name": "Old"}, OccurredAt: time.Now().Add(-time.Hour)})
	b := ingest1(t, db, ws, &c360.Event{Type: c360.EventIdentify, Source: "t", DedupeKey: "b", Identities: ids("phone", "+14155550142"),
		Traits: map[string]any{"name": "New"}})
	c, err := db.MergeCustomers(ctx, ws, a.CustomerID, b.CustomerID, false, "key a90000000001", "same person on the phone")
	if err != nil {
		t.Fatal(err)
	}
	if c.ID != a.CustomerID || c.Traits["name"] != "New" {
		t.Errorf("merged = %d %v, want survivor %d with the newer name", c.ID, c.Traits, a.CustomerID)
	}
	if c.TraitSources["name"].Source != "t" {
		t.Errorf("trait source = %+v", c.TraitSources["name"])
	}
	// The ledger row and both customers' change rows carry one time.
	if n := count(t, db, `SELECT count(DISTINCT x.at) FROM (
			SELECT created_at AS at FROM merges WHERE workspace_id = $1 AND survivor_id = $2 AND merged_id = $3
			UNION ALL SELECT created_at FROM customer_changes WHERE workspace_id = $1 AND customer_id IN ($2, $3)
			  AND version = (SELECT max(version) FROM customer_changes WHERE workspace_id = $1 AND customer_id = customer_changes.customer_id)) x`,
		ws, a.CustomerID, b.CustomerID); n != 1 {
		t.Errorf("the merge's ledger row and change rows carry %d different times, want 1", n)
	}
	if _, err := db.MergeCustomers(ctx, ws, a.CustomerID, b.CustomerID, false, "x", ""); c360.ErrorCode(err) != c360.ECONFLICT {
		t.Errorf("merging again: %v, want CONFLICT", err)
	}
	if _, err := db.MergeCustomers(ctx, ws, a.CustomerID, 999999999, false, "x", ""); c360.ErrorCode(err) != c360.ENOTFOUND {
		t.Errorf("unknown customer: %v, want NOT_FOUND", err)
	}
	// Two user_ids: refused unless forced.
	u1 := ingest1(t, db, ws, track("u1", ids("user_id", "u1")))
	u2 := ingest1(t, db, ws, track("u2", ids("user_id", "u2")))
	if _, err := db.MergeCustomers(ctx, ws, u1.CustomerID, u2.CustomerID, false, "x", ""); c360.ErrorCode(err) != c360.ECONFLICT {
		t.Errorf("merge over the user_id limit: %v, want CONFLICT", err)
	}
	if n := count(t, db, `SELECT count(*) FROM customers WHERE workspace_id = $1 AND id = $2 AND merged_into IS NULL`, ws, u2.CustomerID); n != 1 {
		t.Errorf("refused merge changed the customer")
	}
	if _, err := db.MergeCustomers(ctx, ws, u1.CustomerID, u2.CustomerID, true, "key ad0000000001", "forced"); err != nil {
		t.Errorf("forced merge: %v", err)
	}
	hist, err := db.MergesByCustomers(ctx, ws, []int64{a.CustomerID})
	if err != nil || len(hist[a.CustomerID]) != 1 || hist[a.CustomerID][0].Actor != "key a90000000001" || hist[a.CustomerID][0].Reason != "same person on the phone" {
		t.Errorf("ledger = %+v (%v)", hist[a.CustomerID], err)
	}
	// Many customers at once: each gets the entries it survived and those
	// it was merged away in, and no other's.
	hist, err = db.MergesByCustomers(ctx, ws, []int64{a.CustomerID, b.CustomerID, u1.CustomerID, u2.CustomerID, 999999999})
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range []struct{ id, survivor, merged int64 }{
		{a.CustomerID, a.CustomerID, b.CustomerID}, {b.CustomerID, a.CustomerID, b.CustomerID},
		{u1.CustomerID, u1.CustomerID, u2.CustomerID}, {u2.CustomerID, u1.CustomerID, u2.CustomerID},
	} {
		if h := hist[w.id]; len(h) != 1 || h[0].SurvivorID != w.survivor || h[0].MergedID != w.merged {
			t.Errorf("ledger of %d = %+v, want the merge of %d into %d", w.id, h, w.merged, w.survivor)
		}
	}
	if len(hist) != 4 {
		t.Errorf("ledger has entries for %d customers, want 4", len(hist))
	}
	// Loaded by ids, each merged customer is its survivor.
	got, err := db.CustomersByIDs(ctx, ws, []int64{a.CustomerID, b.CustomerID, u2.CustomerID, 999999999})
	if err != nil {
		t.Fatal(err)
	}
	for id, want := range map[int64]int64{a.CustomerID: a.CustomerID, b.CustomerID: a.CustomerID, u2.CustomerID: u1.CustomerID} {
		if c := got[id]; c == nil || c.ID != want {
			t.Errorf("customer %d loaded as %+v, want %d", id, c, want)
		}
	}
	if len(got) != 3 {
		t.Errorf("loaded %d customers, want 3", len(got))
	}
	// A chain: u1 (holding u2) merges into a. a's ledger now names both
	// merges, the one into a and the one into u1, which tells why u2's
	// identity is on a; u2's own ledger is unchanged.
	if _, err := db.MergeCustomers(ctx, ws, a.CustomerID, u1.CustomerID, true, "key ad0000000001", "chain"); err != nil {
		t.Fatal(err)
	}
	hist, err = db.MergesByCustomers(ctx, ws, []int64{a.CustomerID, u2.CustomerID})
	if err != nil {
		t.Fatal(err)
	}
	var chain []string
	for _, h := range hist[a.CustomerID] {
		chain = append(chain, fmt.Sprintf("%d<-%d", h.SurvivorID, h.MergedID))
	}
	if got, want := strings.Join(chain, " "), fmt.Sprintf("%d<-%d %d<-%d %d<-%d", a.CustomerID, b.CustomerID, u1.CustomerID, u2.CustomerID,
		a.CustomerID, u1.CustomerID); got != want {
		t.Errorf("ledger of the chain's survivor = %s, want %s (oldest first)", got, want)
	}
	if h := hist[u2.CustomerID]; len(h) != 1 || h[0].SurvivorID != u1.CustomerID {
		t.Errorf("ledger of u2 = %+v, want only its merge into u1", h)
	}
	// The assistants' context names the same merges, newest first.
	cc, err := db.CustomerContext(ctx, ws, c360.CustomerRef{ID: a.CustomerID}, time.Now(), c360.DefaultContextLimits)
	if err != nil {
		t.Fatal(err)
	}
	var newest []string
	for _, h := range cc.Merges {
		newest = append(newest, fmt.Sprintf("%d<-%d", h.SurvivorID, h.MergedID))
	}
	slices.Reverse(chain)
	if got, want := strings.Join(newest, " "), strings.Join(chain, " "); got != want {
		t.Errorf("the context's merges = %s, want %s (newest first)", got, want)
	}
}

func TestSplitIdentity(t *testing.T) {
	db := pgtest.Open(t)
	ws, _, _ := pgtest.Workspace(t, db)
	ctx := context.Background()
	t0 := time.Now().Add(-time.Hour)
	// A shared family phone was linked to Ann's account.
	ann := ingest1(t, db, ws, &c360.Event{Type: c360.EventIdentify, Source: "t", DedupeKey: "1", OccurredAt: t0,
		Identities: ids("email", "ann@x.io"), Traits: map[string]any{"name": "Ann"}})
	ingest1(t, db, ws, &c360.Event{Type: c360.EventIdentify, Source: "t", DedupeKey: "2", OccurredAt: t0.Add(time.Minute),
		Identities: ids("email", "ann@x.io", "phone", "+14155550177")})
	sms := &c360.Event{Type: c360.EventMessage, Source: "twilio", DedupeKey: "SM1", OccurredAt: t0.Add(2 * time.Minute),
		Identities: ids("phone", "+14155550177"), Traits: map[string]any{"name": "Bob"},
		Message: &c360.MessageInput{Channel: "sms", Direction: "inbound", Body: "hi", ProviderID: "SM1", Status: "received"},
		Consent: &c360.ConsentInput{Channel: "sms", Status: c360.ConsentOptedOut}}
	ingest1(t, db, ws, sms)
	ingest1(t, db, ws, track("3", ids("email", "ann@x.io")))

	res, err := db.SplitIdentity(ctx, ws, ann.CustomerID, c360.Identity{Type: "phone", Value: "(415) 555-0177"}, "key a90000000009", "family phone")
	if err != nil {
		t.Fatal(err)
	}
	if res.Original.ID != ann.CustomerID || res.Split.ID == ann.CustomerID {
		t.Fatalf("split result = %+v", res)
	}
	if res.MovedEvents != 1 || res.MovedConversations != 1 {
		t.Errorf("moved events %d conversations %d, want 1 and 1 (the linking identify stays)", res.MovedEvents, res.MovedConversations)
	}
	if res.Original.Traits["name"] != "Ann" || res.Split.Traits["name"] != "Bob" {
		t.Errorf("traits: original %v split %v, want Ann and Bob", res.Original.Traits, res.Split.Traits)
	}
	owner, err := db.FindCustomerByIdentity(ctx, ws, c360.Identity{Type: "phone", Value: "+14155550177"})
	if err != nil || owner.ID != res.Split.ID {
		t.Errorf("phone owner = %v (%v), want %d", owner, err, res.Split.ID)
	}
	if n := count(t, db, `SELECT count(*) FROM consents WHERE workspace_id = $1 AND customer_id = $2 AND channel = 'sms'`, ws, res.Split.ID); n != 1 {
		t.Errorf("sms consent on the split customer = %d, want 1", n)
	}
	if n := count(t, db, `SELECT count(*) FROM consents WHERE workspace_id = $1 AND customer_id = $2`, ws, ann.CustomerID); n != 0 {
		t.Errorf("consents left on the original (which keeps no phone) = %d, want 0", n)
	}
	if n := count(t, db, `SELECT count(*) FROM merges WHERE workspace_id = $1 AND kind = 'split' AND survivor_id = $2 AND merged_id = $3`, ws, ann.CustomerID, res.Split.ID); n != 1 {
		t.Errorf("split ledger rows = %d, want 1", n)
	}
	// An event carrying both identities again does not re-merge them.
	again := ingest1(t, db, ws, track("4", ids("email", "ann@x.io", "phone", "+14155550177")))
	if again.CustomerID != ann.CustomerID || len(again.Dropped) != 1 {
		t.Errorf("event linking the split pair: %+v, want Ann's customer with the phone dropped", again)
	}
	if n := count(t, db, `SELECT count(*) FROM customers WHERE workspace_id = $1 AND merged_into IS NULL`, ws); n != 2 {
		t.Errorf("live customers = %d, want 2", n)
	}
	// A manual merge needs an admin's force.
	if _, err := db.MergeCustomers(ctx, ws, ann.CustomerID, res.Split.ID, false, "x", ""); c360.ErrorCode(err) != c360.ECONFLICT {
		t.Errorf("merge of a split pair: %v, want CONFLICT", err)
	}
	// Refusals.
	if _, err := db.SplitIdentity(ctx, ws, ann.CustomerID, c360.Identity{Type: "email", Value: "ann@x.io"}, "x", ""); c360.ErrorCode(err) != c360.EINVALID {
		t.Errorf("splitting the only identity: %v, want BAD_USER_INPUT", err)
	}
	if _, err := db.SplitIdentity(ctx, ws, ann.CustomerID, c360.Identity{Type: "email", Value: "nobody@x.io"}, "x", ""); c360.ErrorCode(err) != c360.ENOTFOUND {
		t.Errorf("splitting an identity the customer lacks: %v, want NOT_FOUND", err)
	}
	// Change rows for both customers.
	if n := count(t, db, `SELECT count(*) FROM customer_changes WHERE workspace_id = $1 AND customer_id = $2 AND kind = 'split'`, ws, ann.CustomerID); n != 1 {
		t.Errorf("split change rows = %d, want 1", n)
	}
}

// The split cases TestSplitIdentity does not reach (docs/identity.md,
// "Splitting"): a merged-away id is followed to its survivor (step 1); a
// conversation with messages from both sides stays with the original, and
// so do its messages (step 4); each side keeps the consent of its own
// phone's messages (step 5); ids merged into the original before the split keep resolving to it;
// and the separation follows a later merge of the split side (step 7).
func TestSplitKeepsWhatBelongsToBoth(t *testing.T) {
	db := pgtest.Open(t)
	ws, _, _ := pgtest.Workspace(t, db)
	ctx := context.Background()
	t0 := time.Now().Add(-time.Hour)
	sms := func(key, phone string, at time.Time) *c360.Event {
		return &c360.Event{Type: c360.EventMessage, Source: "twilio", DedupeKey: key, OccurredAt: at, Identities: ids("phone", phone),
			Message: &c360.MessageInput{Channel: "sms", Direction: "inbound", Body: key, ProviderID: key, Status: "received"},
			Consent: &c360.ConsentInput{Channel: "sms", Status: c360.ConsentOptedIn}}
	}
	a := ingest1(t, db, ws, &c360.Event{Type: c360.EventIdentify, Source: "t", DedupeKey: "a", OccurredAt: t0,
		Identities: ids("email", "a@x.io", "phone", "+14155550101")}).CustomerID
	ingest1(t, db, ws, sms("SMa", "+14155550101", t0.Add(time.Minute)))
	m := ingest1(t, db, ws, &c360.Event{Type: c360.EventIdentify, Source: "t", DedupeKey: "m", OccurredAt: t0.Add(2 * time.Minute),
		Identities: ids("email", "m@x.io", "phone", "+14155550102")}).CustomerID
	if _, err := db.MergeCustomers(ctx, ws, a, m, false, "agent", "same person"); err != nil {
		t.Fatal(err)
	}
	ingest1(t, db, ws, sms("SMm", "+14155550102", t0.Add(3*time.Minute)))

	// Split the second phone, naming the merged-away customer.
	res, err := db.SplitIdentity(ctx, ws, m, c360.Identity{Type: "phone", Value: "+14155550102"}, "agent", "not the same phone")
	if err != nil {
		t.Fatal(err)
	}
	if res.Original.ID != a {
		t.Fatalf("split of merged-away %d acted on %d, want its survivor %d", m, res.Original.ID, a)
	}
	if res.MovedConversations != 0 {
		t.Errorf("moved conversations = %d, want 0: the sms conversation has messages from both phones", res.MovedConversations)
	}
	if n := count(t, db, `SELECT count(*) FROM messages WHERE workspace_id = $1 AND customer_id = $2`, ws, a); n != 2 {
		t.Errorf("messages left with the original = %d, want both (their conversation stays)", n)
	}
	if n := count(t, db, `SELECT count(*) FROM messages m JOIN conversations c ON c.workspace_id = m.workspace_id AND c.id = m.conversation_id
		WHERE m.workspace_id = $1 AND m.customer_id <> c.customer_id`, ws); n != 0 {
		t.Errorf("%d messages belong to another customer than their conversation", n)
	}
	for _, c := range []int64{a, res.Split.ID} {
		if n := count(t, db, `SELECT count(*) FROM consents WHERE workspace_id = $1 AND customer_id = $2 AND channel = 'sms'`, ws, c); n != 1 {
			t.Errorf("sms consents of customer %d = %d, want 1 (each side's own message decided it)", c, n)
		}
	}
	if got, err := db.FindCustomerByID(ctx, ws, m); err != nil || got.ID != a {
		t.Errorf("merged-away id %d resolves to %v (%v), want the original %d", m, got, err, a)
	}

	// The split side merged into a third customer: the separation follows.
	c := ingest1(t, db, ws, track("c", ids("email", "c@x.io"))).CustomerID
	if _, err := db.MergeCustomers(ctx, ws, c, res.Split.ID, false, "agent", "same person"); err != nil {
		t.Fatalf("merge of the split side into an unrelated customer: %v", err)
	}
	if _, err := db.MergeCustomers(ctx, ws, a, c, false, "agent", ""); c360.ErrorCode(err) != c360.ECONFLICT {
		t.Errorf("merge of the original with the split side's survivor: %v, want CONFLICT", err)
	}
}

// consentEvent is phone's decision on channel, made at at.
func consentEvent(key, phone, channel, status string, at time.Time) *c360.Event {
	return &c360.Event{Type: c360.EventTrack, Name: "Consent", Source: "t", DedupeKey: key, OccurredAt: at,
		Identities: ids("phone", phone), Consent: &c360.ConsentInput{Channel: channel, Status: status}}
}

// A wrong merge, then its split, leaves each person's consent decisions
// with them. The merge lets the newer decision per channel win on the
// survivor, so an opt-out (STOP) of the merged-away phone is overruled by
// the survivor's newer opt-in; splitting that phone out must give the
// opt-out back with it, not copy the survivor's opt-in to a number that
// asked never to be texted again.
func TestSplitGivesEachSideItsOwnConsent(t *testing.T) {
	db := pgtest.Open(t)
	ws, _, _ := pgtest.Workspace(t, db)
	ctx := context.Background()
	t0 := time.Now().Add(-time.Hour)
	const q, p = "+14155550111", "+14155550122"
	decide := func(key, phone, channel, status string, at time.Duration) {
		ingest1(t, db, ws, consentEvent(key, phone, channel, status, t0.Add(at)))
	}
	s := ingest1(t, db, ws, &c360.Event{Type: c360.EventIdentify, Source: "t", DedupeKey: "s", OccurredAt: t0,
		Identities: ids("user_id", "u1", "phone", q)}).CustomerID
	decide("s-wa", q, "whatsapp", c360.ConsentOptedOut, time.Minute)
	decide("s-sms", q, "sms", c360.ConsentOptedIn, 10*time.Minute)
	m := ingest1(t, db, ws, &c360.Event{Type: c360.EventIdentify, Source: "t", DedupeKey: "m", OccurredAt: t0.Add(2 * time.Minute),
		Identities: ids("phone", p)}).CustomerID
	decide("m-stop", p, "sms", c360.ConsentOptedOut, 5*time.Minute)
	decide("m-wa", p, "whatsapp", c360.ConsentOptedIn, 6*time.Minute)
	// A wrong event links u1 to P: M merges into S, and S's newer
	// decisions win on both channels.
	if got := ingest1(t, db, ws, track("link", ids("user_id", "u1", "phone", p))); got.CustomerID != s {
		t.Fatalf("linking event went to %d, want the survivor %d", got.CustomerID, s)
	}
	consents := func(c int64) map[string]string {
		rows, err := db.Pool.Query(ctx, `SELECT channel, status FROM consents WHERE workspace_id = $1 AND customer_id = $2`, ws, c)
		if err != nil {
			t.Fatal(err)
		}
		out := map[string]string{}
		for rows.Next() {
			var ch, st string
			if err := rows.Scan(&ch, &st); err != nil {
				t.Fatal(err)
			}
			out[ch] = st
		}
		return out
	}
	if got := fmt.Sprint(consents(s)); got != "map[sms:opted_in whatsapp:opted_in]" {
		t.Fatalf("after the merge S has %s, want the newer decisions (sms opted_in, whatsapp opted_in)", got)
	}

	res, err := db.SplitIdentity(ctx, ws, m, c360.Identity{Type: "phone", Value: p}, "agent", "two people")
	if err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprint(consents(res.Split.ID)); got != "map[sms:opted_out whatsapp:opted_in]" {
		t.Errorf("the split-off phone's customer has %s, want its own decisions (sms opted_out, whatsapp opted_in)", got)
	}
	if got := fmt.Sprint(consents(s)); got != "map[sms:opted_in whatsapp:opted_out]" {
		t.Errorf("the original has %s, want its own decisions (sms opted_in, whatsapp opted_out)", got)
	}
}

// TestResolutionStress sends random overlapping identifier sets from 32
// goroutines and then checks the identity graph is consistent.
func TestResolutionStress(t *testing.T) {
	db := pgtest.Open(t)
	ws, _, _ := pgtest.Workspace(t, db)
	ctx := context.Background()
	const workers, perWorker = 32, 25
	pool := func(r *rand.Rand) c360.Identity {
		switch r.IntN(4) {
		case 0:
			return c360.Identity{Type: "email", Value: fmt.Sprintf("s%d@stress.io", r.IntN(30))}
		case 1:
			return c360.Identity{Type: "phone", Value: fmt.Sprintf("+1415555%04d", r.IntN(30))}
		case 2:
			return c360.Identity{Type: "anonymous_id", Value: fmt.Sprintf("anon-%d", r.IntN(40))}
		}
		return c360.Identity{Type: "user_id", Value: fmt.Sprintf("user-%d", r.IntN(15))}
	}
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	sent := map[c360.Identity]bool{}
	var mu sync.Mutex
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(w), 42))
			for i := 0; i < perWorker; i++ {
				var set []c360.Identity
				for k := 0; k < 1+r.IntN(3); k++ {
					set = append(set, pool(r))
				}
				res, err := db.Ingest(ctx, ws, []*c360.Event{track(fmt.Sprintf("%d-%d", w, i), set)})
				if err != nil {
					errs <- err
					return
				}
				mu.Lock()
				for _, id := range set {
					// An identifier the event had to drop (a second user_id,
					// say) need not exist; one it kept must.
					if !droppedIn(res[0].Dropped, id) {
						sent[id] = true
					}
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("ingest under stress: %v", err)
	}
	// No identity lost: every identifier an event kept is owned by exactly one live customer
	// (the primary key makes "owned twice" impossible; we check "lost" and "dead owner").
	n := count(t, db, `SELECT count(*) FROM identities i JOIN customers c ON c.workspace_id = i.workspace_id AND c.id = i.customer_id
		WHERE i.workspace_id = $1 AND c.merged_into IS NULL`, ws)
	if n != len(sent) {
		t.Errorf("identities on live customers = %d, want %d (every identifier sent)", n, len(sent))
	}
	if bad := count(t, db, `SELECT count(*) FROM identities i JOIN customers c ON c.workspace_id = i.workspace_id AND c.id = i.customer_id
		WHERE i.workspace_id = $1 AND c.merged_into IS NOT NULL`, ws); bad != 0 {
		t.Errorf("identities owned by merged-away customers = %d, want 0", bad)
	}
	// No customer holds two user_ids.
	if bad := count(t, db, `SELECT count(*) FROM (SELECT customer_id FROM identities WHERE workspace_id = $1 AND type = 'user_id'
		GROUP BY customer_id HAVING count(*) > 1) x`, ws); bad != 0 {
		t.Errorf("customers with two user_ids = %d, want 0", bad)
	}
	// Every event sits on a customer that resolves to a live one in one hop,
	// and merged-away customers point at live survivors.
	if bad := count(t, db, `SELECT count(*) FROM customers m JOIN customers s ON s.workspace_id = m.workspace_id AND s.id = m.merged_into
		WHERE m.workspace_id = $1 AND s.merged_into IS NOT NULL`, ws); bad != 0 {
		t.Errorf("merge chains longer than one hop = %d, want 0", bad)
	}
	if bad := count(t, db, `SELECT count(*) FROM events e JOIN customers c ON c.workspace_id = e.workspace_id AND c.id = e.customer_id
		WHERE e.workspace_id = $1 AND c.merged_into IS NOT NULL`, ws); bad != 0 {
		t.Errorf("events left on merged-away customers = %d, want 0", bad)
	}
	if got := count(t, db, `SELECT count(*) FROM events WHERE workspace_id = $1`, ws); got != workers*perWorker {
		t.Errorf("events = %d, want %d", got, workers*perWorker)
	}
	// Live customers without identities would be unreachable.
	if bad := count(t, db, `SELECT count(*) FROM customers c WHERE c.workspace_id = $1 AND c.merged_into IS NULL
		AND NOT EXISTS (SELECT 1 FROM identities i WHERE i.workspace_id = c.workspace_id AND i.customer_id = c.id)`, ws); bad != 0 {
		t.Errorf("live customers with no identity = %d, want 0", bad)
	}
	// Change feed versions stay consecutive per customer.
	if bad := count(t, db, `SELECT count(*) FROM (SELECT customer_id FROM customer_changes WHERE workspace_id = $1
		GROUP BY customer_id HAVING max(version) <> count(*)) x`, ws); bad != 0 {
		t.Errorf("customers with gaps in versions = %d, want 0", bad)
	}
}

// TestWorkedExample is the story docs/identity.md tells, step by step.
func TestWorkedExample(t *testing.T) {
	db := pgtest.Open(t)
	ws, _, _ := pgtest.Workspace(t, db)
	ctx := context.Background()
	// 1. An anonymous visitor browses.
	visit := ingest1(t, db, ws, &c360.Event{Type: c360.EventPage, Name: "Pricing", Source: "segment", DedupeKey: "p1",
		Identities: ids("anonymous_id", "a-77")})
	// 2. They sign up: identify with userId, the same anonymousId, and traits.
	signup := ingest1(t, db, ws, &c360.Event{Type: c360.EventIdentify, Source: "segment", DedupeKey: "i1",
		Identities: ids("user_id", "u-100", "anonymous_id", "a-77"),
		Traits:     map[string]any{"name": "Rosa", "email": "Rosa@Example.com", "phone": "+1 (415) 555-0188"}})
	if signup.CustomerID != visit.CustomerID {
		t.Fatalf("sign-up customer = %d, want the visitor %d", signup.CustomerID, visit.CustomerID)
	}
	// 3. An SMS arrives from the phone given at sign-up.
	sms := ingest1(t, db, ws, &c360.Event{Type: c360.EventMessage, Source: "twilio", DedupeKey: "SM9",
		Identities: ids("phone", "+14155550188"),
		Message:    &c360.MessageInput{Channel: "sms", Direction: "inbound", Body: "Is my order shipped?", ProviderID: "SM9", Status: "received"}})
	if sms.CustomerID != visit.CustomerID {
		t.Fatalf("SMS customer = %d, want %d", sms.CustomerID, visit.CustomerID)
	}
	// 4. A second account shares the email: a different user_id is never merged.
	second := ingest1(t, db, ws, &c360.Event{Type: c360.EventIdentify, Source: "segment", DedupeKey: "i2",
		Identities: ids("user_id", "u-200"), Traits: map[string]any{"email": "rosa@example.com", "plan": "team"}})
	if second.CustomerID == visit.CustomerID {
		t.Fatalf("second account merged into the first")
	}
	if len(second.Dropped) != 1 {
		t.Errorf("dropped = %v, want the shared email", second.Dropped)
	}
	got, _ := db.IdentitiesByCustomers(ctx, ws, []int64{visit.CustomerID, second.CustomerID})
	if len(got[visit.CustomerID]) != 4 || len(got[second.CustomerID]) != 1 {
		t.Errorf("identities: first %d, second %d; want 4 (user_id, anonymous_id, email, phone) and 1", len(got[visit.CustomerID]), len(got[second.CustomerID]))
	}
	// The business decides the two accounts are one person, and an admin
	// forces the merge; it was wrong, and splitting u-200 back out takes
	// the events that arrived through it alone: its identify too, whose
	// email was dropped, so that it never arrived through the email C1
	// keeps (events.dropped), and the trait it brought.
	ingest1(t, db, ws, &c360.Event{Type: c360.EventTrack, Name: "Seat added", Source: "segment", DedupeKey: "t2",
		Identities: ids("user_id", "u-200")})
	if _, err := db.MergeCustomers(ctx, ws, visit.CustomerID, second.CustomerID, true, "admin", "same person"); err != nil {
		t.Fatal(err)
	}
	res, err := db.SplitIdentity(ctx, ws, visit.CustomerID, c360.Identity{Type: "user_id", Value: "u-200"}, "admin", "not the same person")
	if err != nil {
		t.Fatal(err)
	}
	if res.MovedEvents != 2 {
		t.Errorf("moved events = %d, want 2 (u-200's identify and its track)", res.MovedEvents)
	}
	if res.Split.Traits["plan"] != "team" || res.Original.Traits["plan"] != nil {
		t.Errorf("plan: split %v, original %v; want team on the split customer alone", res.Split.Traits["plan"], res.Original.Traits["plan"])
	}
	var on int64
	if err := db.Pool.QueryRow(ctx, `SELECT customer_id FROM events WHERE workspace_id = $1 AND id = $2`, ws, second.EventID).Scan(&on); err != nil {
		t.Fatal(err)
	}
	if on != res.Split.ID {
		t.Errorf("u-200's identify is on customer %d, want the split customer %d", on, res.Split.ID)
	}
}

// An event did not arrive through an identifier it dropped: a split of
// that identifier leaves it where it is. A split before events' drops
// were read left the identify of u-200, whose email was dropped, on the
// first account; splitting the email out then does not take it.
func TestSplitLeavesEventsThatDroppedTheIdentifier(t *testing.T) {
	db := pgtest.Open(t)
	ws, _, _ := pgtest.Workspace(t, db)
	ctx := context.Background()
	first := ingest1(t, db, ws, &c360.Event{Type: c360.EventIdentify, Source: "t", DedupeKey: "1",
		Identities: ids("user_id", "u-100", "anonymous_id", "a-1"), Traits: map[string]any{"email": "rosa@example.com"}})
	second := ingest1(t, db, ws, &c360.Event{Type: c360.EventIdentify, Source: "t", DedupeKey: "2",
		Identities: ids("user_id", "u-200"), Traits: map[string]any{"email": "rosa@example.com"}})
	if len(second.Dropped) != 1 {
		t.Fatalf("dropped = %v, want the email", second.Dropped)
	}
	if _, err := db.MergeCustomers(ctx, ws, first.CustomerID, second.CustomerID, true, "admin", ""); err != nil {
		t.Fatal(err)
	}
	if _, err := db.SplitIdentity(ctx, ws, first.CustomerID, c360.Identity{Type: "user_id", Value: "u-200"}, "admin", ""); err != nil {
		t.Fatal(err)
	}
	// As an earlier split left it.
	if _, err := db.Pool.Exec(ctx, `UPDATE events SET customer_id = $2 WHERE workspace_id = $1 AND id = $3`, ws, first.CustomerID, second.EventID); err != nil {
		t.Fatal(err)
	}
	res, err := db.SplitIdentity(ctx, ws, first.CustomerID, c360.Identity{Type: "email", Value: "rosa@example.com"}, "admin", "")
	if err != nil {
		t.Fatal(err)
	}
	if res.MovedEvents != 0 {
		t.Errorf("moved events = %d, want 0: the first account's identify carried the email with its anonymous_id, u-200's dropped it", res.MovedEvents)
	}
}

// droppedIn reports whether an ingest result's drops name id.
func droppedIn(dropped []string, id c360.Identity) bool {
	prefix := fmt.Sprintf("%s %q:", id.Type, id.Value)
	for _, d := range dropped {
		if strings.HasPrefix(d, prefix) {
			return true
		}
	}
	return false
}

// Traits an event fills only where the customer has none (a messaging
// provider's profile name) survive a split: each side's traits are rebuilt
// from its events, and those traits are replayed as ingest applied them,
// the side that keeps the event keeping the trait.
func TestSplitKeepsTraitsFilledIfAbsent(t *testing.T) {
	db := pgtest.Open(t)
	ws, _, _ := pgtest.Workspace(t, db)
	ctx := context.Background()
	t0 := time.Now().Add(-time.Hour)
	a := ingest1(t, db, ws, &c360.Event{Type: c360.EventIdentify, Source: "t", DedupeKey: "1", OccurredAt: t0,
		Identities: ids("email", "ann@x.io", "phone", "+14155550177")})
	// A WhatsApp message naming the sender, as the Twilio connector builds it.
	ingest1(t, db, ws, &c360.Event{Type: c360.EventMessage, Source: "twilio", DedupeKey: "SMx", OccurredAt: t0.Add(time.Minute),
		Identities: ids("phone", "+14155550177"), TraitsIfAbsent: map[string]any{"name": "Bob WhatsApp"},
		Message: &c360.MessageInput{Channel: "whatsapp", Direction: "inbound", Body: "hi", ProviderID: "SMx", Status: "received"}})
	ingest1(t, db, ws, &c360.Event{Type: c360.EventTrack, Name: "Seen", Source: "t", DedupeKey: "2", OccurredAt: t0.Add(2 * time.Minute),
		Identities: ids("email", "ann@x.io"), TraitsIfAbsent: map[string]any{"nickname": "Annie"}})
	before, err := db.FindCustomerByID(ctx, ws, a.CustomerID)
	if err != nil || before.Traits["name"] != "Bob WhatsApp" || before.Traits["nickname"] != "Annie" {
		t.Fatalf("before the split: %v %v, want name and nickname filled", before, err)
	}
	res, err := db.SplitIdentity(ctx, ws, a.CustomerID, c360.Identity{Type: "phone", Value: "+14155550177"}, "agent", "")
	if err != nil {
		t.Fatal(err)
	}
	if res.Split.Traits["name"] != "Bob WhatsApp" || res.Original.Traits["nickname"] != "Annie" || res.Original.Traits["name"] != nil {
		t.Errorf("after the split: original %v, split %v; want the name with the phone's side and the nickname with the email's",
			res.Original.Traits, res.Split.Traits)
	}
}

// A customer's ledger names the split of a customer merged into it: the
// split side N of X merges into Y, and an event linking X and Y is then
// refused for that split, which Y's ledger must explain
// (docs/identity.md, "Explaining a profile").
func TestLedgerNamesTheSplitOfAMergedCustomer(t *testing.T) {
	db := pgtest.Open(t)
	ws, _, _ := pgtest.Workspace(t, db)
	ctx := context.Background()
	const phone = "+14155550188"
	y := ingest1(t, db, ws, track("y", ids("user_id", "u-y"))).CustomerID
	x := ingest1(t, db, ws, track("x", ids("email", "x@x.io", "phone", phone))).CustomerID
	res, err := db.SplitIdentity(ctx, ws, x, c360.Identity{Type: "phone", Value: phone}, "agent", "not hers")
	if err != nil {
		t.Fatal(err)
	}
	n := res.Split.ID
	if got := ingest1(t, db, ws, track("yn", ids("user_id", "u-y", "phone", phone))); got.CustomerID != y {
		t.Fatalf("event linking Y and N went to %d, want Y %d", got.CustomerID, y)
	}
	linked := ingest1(t, db, ws, track("yx", ids("email", "x@x.io", "user_id", "u-y")))
	want := fmt.Sprintf("split: customers %d and %d were split apart", y, x)
	if len(linked.Dropped) != 1 || !strings.Contains(linked.Dropped[0], want) {
		t.Fatalf("event linking Y and X dropped %q, want one drop for %q", linked.Dropped, want)
	}
	hist, err := db.MergesByCustomers(ctx, ws, []int64{y, n})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, h := range hist[y] {
		got = append(got, fmt.Sprintf("%s %d<-%d", h.Kind, h.SurvivorID, h.MergedID))
	}
	if got, want := strings.Join(got, ", "), fmt.Sprintf("split %d<-%d, merge %d<-%d", x, n, y, n); got != want {
		t.Errorf("ledger of Y = %s, want %s (the split that keeps X and Y apart, then N's merge)", got, want)
	}
	if h := hist[n]; len(h) != 2 {
		t.Errorf("ledger of N = %+v, want its split and its merge", h)
	}
	// The assistant's context of Y names the same entries, newest first
	// (schema/assistant.graphqls, CustomerContext.merges).
	cc, err := db.CustomerContext(ctx, ws, c360.CustomerRef{ID: y}, time.Now(), c360.DefaultContextLimits)
	if err != nil {
		t.Fatal(err)
	}
	var inContext []string
	for _, h := range slices.Backward(cc.Merges) {
		inContext = append(inContext, fmt.Sprintf("%d %s %d<-%d", h.ID, h.Kind, h.SurvivorID, h.MergedID))
	}
	var inLedger []string
	for _, h := range hist[y] {
		inLedger = append(inLedger, fmt.Sprintf("%d %s %d<-%d", h.ID, h.Kind, h.SurvivorID, h.MergedID))
	}
	if got, want := strings.Join(inContext, ", "), strings.Join(inLedger, ", "); got != want {
		t.Errorf("context of Y names merges %s (oldest first), want Customer.merges' %s", got, want)
	}
}

// Both ingest paths drop an identifier that would merge two customers
// split apart with the split: reason (docs/identity.md, step 7), though the
// merge would break the user_id limit too: the worked example's C1 and C2,
// merged by force and split again, then an event naming u-200 and C1's
// email. The group path read no separations and said limit:, so the same
// event left different reasons in events.dropped and the change feed by
// the path that applied it.
func TestSplitReasonIsTheSameOnBothPaths(t *testing.T) {
	db := pgtest.Open(t)
	ws, _, _ := pgtest.Workspace(t, db)
	ctx := context.Background()
	for _, path := range []string{"group", "per-event"} {
		t.Run(path, func(t *testing.T) {
			u1, u2, email := "u-100-"+path, "u-200-"+path, "rosa-"+path+"@example.com"
			c1 := ingest1(t, db, ws, track("a-"+path, ids("user_id", u1, "email", email))).CustomerID
			c2 := ingest1(t, db, ws, track("b-"+path, ids("user_id", u2))).CustomerID
			if _, err := db.MergeCustomers(ctx, ws, c1, c2, true, "admin", "forced"); err != nil {
				t.Fatal(err)
			}
			sp, err := db.SplitIdentity(ctx, ws, c1, c360.Identity{Type: "user_id", Value: u2}, "admin", "wrong")
			if err != nil {
				t.Fatal(err)
			}
			ev := track("g-"+path, ids("user_id", u2, "email", email))
			var res c360.IngestResult
			if path == "per-event" {
				hold := make(chan struct{})
				close(hold)
				err = db.IngestHeld(ctx, ws, ev, make(chan struct{}), hold)
				res.CustomerID = ownerOf(t, db, ws, "user_id", u2)
				res.Dropped = storedDropped(t, db, ws, ev.DedupeKey)
			} else {
				var rs []c360.IngestResult
				if rs, err = db.IngestByGroupOnly(ctx, ws, []*c360.Event{ev}); err == nil {
					res = rs[0]
				}
			}
			if err != nil {
				t.Fatalf("ingest: %v", err)
			}
			want := fmt.Sprintf("email %q: split: customers %d and %d were split apart and are not merged automatically", email, sp.Split.ID, c1)
			if res.CustomerID != sp.Split.ID || !slices.Equal(res.Dropped, []string{want}) {
				t.Errorf("resolved to %d dropping %q, want %d dropping [%q]", res.CustomerID, res.Dropped, sp.Split.ID, want)
			}
			if got := storedDropped(t, db, ws, ev.DedupeKey); !slices.Equal(got, []string{want}) {
				t.Errorf("events.dropped = %q, want [%q]", got, want)
			}
			if got := ownerOf(t, db, ws, "email", email); got != c1 {
				t.Errorf("the email belongs to %d, want C1 %d", got, c1)
			}
		})
	}
}

// storedDropped returns the dropped column of the event stored under key.
func storedDropped(t *testing.T, db *postgres.DB, ws int64, key string) []string {
	t.Helper()
	var dropped []string
	if err := db.Pool.QueryRow(context.Background(), `SELECT dropped FROM events WHERE workspace_id = $1 AND dedupe_key = $2`,
		ws, key).Scan(&dropped); err != nil {
		t.Fatal(err)
	}
	return dropped
}

// ownerOf returns the customer that owns the identity.
func ownerOf(t *testing.T, db *postgres.DB, ws int64, typ, value string) int64 {
	t.Helper()
	var c int64
	if err := db.Pool.QueryRow(context.Background(), `SELECT customer_id FROM identities WHERE workspace_id = $1 AND type = $2 AND value = $3`,
		ws, typ, value).Scan(&c); err != nil {
		t.Fatal(err)
	}
	return c
}

// A manual merge or a split that an ingest's merge overtakes, between the
// read of the survivors and the lock of their rows, reads them again and
// succeeds on the customers as they are then: the race is not the
// caller's to retry.
func TestMergeAndSplitOvertakenByAnIngestMerge(t *testing.T) {
	db := pgtest.Open(t)
	ws, _, _ := pgtest.Workspace(t, db)
	ctx := context.Background()
	// overtake merges the customer of email into the older customer of
	// keep, once, in a transaction of its own that commits at once.
	overtake := func(key, keep, email string) {
		var once sync.Once
		db.BeforeCustomerLock(func() {
			once.Do(func() { ingest1(t, db, ws, track(key, ids("email", keep, "email", email))) })
		})
		t.Cleanup(func() { db.BeforeCustomerLock(nil) })
	}

	z := ingest1(t, db, ws, track("z", ids("email", "z@r.io"))).CustomerID
	s := ingest1(t, db, ws, track("s", ids("email", "s@r.io"))).CustomerID
	m := ingest1(t, db, ws, track("m", ids("email", "m@r.io"))).CustomerID
	overtake("zm", "z@r.io", "m@r.io") // m merges into z, the oldest
	got, err := db.MergeCustomers(ctx, ws, s, m, false, "agent", "same person")
	if err != nil {
		t.Fatalf("merge overtaken by an ingest merge: %v, want it to succeed", err)
	}
	// z is older than s: s survives only as named. The survivor of m,
	// z, merged into s.
	if got.ID != s {
		t.Errorf("merge answered customer %d, want the survivor %d", got.ID, s)
	}
	for _, id := range []int64{z, m} {
		if c, err := db.FindCustomerByID(ctx, ws, id); err != nil || c.ID != s {
			t.Errorf("customer %d resolves to %v (%v), want %d", id, c, err, s)
		}
	}
	if n := count(t, db, `SELECT count(*) FROM identities WHERE workspace_id = $1 AND customer_id = $2`, ws, s); n != 3 {
		t.Errorf("the survivor holds %d identities, want 3", n)
	}

	// A split: its customer merges into an older one meanwhile, and the
	// split acts on that survivor, which now holds the identity.
	o := ingest1(t, db, ws, track("o", ids("email", "o@r.io"))).CustomerID
	p := ingest1(t, db, ws, track("p", ids("email", "p@r.io", "phone", "+14155550166"))).CustomerID
	overtake("op", "o@r.io", "p@r.io")
	res, err := db.SplitIdentity(ctx, ws, p, c360.Identity{Type: "phone", Value: "+14155550166"}, "agent", "")
	if err != nil {
		t.Fatalf("split overtaken by an ingest merge: %v, want it to succeed", err)
	}
	if res.Original.ID != o {
		t.Errorf("split acted on %d, want the survivor %d", res.Original.ID, o)
	}
	if owner, err := db.FindCustomerByIdentity(ctx, ws, c360.Identity{Type: "phone", Value: "+14155550166"}); err != nil || owner.ID != res.Split.ID {
		t.Errorf("phone owner = %v (%v), want the split customer %d", owner, err, res.Split.ID)
	}
}

// A manual merge is refused only for a limit the union would break beyond
// what either customer already holds: a customer over a limit lowered
// since (or forced over it) can still take in a customer that adds none
// of that type, as ingest's planner lets it, but not one that adds more.
func TestManualMergeToleratesALimitAlreadyExceeded(t *testing.T) {
	db := pgtest.Open(t)
	ws, _, _ := pgtest.Workspace(t, db)
	ctx := context.Background()
	a := ingest1(t, db, ws, track("a", ids("email", "a1@l.io", "email", "a2@l.io", "email", "a3@l.io"))).CustomerID
	b := ingest1(t, db, ws, track("b", ids("phone", "+14155550155"))).CustomerID
	c := ingest1(t, db, ws, track("c", ids("email", "c1@l.io"))).CustomerID
	if _, err := db.UpdateIdentityRules(ctx, ws, c360.IdentityRules{Limits: map[string]int{"user_id": 1, "email": 2}, DefaultLimit: 5}); err != nil {
		t.Fatal(err)
	}
	if _, err := db.MergeCustomers(ctx, ws, a, b, false, "agent", "same person"); err != nil {
		t.Errorf("merge adding no email to a customer with 3 (limit 2): %v, want it allowed", err)
	}
	_, err := db.MergeCustomers(ctx, ws, a, c, false, "agent", "same person")
	if c360.ErrorCode(err) != c360.ECONFLICT || !strings.Contains(c360.ErrorMessage(err), "4 email identities; the limit is 2 and one customer already holds 3") {
		t.Errorf("merge adding a fourth email: %v, want CONFLICT naming 4 emails, the limit 2 and the 3 held", err)
	}
	if n := count(t, db, `SELECT count(*) FROM customers WHERE workspace_id = $1 AND id = $2 AND merged_into IS NULL`, ws, c); n != 1 {
		t.Errorf("the refused merge changed customer %d", c)
	}
}

// A merge and a split change consents, identities and traits, and their
// change rows say so in the parts those kinds record, so that a filter by
// kind (c360.Change.Includes, docs/realtime.md "Kinds") delivers them: a
// dialer watching consent learns that a merge opted a number in and that a
// split opted it out again.
func TestMergeAndSplitChangesIncludeWhatTheyChanged(t *testing.T) {
	db := pgtest.Open(t)
	ws, _, _ := pgtest.Workspace(t, db)
	ctx := context.Background()
	t0 := time.Now().Add(-time.Hour)
	const q, p = "+14155550131", "+14155550132"
	decide := func(key, phone, status string, at time.Duration) {
		ingest1(t, db, ws, consentEvent(key, phone, "sms", status, t0.Add(at)))
	}
	s := ingest1(t, db, ws, &c360.Event{Type: c360.EventIdentify, Source: "t", DedupeKey: "s", OccurredAt: t0,
		Identities: ids("user_id", "u1", "phone", q)}).CustomerID
	decide("s-stop", q, c360.ConsentOptedOut, time.Minute)
	m := ingest1(t, db, ws, &c360.Event{Type: c360.EventIdentify, Source: "t", DedupeKey: "m", OccurredAt: t0.Add(2 * time.Minute),
		Identities: ids("phone", p), Traits: map[string]any{"plan": "gold"}}).CustomerID
	decide("m-start", p, c360.ConsentOptedIn, 5*time.Minute)

	last := func(c int64) c360.Change {
		t.Helper()
		rows, err := db.ChangesAfter(ctx, []c360.Change{{WorkspaceID: ws, CustomerID: c}}, 1000)
		if err != nil || len(rows) == 0 {
			t.Fatalf("changes of %d: %v (%v)", c, rows, err)
		}
		return rows[len(rows)-1]
	}
	check := func(what string, ch c360.Change, kind string, parts map[string]string) {
		t.Helper()
		checkParts(t, what, ch, kind, parts)
	}

	// An ingest merge: M's newer opt-in wins on S.
	if got := ingest1(t, db, ws, track("link", ids("user_id", "u1", "phone", p))); got.CustomerID != s {
		t.Fatalf("linking event went to %d, want %d", got.CustomerID, s)
	}
	check("ingest merge", last(s), c360.ChangeMerged, map[string]string{
		"consents":        `[{"channel":"sms","status":"opted_in"}]`,
		"identitiesAdded": fmt.Sprintf(`[{"type":"phone","value":%q}]`, p),
		"traits":          `{"plan":"gold"}`,
	})
	if ch := last(m); ch.Kind != c360.ChangeMergedInto || ch.Includes(c360.ChangeConsent) {
		t.Errorf("merged-away change = %+v, want merged_into only", ch)
	}

	// A split gives each side its own: S is opted out again and loses the
	// plan; the new customer has the phone, its opt-in and its plan.
	res, err := db.SplitIdentity(ctx, ws, s, c360.Identity{Type: "phone", Value: p}, "agent", "two people")
	if err != nil {
		t.Fatal(err)
	}
	n := res.Split.ID
	check("split, original", last(s), c360.ChangeSplit, map[string]string{
		"consents": `[{"channel":"sms","status":"opted_out"}]`,
		"traits":   `{"plan":null}`,
	})
	check("split, new customer", last(n), c360.ChangeCreated, map[string]string{
		"consents":        `[{"channel":"sms","status":"opted_in"}]`,
		"identitiesAdded": fmt.Sprintf(`[{"type":"phone","value":%q}]`, p),
		"traits":          `{"plan":"gold"}`,
	})

	// A manual merge, forced over the split: the same parts.
	if _, err := db.MergeCustomers(ctx, ws, s, n, true, "admin", "same person after all"); err != nil {
		t.Fatal(err)
	}
	check("manual merge", last(s), c360.ChangeMerged, map[string]string{
		"consents":        `[{"channel":"sms","status":"opted_in"}]`,
		"identitiesAdded": fmt.Sprintf(`[{"type":"phone","value":%q}]`, p),
		"traits":          `{"plan":"gold"}`,
	})
	// A merge that changes no consent and no trait records neither.
	e := ingest1(t, db, ws, track("e", ids("email", "e@x.io"))).CustomerID
	f := ingest1(t, db, ws, track("f", ids("anonymous_id", "a-f"))).CustomerID
	if _, err := db.MergeCustomers(ctx, ws, e, f, false, "agent", ""); err != nil {
		t.Fatal(err)
	}
	check("merge without consents or traits", last(e), c360.ChangeMerged, map[string]string{
		"identitiesAdded": `[{"type":"anonymous_id","value":"a-f"}]`,
	})

	// The lists of changed consents are not decisions: a second split
	// still rebuilds each side's consent from its own events.
	res, err = db.SplitIdentity(ctx, ws, s, c360.Identity{Type: "phone", Value: p}, "agent", "two people")
	if err != nil {
		t.Fatal(err)
	}
	for c, want := range map[int64]string{s: c360.ConsentOptedOut, res.Split.ID: c360.ConsentOptedIn} {
		var got string
		if err := db.Pool.QueryRow(ctx, `SELECT status FROM consents WHERE workspace_id = $1 AND customer_id = $2 AND channel = 'sms'`, ws, c).Scan(&got); err != nil || got != want {
			t.Errorf("sms consent of %d after the second split = %q (%v), want %q", c, got, err, want)
		}
	}
}

// checkParts asserts the change's kind, which of the parts of consent,
// identity_added and traits its diff holds (those of parts, no other), their
// values as JSON, and that it includes each of those kinds exactly when it
// holds one of its parts.
func checkParts(t *testing.T, what string, ch c360.Change, kind string, parts map[string]string) {
	t.Helper()
	if ch.Kind != kind {
		t.Errorf("%s: kind %q, want %q", what, ch.Kind, kind)
	}
	for k, kparts := range map[string][]string{c360.ChangeConsent: {"consent", "consents"},
		c360.ChangeIdentityAdded: {"identitiesAdded"}, c360.ChangeTraits: {"traits"}} {
		includes := false
		for _, part := range kparts {
			want, ok := parts[part]
			includes = includes || ok
			if got, has := ch.Diff[part]; has != ok {
				t.Errorf("%s: diff.%s = %v, want it there: %v (diff %v)", what, part, got, ok, ch.Diff)
			} else if ok {
				if got := mustJSON(t, got); got != want {
					t.Errorf("%s: diff.%s = %s, want %s", what, part, got, want)
				}
			}
		}
		if got := ch.Includes(k); got != includes {
			t.Errorf("%s: Includes(%q) = %v, want %v (diff %v)", what, k, got, includes, ch.Diff)
		}
	}
}

// An event that merges and decides a consent itself records both: its own
// decision in consent, and the consents the merge changed in consents. A
// merge's change of another channel (whatsapp opted in) was once left out
// behind the event's decision, and a dialer watching consent never learned
// of it.
func TestAMergingEventsConsentKeepsTheMergesConsents(t *testing.T) {
	db := pgtest.Open(t)
	ws, _, _ := pgtest.Workspace(t, db)
	ctx := context.Background()
	t0 := time.Now().Add(-time.Hour)
	const q, p = "+14155550133", "+14155550134"
	s := ingest1(t, db, ws, &c360.Event{Type: c360.EventIdentify, Source: "t", DedupeKey: "s", OccurredAt: t0,
		Identities: ids("user_id", "u1", "phone", q)}).CustomerID
	m := ingest1(t, db, ws, consentEvent("m-wa", p, "whatsapp", c360.ConsentOptedIn, t0.Add(time.Minute))).CustomerID
	if m == s {
		t.Fatal("the whatsapp opt-in went to the survivor")
	}
	link := consentEvent("link-stop", p, "sms", c360.ConsentOptedOut, t0.Add(2*time.Minute))
	link.Identities = ids("user_id", "u1", "phone", p)
	if got := ingest1(t, db, ws, link).CustomerID; got != s {
		t.Fatalf("linking event went to %d, want %d", got, s)
	}
	rows, err := db.ChangesAfter(ctx, []c360.Change{{WorkspaceID: ws, CustomerID: s}}, 1000)
	if err != nil || len(rows) == 0 {
		t.Fatalf("changes of %d: %v (%v)", s, rows, err)
	}
	checkParts(t, "merging opt-out", rows[len(rows)-1], c360.ChangeMerged, map[string]string{
		"consent":         `{"channel":"sms","status":"opted_out"}`,
		"consents":        `[{"channel":"whatsapp","status":"opted_in"}]`,
		"identitiesAdded": fmt.Sprintf(`[{"type":"phone","value":%q}]`, p),
	})
	var status string
	if err := db.Pool.QueryRow(ctx, `SELECT status FROM consents WHERE workspace_id = $1 AND customer_id = $2 AND channel = 'whatsapp'`,
		ws, s).Scan(&status); err != nil || status != c360.ConsentOptedIn {
		t.Errorf("whatsapp consent of the survivor = %q (%v), want opted_in", status, err)
	}
	// The event's decision stays a decision, which a split reads: the
	// opt-out arrived with u1 too and stays with S; the whatsapp opt-in
	// arrived through the phone alone and goes with it.
	res, err := db.SplitIdentity(ctx, ws, s, c360.Identity{Type: "phone", Value: p}, "agent", "two people")
	if err != nil {
		t.Fatal(err)
	}
	n := res.Split.ID
	want := map[string]string{fmt.Sprint(s, " sms"): c360.ConsentOptedOut, fmt.Sprint(n, " whatsapp"): c360.ConsentOptedIn}
	if got := consentsOf(t, db, ws); !maps.Equal(got, want) {
		t.Errorf("consents after the split = %v, want %v", got, want)
	}
	rows, err = db.ChangesAfter(ctx, []c360.Change{{WorkspaceID: ws, CustomerID: s}, {WorkspaceID: ws, CustomerID: n}}, 1000)
	if err != nil {
		t.Fatal(err)
	}
	lastOf := map[int64]c360.Change{}
	for _, ch := range rows {
		lastOf[ch.CustomerID] = ch
	}
	checkParts(t, "split, original", lastOf[s], c360.ChangeSplit, map[string]string{
		"consents": `[{"channel":"whatsapp","status":null}]`,
	})
	checkParts(t, "split, new customer", lastOf[n], c360.ChangeCreated, map[string]string{
		"consents":        `[{"channel":"whatsapp","status":"opted_in"}]`,
		"identitiesAdded": fmt.Sprintf(`[{"type":"phone","value":%q}]`, p),
	})
}

// A merging event's own decision on a channel the merge changed leaves
// consents saying how the channel stands after the event, not before it: B
// opted SMS in, and the STOP that links B to S merges B's opt-in into S
// and then opts S out. A dialer that applies consents after consent must
// not record SMS opted in right after a STOP. A STOP older than the
// opt-in does not take effect (the newer decision wins), and consents
// says the opt-in stands.
func TestAMergingEventsConsentSettlesTheMergesConsents(t *testing.T) {
	db := pgtest.Open(t)
	// One workspace for both cases: TestLookedUpProfilePlansUseIndexes
	// plans against statistics that count the workspaces with consents.
	ws, _, _ := pgtest.Workspace(t, db)
	ctx := context.Background()
	for i, tc := range []struct {
		name     string
		stopAt   time.Duration // after t0; B opted in at t0+1m
		consents string
	}{
		{"newer stop", 2 * time.Minute, `[{"channel":"sms","status":"opted_out"}]`},
		{"older stop", 30 * time.Second, `[{"channel":"sms","status":"opted_in"}]`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t0 := time.Now().Add(-time.Hour)
			user, q, p := fmt.Sprint("u", i), fmt.Sprint("+1415555014", i), fmt.Sprint("+1415555015", i)
			s := ingest1(t, db, ws, &c360.Event{Type: c360.EventIdentify, Source: "t", DedupeKey: "s" + user, OccurredAt: t0,
				Identities: ids("user_id", user, "phone", q)}).CustomerID
			if b := ingest1(t, db, ws, consentEvent("m-sms"+user, p, "sms", c360.ConsentOptedIn, t0.Add(time.Minute))).CustomerID; b == s {
				t.Fatal("the sms opt-in went to the survivor")
			}
			link := consentEvent("link-stop"+user, p, "sms", c360.ConsentOptedOut, t0.Add(tc.stopAt))
			link.Identities = ids("user_id", user, "phone", p)
			if got := ingest1(t, db, ws, link).CustomerID; got != s {
				t.Fatalf("linking event went to %d, want %d", got, s)
			}
			rows, err := db.ChangesAfter(ctx, []c360.Change{{WorkspaceID: ws, CustomerID: s}}, 1000)
			if err != nil || len(rows) == 0 {
				t.Fatalf("changes of %d: %v (%v)", s, rows, err)
			}
			last := rows[len(rows)-1]
			checkParts(t, "merging stop", last, c360.ChangeMerged, map[string]string{
				"consent":         `{"channel":"sms","status":"opted_out"}`,
				"consents":        tc.consents,
				"identitiesAdded": fmt.Sprintf(`[{"type":"phone","value":%q}]`, p),
			})
			// What a dialer records, consent then consents, is S's consent.
			var net string
			if own, ok := last.Diff["consent"].(map[string]any); ok {
				net, _ = own["status"].(string)
			}
			if list, ok := last.Diff["consents"].([]any); ok {
				for _, e := range list {
					if e, ok := e.(map[string]any); ok && e["channel"] == "sms" {
						net, _ = e["status"].(string)
					}
				}
			}
			if got, want := consentsOf(t, db, ws)[fmt.Sprint(s, " sms")], net; got != want {
				t.Errorf("sms consent of the survivor = %q, the change says %q", got, want)
			}
		})
	}
}

// consentsOf returns the workspace's consents by "customer channel".
func consentsOf(t *testing.T, db *postgres.DB, ws int64) map[string]string {
	t.Helper()
	rows, err := db.Pool.Query(context.Background(), `SELECT customer_id::text || ' ' || channel, status FROM consents WHERE workspace_id = $1`, ws)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	var k, v string
	if _, err := pgx.ForEachRow(rows, []any{&k, &v}, func() error { got[k] = v; return nil }); err != nil {
		t.Fatal(err)
	}
	return got
}

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// New rules apply at once on the replica that stored them, even while
// other requests read the rules: a read that began before the update
// committed must not cache the old rules after the update forgot them.
func TestUpdatedIdentityRulesApplyAtOnceUnderConcurrentReads(t *testing.T) {
	db := pgtest.Open(t)
	ws, _, _ := pgtest.Workspace(t, db)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	probe := func() error {
		errs, err := db.Validate(ctx, ws, []*c360.Event{track("probe", ids("email", "qa@example.com"))})
		if err != nil {
			return err
		}
		return errs[0]
	}
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				_ = probe()
			}
		}()
	}
	open := c360.IdentityRules{DefaultLimit: 5}
	closed := c360.IdentityRules{DefaultLimit: 5, Blocked: []string{"qa@example.com"}}
	stale := 0
	for range 300 {
		if _, err := db.UpdateIdentityRules(ctx, ws, open); err != nil {
			t.Fatal(err)
		}
		if _, err := db.UpdateIdentityRules(ctx, ws, closed); err != nil {
			t.Fatal(err)
		}
		if err := probe(); c360.ErrorCode(err) != c360.EINVALID {
			stale++
		}
	}
	cancel()
	wg.Wait()
	if stale > 0 {
		t.Errorf("%d of 300 probes right after blocking the address passed, want none", stale)
	}
}
