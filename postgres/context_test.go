package postgres_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/c360dev/c360"
	"github.com/c360dev/c360/internal/pgtest"
	"github.com/c360dev/c360/postgres"
)

// seededContext is a customer with a history touching every part of a context.
type seededContext struct {
	ws, jane, merged int64
	t0               time.Time
}

// seedContext gives Jane: identities (email, phone, user_id and an
// anonymous_id from a merged visitor), traits, events of three names (and
// one older than the event window), an SMS thread of seven messages, a
// WhatsApp thread, a closed chat, an sms opt-out, and a merge.
func seedContext(t *testing.T, db *postgres.DB) seededContext {
	t.Helper()
	ctx := context.Background()
	ws, _, _ := pgtest.Workspace(t, db)
	t0 := time.Now().UTC().Add(-24 * time.Hour).Truncate(time.Second)
	at := func(m int) time.Time { return t0.Add(time.Duration(m) * time.Minute) }
	phone := ids("phone", "+14155550100")

	visitor := ingest1(t, db, ws, &c360.Event{Type: c360.EventPage, Name: "Pricing", Source: "test", DedupeKey: "p1",
		Identities: ids("anonymous_id", "a-77"), OccurredAt: at(0)})
	jane := ingest1(t, db, ws, &c360.Event{Type: c360.EventIdentify, Source: "test", DedupeKey: "i1", OccurredAt: at(1),
		Identities: ids("user_id", "u-100"),
		Traits:     map[string]any{"name": "Jane Doe", "email": "jane@example.com", "phone": "+14155550100", "plan": "pro"}})
	// Links the visitor to Jane: merges the visitor into Jane (the older
	// customer survives; Jane was created after the visitor, so check).
	link := ingest1(t, db, ws, &c360.Event{Type: c360.EventTrack, Name: "Signed In", Source: "test", DedupeKey: "l1",
		OccurredAt: at(2), Identities: ids("user_id", "u-100", "anonymous_id", "a-77")})
	survivor, merged := link.CustomerID, jane.CustomerID
	if survivor == merged {
		merged = visitor.CustomerID
	}
	for i := 0; i < 3; i++ {
		ingest1(t, db, ws, &c360.Event{Type: c360.EventTrack, Name: "Order Completed", Source: "test",
			DedupeKey: fmt.Sprint("o", i), OccurredAt: at(10 + i), Identities: ids("user_id", "u-100")})
	}
	ingest1(t, db, ws, &c360.Event{Type: c360.EventTrack, Name: "Ancient", Source: "test", DedupeKey: "old",
		OccurredAt: t0.Add(-60 * 24 * time.Hour), Identities: ids("user_id", "u-100")})
	for i := 0; i < 7; i++ {
		dir := c360.DirectionInbound
		if i%2 == 1 {
			dir = c360.DirectionOutbound
		}
		ingest1(t, db, ws, &c360.Event{Type: c360.EventMessage, Source: "twilio", DedupeKey: fmt.Sprint("SM", i),
			OccurredAt: at(20 + i), Identities: phone,
			Message: &c360.MessageInput{Channel: "sms", Direction: dir, Body: fmt.Sprintf("sms %d", i), ProviderID: fmt.Sprint("SM", i), Status: "received"}})
	}
	ingest1(t, db, ws, &c360.Event{Type: c360.EventMessage, Source: "twilio", DedupeKey: "WA1", OccurredAt: at(30),
		Identities: phone, Consent: &c360.ConsentInput{Channel: "whatsapp", Status: c360.ConsentOptedIn},
		Message: &c360.MessageInput{Channel: "whatsapp", Direction: "inbound", Body: "where is my order?", ProviderID: "WA1", Status: "received"}})
	ingest1(t, db, ws, &c360.Event{Type: c360.EventTrack, Name: "SMS Stop", Source: "twilio", DedupeKey: "stop", OccurredAt: at(31),
		Identities: phone, Consent: &c360.ConsentInput{Channel: "sms", Status: c360.ConsentOptedOut}})
	chat := ingest1(t, db, ws, &c360.Event{Type: c360.EventMessage, Source: "chatbot", DedupeKey: "c1", OccurredAt: at(32),
		Identities: phone, Message: &c360.MessageInput{Channel: "chat", Direction: "inbound", Body: "old chat", Status: "received"}})
	if _, err := db.Pool.Exec(ctx, `UPDATE conversations SET status = 'closed' WHERE workspace_id = $1 AND customer_id = $2 AND channel = 'chat'`,
		ws, chat.CustomerID); err != nil {
		t.Fatal(err)
	}
	return seededContext{ws: ws, jane: survivor, merged: merged, t0: t0}
}

func TestCustomerContextAssembly(t *testing.T) {
	counter := &pgtest.StatementCounter{}
	db := pgtest.Open(t, counter.Install)
	ctx := context.Background()
	s := seedContext(t, db)
	now := time.Now().UTC()

	if _, err := db.RecordObservation(ctx, s.ws, c360.ObservationInput{CustomerID: s.jane, Text: "prefers WhatsApp after 6pm",
		Source: "bot", RecordedBy: "key a", RecordedByRole: c360.RoleAssistant}); err != nil {
		t.Fatal(err)
	}
	// Recorded on the merged-away id: lands on the survivor.
	verified, err := db.RecordObservation(ctx, s.ws, c360.ObservationInput{CustomerID: s.merged, Text: "VIP since 2019",
		RecordedBy: "key b", RecordedByRole: c360.RoleAgent})
	if err != nil {
		t.Fatal(err)
	}
	if verified.CustomerID != s.jane {
		t.Errorf("observation on merged id %d: customer = %d, want the survivor %d", s.merged, verified.CustomerID, s.jane)
	}
	if _, err := db.VerifyObservation(ctx, s.ws, verified.ID, true, "key agent"); err != nil {
		t.Fatal(err)
	}

	for _, ref := range []c360.CustomerRef{
		{ID: s.jane},
		{ID: s.merged},
		{Identity: &c360.Identity{Type: "phone", Value: "(415) 555-0100"}},
		{Identity: &c360.Identity{Type: "email", Value: " Jane@Example.com "}},
	} {
		counter.Reset()
		cc, err := db.CustomerContext(ctx, s.ws, ref, now, c360.DefaultContextLimits)
		if err != nil {
			t.Fatalf("context of %+v: %v", ref, err)
		}
		if n := counter.Count(); n != 1 {
			t.Errorf("context of %+v took %d statements, want 1:\n%s", ref, n, counter.Statements())
		}
		if cc.Customer.ID != s.jane {
			t.Fatalf("context of %+v: customer %d, want %d", ref, cc.Customer.ID, s.jane)
		}
	}

	cc, err := db.CustomerContext(ctx, s.ws, c360.CustomerRef{ID: s.jane}, now, c360.DefaultContextLimits)
	if err != nil {
		t.Fatal(err)
	}
	var idents []string
	for _, id := range cc.Identities {
		idents = append(idents, id.Type+"="+id.Value)
	}
	if got, want := strings.Join(idents, " "), "anonymous_id=a-77 email=jane@example.com phone=+14155550100 user_id=u-100"; got != want {
		t.Errorf("identities = %s, want %s", got, want)
	}
	if cc.Customer.Traits["plan"] != "pro" {
		t.Errorf("traits = %v, want plan pro", cc.Customer.Traits)
	}
	var consents []string
	for _, k := range cc.Consents {
		consents = append(consents, k.Channel+"="+k.Status)
	}
	if got, want := strings.Join(consents, " "), "sms=opted_out whatsapp=opted_in"; got != want {
		t.Errorf("consents = %s, want %s", got, want)
	}

	// Open conversations only, most recent first, each with its last five
	// messages oldest first.
	if len(cc.Conversations) != 2 {
		t.Fatalf("open conversations = %d, want 2 (the chat is closed)", len(cc.Conversations))
	}
	if cc.Conversations[0].Channel != "whatsapp" || cc.Conversations[1].Channel != "sms" {
		t.Errorf("conversation order = %s, %s; want whatsapp, sms", cc.Conversations[0].Channel, cc.Conversations[1].Channel)
	}
	var bodies []string
	for _, m := range cc.Conversations[1].Messages {
		bodies = append(bodies, m.Body)
	}
	if got, want := strings.Join(bodies, ","), "sms 2,sms 3,sms 4,sms 5,sms 6"; got != want {
		t.Errorf("sms tail = %s, want %s", got, want)
	}
	if m := cc.Conversations[1].Messages[1]; m.Direction != c360.DirectionOutbound || m.CustomerID != s.jane || m.ConversationID != cc.Conversations[1].ID {
		t.Errorf("message = %+v, want outbound, of customer %d and its conversation", m, s.jane)
	}

	// Events grouped by type and name over the window, most recent first;
	// the 60-day-old event and message statuses are left out.
	var events []string
	for _, e := range cc.Events {
		events = append(events, fmt.Sprintf("%s/%s×%d", e.Type, e.Name, e.Count))
	}
	want := "message/×9 track/SMS Stop×1 track/Order Completed×3 track/Signed In×1 identify/×1 page/Pricing×1"
	if got := strings.Join(events, " "); got != want {
		t.Errorf("event summary = %s, want %s (no Ancient: it is older than the window)", got, want)
	}
	if first := cc.Events[0]; !first.LastAt.Equal(s.t0.Add(32 * time.Minute)) {
		t.Errorf("last message event at %v, want %v", first.LastAt, s.t0.Add(32*time.Minute))
	}

	// Observations: verified first.
	if len(cc.Observations) != 2 || !cc.Observations[0].Verified || cc.Observations[0].Text != "VIP since 2019" ||
		cc.Observations[0].VerifiedBy != "key agent" || cc.Observations[1].Source != "bot" {
		t.Errorf("observations = %+v, want the verified one first", cc.Observations)
	}

	// The merge that brought the visitor in.
	if len(cc.Merges) != 1 || cc.Merges[0].SurvivorID != s.jane || cc.Merges[0].MergedID != s.merged || cc.Merges[0].Identity == nil {
		t.Errorf("merges = %+v, want the merge of %d into %d with its identity", cc.Merges, s.merged, s.jane)
	}

	// Unknown customers and identities are NOT_FOUND; other workspaces' too.
	other, _, _ := pgtest.Workspace(t, db)
	for _, tc := range []struct {
		ws  int64
		ref c360.CustomerRef
	}{
		{s.ws, c360.CustomerRef{ID: 1 << 40}},
		{s.ws, c360.CustomerRef{Identity: &c360.Identity{Type: "email", Value: "nobody@example.com"}}},
		{other, c360.CustomerRef{ID: s.jane}},
		{other, c360.CustomerRef{Identity: &c360.Identity{Type: "phone", Value: "+14155550100"}}},
	} {
		if _, err := db.CustomerContext(ctx, tc.ws, tc.ref, now, c360.DefaultContextLimits); c360.ErrorCode(err) != c360.ENOTFOUND {
			t.Errorf("context of %+v in workspace %d: %v, want NOT_FOUND", tc.ref, tc.ws, err)
		}
	}
	if _, err := db.CustomerContext(ctx, s.ws, c360.CustomerRef{Identity: &c360.Identity{Type: "phone", Value: "not a phone"}}, now,
		c360.DefaultContextLimits); c360.ErrorCode(err) != c360.EINVALID {
		t.Errorf("context of an invalid phone: %v, want BAD_USER_INPUT", err)
	}
}

func TestObservations(t *testing.T) {
	db := pgtest.Open(t)
	ctx := context.Background()
	ws, _, _ := pgtest.Workspace(t, db)
	t0 := time.Date(2025, 5, 1, 12, 0, 0, 0, time.UTC)
	now := t0
	db.Now = func() time.Time { return now }
	cust := ingest1(t, db, ws, track("t1", ids("email", "obs@example.com"))).CustomerID
	version := func() int64 {
		var v int64
		if err := db.Pool.QueryRow(ctx, `SELECT version FROM customers WHERE workspace_id = $1 AND id = $2`, ws, cust).Scan(&v); err != nil {
			t.Fatal(err)
		}
		return v
	}
	in := func(text string) c360.ObservationInput {
		return c360.ObservationInput{CustomerID: cust, Text: text, RecordedBy: "key x", RecordedByRole: c360.RoleAssistant}
	}

	// Refusals write nothing.
	big := in(strings.Repeat("x", c360.MaxObservationBytes+1))
	past := in("expired already")
	past.ExpiresAt = ptr(t0.Add(-time.Minute))
	conf := in("too sure")
	conf.Confidence = ptr(1.5)
	for name, bad := range map[string]c360.ObservationInput{"4 KB + 1": big, "empty": in(""), "expired": past, "confidence": conf} {
		if _, err := db.RecordObservation(ctx, ws, bad); c360.ErrorCode(err) != c360.EINVALID {
			t.Errorf("%s: %v, want BAD_USER_INPUT", name, err)
		}
	}
	if _, err := db.RecordObservation(ctx, ws, c360.ObservationInput{CustomerID: 1 << 40, Text: "x", RecordedBy: "k", RecordedByRole: c360.RoleAgent}); c360.ErrorCode(err) != c360.ENOTFOUND {
		t.Errorf("unknown customer: %v, want NOT_FOUND", err)
	}
	v0 := version()

	// Exactly 4 KB is accepted; recording bumps the version and appends an
	// observation change, as every change of a customer does.
	exact := in(strings.Repeat("é", c360.MaxObservationBytes/2))
	exact.Confidence = ptr(0.8)
	o, err := db.RecordObservation(ctx, ws, exact)
	if err != nil {
		t.Fatalf("4 KB observation: %v", err)
	}
	if o.CustomerID != cust || o.Verified || o.RecordedBy != "key x" || o.RecordedByRole != c360.RoleAssistant ||
		!o.CreatedAt.Equal(t0) || *o.Confidence != 0.8 {
		t.Errorf("observation = %+v", o)
	}
	if v := version(); v != v0+1 {
		t.Errorf("version = %d, want %d", v, v0+1)
	}
	var kind string
	var diff map[string]any
	if err := db.Pool.QueryRow(ctx, `SELECT kind, diff FROM customer_changes WHERE workspace_id = $1 AND customer_id = $2 AND version = $3`,
		ws, cust, v0+1).Scan(&kind, &diff); err != nil {
		t.Fatal(err)
	}
	if obs, _ := diff["observation"].(map[string]any); kind != c360.ChangeObservation || obs["id"] != fmt.Sprint(o.ID) || obs["action"] != "recorded" {
		t.Errorf("change = %s %v, want observation with its id", kind, diff)
	}
	if strings.Contains(fmt.Sprint(diff), "éé") {
		t.Errorf("change diff carries the text: %v", diff)
	}

	// An observation that expires is listed until then.
	soon := in("at the airport today")
	soon.ExpiresAt = ptr(t0.Add(time.Hour))
	if _, err := db.RecordObservation(ctx, ws, soon); err != nil {
		t.Fatal(err)
	}
	list := func(at time.Time) []string {
		m, err := db.ObservationsByCustomers(ctx, ws, []int64{cust}, at, c360.MaxPage)
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, o := range m[cust] {
			out = append(out, o.Text[:2])
		}
		return out
	}
	if got := list(t0.Add(30 * time.Minute)); len(got) != 2 || got[0] != "at" {
		t.Errorf("before expiry: %v, want the newer first, both listed", got)
	}
	if got := list(t0.Add(2 * time.Hour)); len(got) != 1 {
		t.Errorf("after expiry: %v, want only the unexpired one", got)
	}

	// Verify: verified first, with who and when; unverify clears them.
	now = t0.Add(time.Minute)
	vo, err := db.VerifyObservation(ctx, ws, o.ID, true, "key agent")
	if err != nil {
		t.Fatal(err)
	}
	if !vo.Verified || vo.VerifiedBy != "key agent" || vo.VerifiedAt == nil || !vo.VerifiedAt.Equal(now) {
		t.Errorf("verified = %+v", vo)
	}
	if got := list(t0.Add(30 * time.Minute)); got[0] != "é" {
		t.Errorf("after verify: %v, want the verified one first", got)
	}
	uo, err := db.VerifyObservation(ctx, ws, o.ID, false, "key agent")
	if err != nil || uo.Verified || uo.VerifiedBy != "" || uo.VerifiedAt != nil {
		t.Errorf("unverified = %+v, %v", uo, err)
	}
	if v := version(); v != v0+4 {
		t.Errorf("version after record, record, verify, unverify = %d, want %d", v, v0+4)
	}
	other, _, _ := pgtest.Workspace(t, db)
	if _, err := db.VerifyObservation(ctx, other, o.ID, true, "k"); c360.ErrorCode(err) != c360.ENOTFOUND {
		t.Errorf("verify from another workspace: %v, want NOT_FOUND", err)
	}

	// A merge moves observations to the survivor.
	other2 := ingest1(t, db, ws, track("t2", ids("email", "obs2@example.com"))).CustomerID
	if _, err := db.RecordObservation(ctx, ws, c360.ObservationInput{CustomerID: other2, Text: "moves", RecordedBy: "k", RecordedByRole: c360.RoleAgent}); err != nil {
		t.Fatal(err)
	}
	if _, err := db.MergeCustomers(ctx, ws, cust, other2, true, "key ad0000000001", "same person"); err != nil {
		t.Fatal(err)
	}
	if got := list(t0.Add(30 * time.Minute)); len(got) != 3 {
		t.Errorf("after merge: %v, want 3 observations on the survivor", got)
	}
}

func ptr[T any](v T) *T { return &v }

// Concurrent retries of one observation (the same recorder and messageId)
// store it once: each waits for the first to commit (on the customer's row
// lock), then finds the stored row and returns it.
func TestRecordObservationConcurrentRetries(t *testing.T) {
	db := pgtest.Open(t)
	ws, _, _ := pgtest.Workspace(t, db)
	ctx := context.Background()
	cust := ingest1(t, db, ws, track("o-1", ids("email", "retry@example.com"))).CustomerID
	const n = 8
	got := make([]int64, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			o, err := db.RecordObservation(ctx, ws, c360.ObservationInput{CustomerID: cust, Text: "prefers mornings",
				RecordedBy: "key x", RecordedByRole: c360.RoleAssistant, MessageID: "m-1"})
			if o != nil {
				got[i] = o.ID
			}
			errs[i] = err
		}()
	}
	wg.Wait()
	for i := range n {
		if errs[i] != nil || got[i] != got[0] {
			t.Errorf("call %d: observation %d (%v), want %d", i, got[i], errs[i], got[0])
		}
	}
	if c := count(t, db, `SELECT count(*) FROM observations WHERE workspace_id = $1`, ws); c != 1 {
		t.Errorf("%d observations, want 1", c)
	}
	if c := count(t, db, `SELECT count(*) FROM customer_changes WHERE workspace_id = $1 AND kind = 'observation'`, ws); c != 1 {
		t.Errorf("%d observation changes, want 1", c)
	}
}
