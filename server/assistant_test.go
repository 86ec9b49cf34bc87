package server_test

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/c360dev/c360"
	"github.com/c360dev/c360/internal/pgtest"
	"github.com/c360dev/c360/server"
)

const contextQuery = `query($id: ID, $identity: IdentityInput, $budget: Int) {
	customerContext(id: $id, identity: $identity, budget: $budget) {
		customerId version traits text budget truncated
		identities { type value }
		consents { channel status }
		openConversations { channel messages { direction body } }
		recentEvents { type name count lastAt }
		observations { text verified recordedBy }
		merges { kind identity { type value } }
	} }`

type contextJSON struct {
	CustomerID string         `json:"customerId"`
	Version    int            `json:"version"`
	Traits     map[string]any `json:"traits"`
	Text       string         `json:"text"`
	Budget     int            `json:"budget"`
	Truncated  bool           `json:"truncated"`
	Identities []identityJSON `json:"identities"`
	Consents   []struct {
		Channel, Status string
	} `json:"consents"`
	OpenConversations []struct {
		Channel  string
		Messages []struct{ Direction, Body string }
	} `json:"openConversations"`
	RecentEvents []struct {
		Type  string
		Name  *string
		Count int
	} `json:"recentEvents"`
	Observations []struct {
		Text       string
		Verified   bool
		RecordedBy string
	} `json:"observations"`
	Merges []struct {
		Kind     string
		Identity *identityJSON
	} `json:"merges"`
}

func (e *secEnv) context(t *testing.T, role string, vars map[string]any) *contextJSON {
	t.Helper()
	var out struct{ CustomerContext *contextJSON }
	gql(t, e.srv, e.keys[role], contextQuery, vars).ok(t, &out)
	return out.CustomerContext
}

// TestCustomerContextByRole reads Jane's context with a key of every role:
// an assistant without the pii scope gets her email, phone and name masked
// in the structured fields and in the text block alike; the others get them
// as stored; the write key is refused.
func TestCustomerContextByRole(t *testing.T) {
	e := newSecEnv(t, server.Config{})
	gql(t, e.srv, e.keys["assistant"], `mutation($id: ID!) { recordObservation(customerId: $id, text: "wants invoices at jane@example.com", source: "bot") { id } }`,
		map[string]any{"id": e.cust}).ok(t, nil)
	byPhone := map[string]any{"identity": map[string]any{"type": "phone", "value": "(415) 555-0100"}}

	for _, role := range []string{"admin", "agent", "assistant", "assistant+pii"} {
		t.Run(role, func(t *testing.T) {
			r := gql(t, e.srv, e.keys[role], contextQuery, byPhone)
			assertNoLeak(t, r.Body)
			var out struct{ CustomerContext *contextJSON }
			r.ok(t, &out)
			cc := out.CustomerContext
			if cc == nil || cc.CustomerID != e.cust {
				t.Fatalf("context = %+v, want customer %s", cc, e.cust)
			}
			if role == "assistant" {
				for _, p := range janePII {
					if strings.Contains(r.Body, p.raw) {
						t.Errorf("assistant read %q unmasked: %s", p.raw, r.Body)
					}
					if !strings.Contains(cc.Text, p.masked) {
						t.Errorf("assistant's text lacks %q:\n%s", p.masked, cc.Text)
					}
				}
				if !slices.Contains(cc.Identities, identityJSON{"email", janeEmailMasked}) || cc.Traits["name"] != janeNameMasked {
					t.Errorf("assistant's structured context is not masked: %+v %v", cc.Identities, cc.Traits)
				}
				if cc.Observations[0].Text != "wants invoices at "+janeEmailMasked {
					t.Errorf("observation text = %q, want the email masked", cc.Observations[0].Text)
				}
				return
			}
			for _, p := range janePII {
				if !strings.Contains(cc.Text, p.raw) {
					t.Errorf("%s's text lacks %q:\n%s", role, p.raw, cc.Text)
				}
			}
			if !slices.Contains(cc.Identities, identityJSON{"phone", janePhone}) || cc.Traits["name"] != janeName {
				t.Errorf("%s's structured context is masked: %+v %v", role, cc.Identities, cc.Traits)
			}
			if cc.Observations[0].Text != "wants invoices at "+janeEmail {
				t.Errorf("observation text = %q, want it as recorded", cc.Observations[0].Text)
			}
		})
	}
	r := gql(t, e.srv, e.keys["write"], contextQuery, byPhone)
	r.wantCode(t, c360.EFORBIDDEN)
	if strings.Contains(r.Body, "Jane") || strings.Contains(r.Body, "example.com") {
		t.Errorf("refused write key read data: %s", r.Body)
	}

	// The parts: her SMS, the merge that joined her phone, the order.
	cc := e.context(t, "agent", map[string]any{"id": e.cust})
	if len(cc.OpenConversations) != 1 || cc.OpenConversations[0].Messages[0].Body != "hi, it's Jane" ||
		len(cc.Merges) != 1 || cc.Merges[0].Identity == nil || len(cc.RecentEvents) == 0 ||
		cc.Budget != 4000 || cc.Truncated || !strings.HasPrefix(cc.Text, "Customer "+e.cust+" ") {
		t.Errorf("context = %+v", cc)
	}

	// Exactly one of id and identity; a budget within bounds; no customer: null.
	for _, vars := range []map[string]any{{}, {"id": e.cust, "identity": byPhone["identity"]}, {"id": e.cust, "budget": 10}} {
		gql(t, e.srv, e.keys["agent"], contextQuery, vars).wantCode(t, c360.EINVALID)
	}
	if cc := e.context(t, "assistant", map[string]any{"identity": map[string]any{"type": "email", "value": "nobody@example.com"}}); cc != nil {
		t.Errorf("context of nobody = %+v, want null", cc)
	}
	small := e.context(t, "agent", map[string]any{"id": e.cust, "budget": 150})
	if n := len([]rune(small.Text)); n > 150 || !small.Truncated || small.Budget != 150 {
		t.Errorf("budget 150: %d characters, truncated %v:\n%s", n, small.Truncated, small.Text)
	}
}

// TestCustomerContextAudit: an assistant's read of a context is recorded
// with the parts it selected; unmasked personal data in it, as a pii read.
func TestCustomerContextAudit(t *testing.T) {
	e := newSecEnv(t, server.Config{})
	q := `query($id: ID) { customerContext(id: $id) { text identities { value } } }`
	gql(t, e.srv, e.keys["assistant"], q, map[string]any{"id": e.cust}).ok(t, nil)
	rows := e.auditLog(t, map[string]any{"a": c360.AuditCustomerRead})
	if len(rows) != 1 {
		t.Fatalf("customer.read rows = %+v, want 1", rows)
	}
	if r := rows[0]; r.Actor != "key "+prefixOf(e.keys["assistant"]) || r.CustomerID == nil || *r.CustomerID != e.cust ||
		fmt.Sprint(r.Fields) != "[customerContext.identities customerContext.text]" {
		t.Errorf("customer.read = %+v, want the assistant, customer %s, fields [customerContext.identities customerContext.text]", r, e.cust)
	}
	if got := e.auditLog(t, map[string]any{"a": c360.AuditPIIRead}); len(got) != 0 {
		t.Errorf("a masked context was recorded as a pii read: %+v", got)
	}

	gql(t, e.srv, e.keys["assistant+pii"], q, map[string]any{"id": e.cust}).ok(t, nil)
	rows = e.auditLog(t, map[string]any{"a": c360.AuditPIIRead})
	if len(rows) != 1 {
		t.Fatalf("pii.read rows = %+v, want 1", rows)
	}
	fields := fmt.Sprint(rows[0].Fields)
	for _, f := range []string{"customerContext.text.identity.email", "customerContext.text.identity.phone", "customerContext.text.traits.name", "identity.email"} {
		if !strings.Contains(fields, f) {
			t.Errorf("pii.read fields = %s, want %s among them", fields, f)
		}
	}
	if got := e.auditLog(t, map[string]any{"a": c360.AuditCustomerRead}); len(got) != 2 {
		t.Errorf("customer.read rows = %d, want 2 (one per assistant read)", len(got))
	}
}

// TestCustomerContextStatements counts the statements of customerContext:
// one, whatever is selected and however the customer is named.
func TestCustomerContextStatements(t *testing.T) {
	counter := &pgtest.StatementCounter{}
	e := newEnv(t, counter.Install)
	cust := e.identify(t, map[string]any{"identities": ids("email", "count@example.com", "phone", "+14155550111"),
		"traits": map[string]any{"name": "Count"}})
	e.track(t, map[string]any{"identities": ids("email", "count@example.com"), "event": "Viewed"})
	gql(t, e.srv, e.key, `mutation($id: ID!) { recordObservation(customerId: $id, text: "counts") { id } }`, map[string]any{"id": cust.ID}).ok(t, nil)

	for name, vars := range map[string]map[string]any{
		"by id":       {"id": cust.ID},
		"by identity": {"identity": map[string]any{"type": "phone", "value": "415-555-0111"}},
	} {
		counter.Reset()
		var out struct{ CustomerContext *contextJSON }
		gql(t, e.srv, e.key, contextQuery, vars).ok(t, &out)
		if out.CustomerContext == nil || out.CustomerContext.CustomerID != cust.ID {
			t.Fatalf("%s: context = %+v", name, out.CustomerContext)
		}
		if n := counter.Count(); n != 1 {
			t.Errorf("%s: %d statements, want 1:\n%s", name, n, counter.Statements())
		}
	}

	// Customer.observations of a page of customers: one statement more.
	counter.Reset()
	gql(t, e.srv, e.key, `{ customers(first: 50) { edges { node { id observations { text } } } } }`, nil).ok(t, nil)
	if n := counter.Count(); n != 2 {
		t.Errorf("customers with observations: %d statements, want 2:\n%s", n, counter.Statements())
	}
}

// TestRecordObservationMessageID: an assistant that retries
// recordObservation after a lost answer, with the same messageId, gets the
// stored observation back, and one observation and one change are stored;
// another messageId, or another key with the same one, records anew. A
// messageId reused with other content returns the stored observation too.
func TestRecordObservationMessageID(t *testing.T) {
	e := newSecEnv(t, server.Config{})
	record := `mutation($id: ID!, $text: String!, $m: String) {
		recordObservation(customerId: $id, text: $text, messageId: $m) { id text } }`
	rec := func(role, text, messageID string) (id, stored string) {
		t.Helper()
		var out struct{ RecordObservation struct{ ID, Text string } }
		gql(t, e.srv, e.keys[role], record, map[string]any{"id": e.cust, "text": text, "m": messageID}).ok(t, &out)
		return out.RecordObservation.ID, out.RecordObservation.Text
	}
	stored := func() (observations, changes int) {
		t.Helper()
		if err := e.db.Pool.QueryRow(context.Background(), `SELECT count(*) FROM customer_changes
			WHERE workspace_id = $1 AND kind = 'observation'`, e.ws).Scan(&changes); err != nil {
			t.Fatal(err)
		}
		return count(t, e.db, "observations", e.ws), changes
	}
	obs0, changes0 := stored()

	first, _ := rec("assistant", "prefers WhatsApp after 6pm", "turn-17")
	again, text := rec("assistant", "prefers WhatsApp after 6pm", "turn-17")
	if again != first {
		t.Errorf("retry returned observation %s, want the stored %s", again, first)
	}
	if o, c := stored(); o != obs0+1 || c != changes0+1 {
		t.Errorf("after a retry: %d observations, %d changes; want %d, %d", o, c, obs0+1, changes0+1)
	}
	// Reused with other content: the stored one, unchanged.
	if id, text2 := rec("assistant", "prefers SMS", "turn-17"); id != first || text2 != text {
		t.Errorf("messageId reused with other text: observation %s %q, want the stored %s %q", id, text2, first, text)
	}
	// Another messageId, another key, no messageId: each records anew.
	other, _ := rec("assistant", "prefers WhatsApp after 6pm", "turn-18")
	agents, _ := rec("agent", "prefers WhatsApp after 6pm", "turn-17")
	plain1, _ := rec("assistant", "no id", "")
	plain2, _ := rec("assistant", "no id", "")
	if ids := []string{first, other, agents, plain1, plain2}; len(slices.Compact(slices.Sorted(slices.Values(ids)))) != len(ids) {
		t.Errorf("observations %v, want five different ones", ids)
	}
	if o, c := stored(); o != obs0+5 || c != changes0+5 {
		t.Errorf("%d observations, %d changes; want %d, %d", o, c, obs0+5, changes0+5)
	}
	gql(t, e.srv, e.keys["assistant"], record, map[string]any{"id": e.cust, "text": "x", "m": strings.Repeat("m", 257)}).
		wantCode(t, c360.EINVALID)
}

// A retry of recordObservation (the same key and messageId) is answered
// with the stored observation whatever it says, as the schema promises,
// before anything else of it is checked: after the observation's
// expiresAt passed (the retry sends the same, now past, expiresAt), naming
// a customer that does not exist, with a text or confidence that would be
// refused. Before, the input was validated and the customer locked first:
// such retries got BAD_USER_INPUT "expiresAt must be in the future" or
// NOT_FOUND. Concurrent retries still store one observation.
func TestRecordObservationRetryIsAnsweredWhateverItSays(t *testing.T) {
	e := newSecEnv(t, server.Config{})
	ctx := context.Background()
	const record = `mutation($id: ID!, $text: String!, $c: Float, $m: String, $x: Time) {
		recordObservation(customerId: $id, text: $text, confidence: $c, messageId: $m, expiresAt: $x) { id customerId text } }`
	stored := func() (observations, changes, version int) {
		t.Helper()
		if err := e.db.Pool.QueryRow(ctx, `SELECT (SELECT count(*) FROM observations WHERE workspace_id = $1),
			(SELECT count(*) FROM customer_changes WHERE workspace_id = $1 AND kind = 'observation'),
			(SELECT version FROM customers WHERE workspace_id = $1 AND id = $2)`, e.ws, e.cust).Scan(&observations, &changes, &version); err != nil {
			t.Fatal(err)
		}
		return
	}
	type obs struct{ ID, CustomerID, Text string }
	expires := time.Now().Add(time.Hour).UTC().Truncate(time.Second)
	var first struct{ RecordObservation obs }
	gql(t, e.srv, e.keys["assistant"], record, map[string]any{"id": e.cust, "text": "in a call", "m": "exp-1",
		"x": expires.Format(time.RFC3339)}).ok(t, &first)
	// The hour passes.
	past := time.Now().Add(-time.Minute).UTC().Truncate(time.Second)
	if _, err := e.db.Pool.Exec(ctx, `UPDATE observations SET expires_at = $2 WHERE workspace_id = $1 AND message_id = 'exp-1'`, e.ws, past); err != nil {
		t.Fatal(err)
	}
	o0, c0, v0 := stored()
	for _, tc := range []struct {
		name string
		vars map[string]any
	}{
		{"after its expiresAt passed", map[string]any{"id": e.cust, "text": "in a call", "x": past.Format(time.RFC3339)}},
		{"naming a customer that does not exist", map[string]any{"id": "987654321", "text": "in a call"}},
		{"with an empty text", map[string]any{"id": e.cust, "text": ""}},
		{"with a text over 4096 bytes", map[string]any{"id": e.cust, "text": strings.Repeat("x", 4097)}},
		{"with a confidence over 1", map[string]any{"id": e.cust, "text": "in a call", "c": 1.5}},
	} {
		tc.vars["m"] = "exp-1"
		var out struct{ RecordObservation obs }
		r := gql(t, e.srv, e.keys["assistant"], record, tc.vars)
		if r.code() != "" {
			t.Errorf("retry %s: %s, want the stored observation", tc.name, r.Body)
			continue
		}
		r.ok(t, &out)
		if out.RecordObservation != first.RecordObservation {
			t.Errorf("retry %s: %+v, want the stored %+v", tc.name, out.RecordObservation, first.RecordObservation)
		}
	}
	if o, c, v := stored(); o != o0 || c != c0 || v != v0 {
		t.Errorf("retries changed the store: %d observations, %d changes, version %d; want %d, %d, %d", o, c, v, o0, c0, v0)
	}
	// A new messageId is validated as ever.
	gql(t, e.srv, e.keys["assistant"], record, map[string]any{"id": e.cust, "text": "new", "m": "exp-2",
		"x": past.Format(time.RFC3339)}).wantCode(t, c360.EINVALID)
	gql(t, e.srv, e.keys["assistant"], record, map[string]any{"id": "987654321", "text": "new", "m": "exp-2"}).wantCode(t, c360.ENOTFOUND)

	// 20 concurrent calls with one new messageId, on two customers: one
	// observation, one change, one id.
	other := fmt.Sprint(ingest(t, e.db, e.ws, []c360.Identity{{Type: "email", Value: "other.retry@example.com"}}, nil))
	o0, c0, _ = stored()
	ids := make([]string, 20)
	var wg sync.WaitGroup
	for i := range ids {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cust := e.cust
			if i%2 == 1 {
				cust = other
			}
			var out struct{ RecordObservation obs }
			gql(t, e.srv, e.keys["assistant"], record, map[string]any{"id": cust, "text": "same", "m": "conc-1"}).ok(t, &out)
			ids[i] = out.RecordObservation.ID
		}()
	}
	wg.Wait()
	if len(slices.Compact(slices.Sorted(slices.Values(ids)))) != 1 {
		t.Errorf("concurrent retries returned observations %v, want one", ids)
	}
	if o, c, _ := stored(); o != o0+1 || c != c0+1 {
		t.Errorf("20 concurrent calls stored %d observations, %d changes; want 1, 1", o-o0, c-c0)
	}
}

// verifyObservation that leaves the flag as it is changes nothing: the
// observation is returned as it is, with the first verification's
// verifiedBy and verifiedAt, no change is recorded and the version stays.
// Before, each call recorded a change, bumped the version, woke
// subscribers and overwrote verifiedBy and verifiedAt.
func TestVerifyObservationInItsStateChangesNothing(t *testing.T) {
	e := newSecEnv(t, server.Config{})
	ctx := context.Background()
	stored := func() (changes, version int) {
		t.Helper()
		if err := e.db.Pool.QueryRow(ctx, `SELECT (SELECT count(*) FROM customer_changes WHERE workspace_id = $1 AND kind = 'observation'),
			(SELECT version FROM customers WHERE workspace_id = $1 AND id = $2)`, e.ws, e.cust).Scan(&changes, &version); err != nil {
			t.Fatal(err)
		}
		return
	}
	var rec struct{ RecordObservation struct{ ID string } }
	gql(t, e.srv, e.keys["agent"], `mutation($id: ID!) { recordObservation(customerId: $id, text: "prefers email") { id } }`,
		map[string]any{"id": e.cust}).ok(t, &rec)
	type state struct {
		Verified   bool
		VerifiedBy *string
		VerifiedAt *string
	}
	verify := func(role string, v bool) state {
		t.Helper()
		var out struct{ VerifyObservation state }
		gql(t, e.srv, e.keys[role], `mutation($id: ID!, $v: Boolean!) { verifyObservation(id: $id, verified: $v) { verified verifiedBy verifiedAt } }`,
			map[string]any{"id": rec.RecordObservation.ID, "v": v}).ok(t, &out)
		return out.VerifyObservation
	}
	c0, v0 := stored()
	first := verify("agent", true)
	if c, v := stored(); !first.Verified || c != c0+1 || v != v0+1 {
		t.Fatalf("first verification: %+v, %d changes, version +%d; want verified, 1 change, +1", first, c-c0, v-v0)
	}
	for _, role := range []string{"agent", "admin", "agent"} {
		time.Sleep(5 * time.Millisecond)
		if again := verify(role, true); !again.Verified || *again.VerifiedBy != *first.VerifiedBy || *again.VerifiedAt != *first.VerifiedAt {
			t.Errorf("verified again by %s: by %s at %s, want it as first verified: by %s at %s",
				role, *again.VerifiedBy, *again.VerifiedAt, *first.VerifiedBy, *first.VerifiedAt)
		}
	}
	if c, v := stored(); c != c0+1 || v != v0+1 {
		t.Errorf("verified 3 times more: %d changes, version +%d; want 1, +1", c-c0, v-v0)
	}
	if un := verify("agent", false); un.Verified || un.VerifiedBy != nil || un.VerifiedAt != nil {
		t.Errorf("unverified: %+v", un)
	}
	verify("agent", false)
	if c, v := stored(); c != c0+2 || v != v0+2 {
		t.Errorf("unverified twice: %d changes, version +%d; want 2, +2", c-c0, v-v0)
	}
}

// A NUL character in an observation's text or source is refused naming the
// field, and nothing changes. The source's was refused as "text with a NUL
// character", by the database.
func TestObservationNULRefusalNamesTheField(t *testing.T) {
	e := newSecEnv(t, server.Config{})
	const record = `mutation($id: ID!, $text: String!, $src: String) {
		recordObservation(customerId: $id, text: $text, source: $src) { id } }`
	for _, tc := range []struct {
		field string
		vars  map[string]any
	}{
		{"text", map[string]any{"id": e.cust, "text": "a\x00b"}},
		{"source", map[string]any{"id": e.cust, "text": "ok", "src": "bot\x00"}},
	} {
		r := gql(t, e.srv, e.keys["assistant"], record, tc.vars)
		want := tc.field + ` holds a NUL character (\u0000), which cannot be stored`
		if r.code() != c360.EINVALID || r.Errors[0].Message != want {
			t.Errorf("NUL in %s: %s, want BAD_USER_INPUT %q", tc.field, r.Body, want)
		}
	}
	if n := count(t, e.db, "observations", e.ws); n != 0 {
		t.Errorf("%d observations stored, want 0", n)
	}
}

// TestObservationAPI: who may record and verify, size and expiry, and the
// order they are listed in.
func TestObservationAPI(t *testing.T) {
	e := newSecEnv(t, server.Config{})
	record := `mutation($id: ID!, $text: String!, $c: Float, $x: Time) {
		recordObservation(customerId: $id, text: $text, source: "test", confidence: $c, expiresAt: $x) {
			id customerId text source confidence recordedBy recordedByRole verified verifiedBy createdAt expiresAt } }`
	type obsJSON struct {
		ID, CustomerID, Text, RecordedBy, RecordedByRole string
		Source                                           *string
		Confidence                                       *float64
		Verified                                         bool
		VerifiedBy                                       *string
		ExpiresAt                                        *string
	}
	rec := func(role, text string, extra map[string]any) *response {
		vars := map[string]any{"id": e.cust, "text": text}
		for k, v := range extra {
			vars[k] = v
		}
		return gql(t, e.srv, e.keys[role], record, vars)
	}
	var first struct{ RecordObservation obsJSON }
	rec("assistant", "prefers WhatsApp after 6pm", map[string]any{"c": 0.7}).ok(t, &first)
	o := first.RecordObservation
	if o.CustomerID != e.cust || o.RecordedBy != "key "+prefixOf(e.keys["assistant"]) || o.RecordedByRole != "ASSISTANT" ||
		o.Verified || o.VerifiedBy != nil || o.Source == nil || *o.Source != "test" || o.Confidence == nil || *o.Confidence != 0.7 {
		t.Errorf("recorded = %+v", o)
	}
	rec("agent", "agent note", nil).ok(t, nil)
	rec("admin", "admin note", nil).ok(t, nil)
	rec("write", "write key note", nil).wantCode(t, c360.EFORBIDDEN)
	rec("assistant", strings.Repeat("x", 4097), nil).wantCode(t, c360.EINVALID)
	rec("assistant", strings.Repeat("x", 4096), nil).ok(t, nil)
	rec("assistant", "", nil).wantCode(t, c360.EINVALID)
	rec("assistant", "sure", map[string]any{"c": 1.5}).wantCode(t, c360.EINVALID)
	rec("assistant", "past", map[string]any{"x": time.Now().Add(-time.Minute).Format(time.RFC3339)}).wantCode(t, c360.EINVALID)
	gql(t, e.srv, e.keys["assistant"], record, map[string]any{"id": "999999999", "text": "nobody"}).wantCode(t, c360.ENOTFOUND)
	rec("assistant", "on the phone right now", map[string]any{"x": time.Now().Add(1500 * time.Millisecond).Format(time.RFC3339Nano)}).ok(t, nil)

	verify := `mutation($id: ID!, $v: Boolean!) { verifyObservation(id: $id, verified: $v) { id verified verifiedBy } }`
	for _, role := range []string{"assistant", "assistant+pii", "write"} {
		gql(t, e.srv, e.keys[role], verify, map[string]any{"id": o.ID, "v": true}).wantCode(t, c360.EFORBIDDEN)
	}
	var v struct{ VerifyObservation obsJSON }
	gql(t, e.srv, e.keys["agent"], verify, map[string]any{"id": o.ID, "v": true}).ok(t, &v)
	if !v.VerifyObservation.Verified || v.VerifyObservation.VerifiedBy == nil || *v.VerifyObservation.VerifiedBy != "key "+prefixOf(e.keys["agent"]) {
		t.Errorf("verified = %+v", v.VerifyObservation)
	}
	gql(t, e.srv, e.keys["agent"], verify, map[string]any{"id": "999999999", "v": true}).wantCode(t, c360.ENOTFOUND)

	list := func() []string {
		var out struct {
			Customer struct{ Observations []obsJSON }
		}
		gql(t, e.srv, e.keys["assistant"], `query($id: ID!) { customer(id: $id) { observations { text verified } } }`,
			map[string]any{"id": e.cust}).ok(t, &out)
		var texts []string
		for _, o := range out.Customer.Observations {
			texts = append(texts, o.Text[:min(len(o.Text), 12)])
		}
		return texts
	}
	got := list()
	if len(got) != 5 || got[0] != "prefers What" || got[1] != "on the phone" {
		t.Errorf("observations = %q, want 5, the verified one first, then newest first", got)
	}
	time.Sleep(1600 * time.Millisecond)
	if got := list(); len(got) != 4 || slices.Contains(got, "on the phone") {
		t.Errorf("after expiry: %q, want the expired one hidden", got)
	}
	cc := e.context(t, "assistant", map[string]any{"id": e.cust})
	if len(cc.Observations) != 4 || !cc.Observations[0].Verified || !strings.Contains(cc.Text, "[verified] prefers WhatsApp after 6pm") {
		t.Errorf("context observations = %+v\n%s", cc.Observations, cc.Text)
	}
}

// TestAssistantLiveContext: an assistant subscribes to a customer's changes,
// filtered to the kinds that change its context, and receives a new
// message, a consent change, a merge and an observation without polling;
// the other kinds are filtered out.
func TestAssistantLiveContext(t *testing.T) {
	e := newRTEnv(t, rtOptions{})
	ctx := context.Background()
	slug := workspaceSlug(t, e)
	key, _, err := e.db.CreateAPIKey(ctx, slug, c360.RoleAssistant, nil)
	if err != nil {
		t.Fatal(err)
	}
	phone := []c360.Identity{{Type: "phone", Value: "+14155550122"}}
	cust := ingest(t, e.db, e.ws, phone, map[string]any{"name": "Live"})

	c := dialWS(t, wsURL(e.srv), "graphql-transport-ws", nil)
	c.init(key)
	c.subscribe("1", `subscription($id: ID!, $kinds: [String!]) { customerChanged(id: $id, kinds: $kinds) { kind version customerId diff } }`,
		map[string]any{"id": fmt.Sprint(cust), "kinds": []string{"message", "consent", "merged", "merged_into", "observation"}})
	now := time.Now().UTC()
	send := func(ev *c360.Event) {
		t.Helper()
		ev.Source, ev.DedupeKey, ev.OccurredAt, ev.ReceivedAt = "test", randomID(), now, now
		if _, err := e.db.Ingest(ctx, e.ws, []*c360.Event{ev}); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "the subscription to start", func() bool { return e.hub.Stats().Streams > 0 })
	send(&c360.Event{Type: c360.EventIdentify, Identities: phone, Traits: map[string]any{"plan": "gold"}}) // traits: filtered out
	send(&c360.Event{Type: c360.EventMessage, Identities: phone,
		Message: &c360.MessageInput{Channel: "whatsapp", Direction: "inbound", Body: "is it shipped?", Status: "received"}})
	send(&c360.Event{Type: c360.EventTrack, Name: "Opt Out", Identities: phone, Consent: &c360.ConsentInput{Channel: "sms", Status: c360.ConsentOptedOut}})
	other := ingest(t, e.db, e.ws, email("live.other@example.com"), nil)
	if _, err := e.db.MergeCustomers(ctx, e.ws, cust, other, true, "admin", "same person"); err != nil {
		t.Fatal(err)
	}
	if _, err := e.db.RecordObservation(ctx, e.ws, c360.ObservationInput{CustomerID: cust, Text: "asked about shipping",
		RecordedBy: "key x", RecordedByRole: c360.RoleAssistant}); err != nil {
		t.Fatal(err)
	}

	var kinds []string
	for len(kinds) < 4 {
		ch := c.nextChange("1")
		if ch.CustomerID != fmt.Sprint(cust) {
			t.Fatalf("change of customer %s, want %d", ch.CustomerID, cust)
		}
		kinds = append(kinds, ch.Kind)
	}
	if got, want := strings.Join(kinds, " "), "message consent merged observation"; got != want {
		t.Errorf("kinds received = %s, want %s (traits filtered out)", got, want)
	}
}

// workspaceSlug returns the slug of the environment's workspace.
func workspaceSlug(t *testing.T, e *rtEnv) string {
	t.Helper()
	var slug string
	if err := e.db.Pool.QueryRow(context.Background(), `SELECT slug FROM workspaces WHERE id = $1`, e.ws).Scan(&slug); err != nil {
		t.Fatal(err)
	}
	return slug
}

// What an assistant reads through a subscription is audited as what it
// reads through a query: every change or message delivered is a
// customer.read of its customer, naming the subscription, for each
// subscriber (the two subscriptions of one key below share their renders).
func TestAssistantSubscriptionReadsAreAudited(t *testing.T) {
	e := newRTEnv(t, rtOptions{audit: true})
	ctx := context.Background()
	key, _, err := e.db.CreateAPIKey(ctx, workspaceSlug(t, e), c360.RoleAssistant, nil)
	if err != nil {
		t.Fatal(err)
	}
	phone := []c360.Identity{{Type: "phone", Value: "+14155550123"}}
	cust := ingest(t, e.db, e.ws, phone, map[string]any{"plan": "pro"})
	c := dialWS(t, wsURL(e.srv), "graphql-transport-ws", nil)
	c.init(key)
	vars := map[string]any{"id": fmt.Sprint(cust)}
	c.subscribe("m", `subscription Bodies($id: ID) { conversationMessages(customerId: $id) { body } }`, vars)
	c.subscribe("d", `subscription Diffs($id: ID!) { customerChanged(id: $id) { kind diff } }`, vars)
	c.subscribe("d2", `subscription Diffs($id: ID!) { customerChanged(id: $id) { kind diff } }`, vars)
	waitFor(t, "the subscriptions to start", func() bool { return e.hub.Stats().Streams >= 3 })
	now := time.Now().UTC()
	if _, err := e.db.Ingest(ctx, e.ws, []*c360.Event{{Type: c360.EventMessage, Identities: phone,
		Message: &c360.MessageInput{Channel: "sms", Direction: "inbound", Body: "my order 1234 is late", Status: "received"},
		Source:  "test", DedupeKey: randomID(), OccurredAt: now, ReceivedAt: now}}); err != nil {
		t.Fatal(err)
	}
	got := map[string]bool{}
	for len(got) < 3 {
		got[c.read().ID] = true
	}
	if err := e.audit.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	entries, _, _, err := e.db.FindAuditEntries(ctx, e.ws, c360.AuditFilter{First: 100, Action: c360.AuditCustomerRead})
	if err != nil {
		t.Fatal(err)
	}
	reads := map[string]int{}
	for _, a := range entries {
		if a.CustomerID != cust {
			t.Errorf("audit entry of customer %d, want %d: %+v", a.CustomerID, cust, a)
		}
		reads[strings.Join(a.Fields, ",")+" "+fmt.Sprint(a.Detail["operation"])]++
	}
	if want := map[string]int{"conversationMessages Bodies": 1, "customerChanged Diffs": 2}; fmt.Sprint(reads) != fmt.Sprint(want) {
		t.Errorf("customer.read entries = %v, want %v", reads, want)
	}
}

// A subscription payload rendered once and shared by several keys (same
// role, scopes and operation) is a read of personal data by each of them:
// every key that received it has its own pii.read, not only the key whose
// subscription rendered it.
func TestSharedSubscriptionPayloadIsAuditedForEveryKey(t *testing.T) {
	e := newRTEnv(t, rtOptions{audit: true})
	ctx := context.Background()
	var prefixes []string
	var clients []*wsClient
	phone := []c360.Identity{{Type: "phone", Value: "+14155550124"}}
	cust := ingest(t, e.db, e.ws, phone, map[string]any{"plan": "pro"})
	for _, id := range []string{"a", "b"} {
		key, info, err := e.db.CreateAPIKey(ctx, workspaceSlug(t, e), c360.RoleAgent, nil)
		if err != nil {
			t.Fatal(err)
		}
		prefixes = append(prefixes, info.Prefix)
		c := dialWS(t, wsURL(e.srv), "graphql-transport-ws", nil)
		c.init(key)
		c.subscribe(id, `subscription Diffs($id: ID!) { customerChanged(id: $id) { kind diff } }`, map[string]any{"id": fmt.Sprint(cust)})
		clients = append(clients, c)
	}
	waitFor(t, "the subscriptions to start", func() bool { return e.hub.Stats().Streams >= 2 })
	ingest(t, e.db, e.ws, append(phone, c360.Identity{Type: "email", Value: "ann@example.com"}), map[string]any{"name": "Ann Lee"})
	for _, c := range clients {
		if m := c.read(); !strings.Contains(string(m.Payload), "ann@example.com") {
			t.Fatalf("payload %s, want the change unmasked", m.Payload)
		}
	}
	if err := e.audit.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	entries, _, _, err := e.db.FindAuditEntries(ctx, e.ws, c360.AuditFilter{First: 100, Action: c360.AuditPIIRead})
	if err != nil {
		t.Fatal(err)
	}
	by := map[string]bool{}
	for _, a := range entries {
		if a.CustomerID == cust && slices.Contains(a.Fields, "diff.traits.name") && slices.Contains(a.Fields, "diff.identitiesAdded.value") {
			by[a.Actor] = true
		}
	}
	for _, p := range prefixes {
		if !by["key "+p] {
			t.Errorf("no pii.read of the shared payload by key %s: entries by %v", p, by)
		}
	}
}

// TestDocsRecordObservationExample runs the recordObservation example of
// docs/assistants.md, as printed there, with an assistant key: its
// expiresAt is to be in the future, not refused as past.
func TestDocsRecordObservationExample(t *testing.T) {
	doc, err := os.ReadFile("../docs/assistants.md")
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(doc), "## Observations\n\n```graphql\n")
	if !ok {
		t.Fatal("docs/assistants.md: no ## Observations graphql block")
	}
	example, _, ok := strings.Cut(rest, "\nmutation { verifyObservation")
	if !ok || !strings.Contains(example, `customerId: "1"`) {
		t.Fatalf("docs/assistants.md: the recordObservation example is not where it was:\n%s", example)
	}
	e := newSecEnv(t, server.Config{})
	query := strings.Replace(example, `customerId: "1"`, fmt.Sprintf("customerId: %q", e.cust), 1)
	var out struct{ RecordObservation struct{ ExpiresAt *string } }
	gql(t, e.srv, e.keys["assistant"], query, nil).ok(t, &out)
	if out.RecordObservation.ExpiresAt == nil {
		t.Errorf("expiresAt not recorded")
	}
}
