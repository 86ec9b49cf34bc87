package postgres_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/c360dev/c360"
	"github.com/c360dev/c360/internal/pgtest"
	"github.com/c360dev/c360/postgres"
)

// TraitsIfAbsent fill a trait only when the customer has no usable value.
func TestIngestTraitsIfAbsent(t *testing.T) {
	db := pgtest.Open(t)
	ws, _, _ := pgtest.Workspace(t, db)
	ctx := context.Background()
	phone := ids("phone", "+14155550160")
	msg := func(key, name string) *c360.Event {
		return &c360.Event{Type: c360.EventMessage, Source: "test", DedupeKey: key, Identities: phone,
			TraitsIfAbsent: map[string]any{"name": name},
			Message:        &c360.MessageInput{Channel: "sms", Direction: "inbound", Body: "hi", ProviderID: key, Status: "received"}}
	}
	r := ingest1(t, db, ws, msg("m1", "First"))
	ingest1(t, db, ws, msg("m2", "Second"))
	c, _ := db.FindCustomerByID(ctx, ws, r.CustomerID)
	if c.Traits["name"] != "First" {
		t.Errorf("name = %v, want First", c.Traits["name"])
	}
	// An empty name counts as absent.
	ingest1(t, db, ws, &c360.Event{Type: c360.EventIdentify, Source: "test", DedupeKey: "i1", Identities: phone,
		Traits: map[string]any{"name": ""}})
	ingest1(t, db, ws, msg("m3", "Third"))
	if c, _ = db.FindCustomerByID(ctx, ws, r.CustomerID); c.Traits["name"] != "Third" {
		t.Errorf("name after an empty one = %v, want Third", c.Traits["name"])
	}
	// A trait given outright in the same event wins over the if-absent one.
	ev := msg("m4", "Fourth")
	ev.Traits = map[string]any{"name": "Given"}
	ingest1(t, db, ws, ev)
	if c, _ = db.FindCustomerByID(ctx, ws, r.CustomerID); c.Traits["name"] != "Given" {
		t.Errorf("name = %v, want Given", c.Traits["name"])
	}
}

// Status events move a message forward only and report a provider id that
// matches nothing.
func TestIngestMessageStatus(t *testing.T) {
	db := pgtest.Open(t)
	ws, _, _ := pgtest.Workspace(t, db)
	ctx := context.Background()
	phone := ids("phone", "+14155550161")
	status := func(s, code string) c360.IngestResult {
		return ingest1(t, db, ws, &c360.Event{Type: c360.EventMessageStatus, Source: "test", DedupeKey: "SM1:" + s, Identities: phone,
			Properties: map[string]any{"status": s, "errorCode": code},
			Message:    &c360.MessageInput{Channel: "sms", Direction: "outbound", ProviderID: "SM1", Status: s, ErrorCode: code}})
	}
	if r := status("sent", ""); !r.NoMessage {
		t.Errorf("status before its message: NoMessage = false, want true")
	}
	ingest1(t, db, ws, &c360.Event{Type: c360.EventMessage, Source: "test", DedupeKey: "SM1", Identities: phone,
		Message: &c360.MessageInput{Channel: "sms", Direction: "outbound", Body: "x", ProviderID: "SM1", Status: "queued"}})
	m, err := db.FindMessageByProviderID(ctx, ws, "SM1")
	if err != nil || m.Status != "sent" {
		t.Fatalf("message = %+v, %v; want status sent, caught up from the earlier callback", m, err)
	}
	if r := status("delivered", ""); r.NoMessage {
		t.Errorf("NoMessage = true for a stored message")
	}
	status("failed", "30008")
	status("read", "")
	if m, _ = db.FindMessageByProviderID(ctx, ws, "SM1"); m.Status != "failed" || m.ErrorCode != "30008" {
		t.Errorf("message = %s/%s, want failed/30008", m.Status, m.ErrorCode)
	}
	if _, err := db.FindMessageByProviderID(ctx, ws, "SM-none"); c360.ErrorCode(err) != c360.ENOTFOUND {
		t.Errorf("unknown provider id: err = %v, want NOT_FOUND", err)
	}
}

func TestFindOutreach(t *testing.T) {
	db := pgtest.Open(t)
	ws, slug, _ := pgtest.Workspace(t, db)
	ctx := context.Background()
	r := ingest1(t, db, ws, &c360.Event{Type: c360.EventMessage, Source: "test", DedupeKey: "w1", Identities: ids("phone", "+14155550162"),
		Consent: &c360.ConsentInput{Channel: "whatsapp", Status: c360.ConsentOptedIn},
		Message: &c360.MessageInput{Channel: "whatsapp", Direction: "inbound", Body: "hi", ProviderID: "w1", Status: "received"}})
	o, err := db.FindOutreach(ctx, ws, r.CustomerID, "whatsapp")
	if err != nil {
		t.Fatal(err)
	}
	if o.Phone != "+14155550162" || o.LastInboundAt == nil || o.Consent == nil || o.Consent.Status != c360.ConsentOptedIn ||
		o.Workspace == nil || o.Workspace.Slug != slug || o.CustomerID != r.CustomerID {
		t.Errorf("outreach = %+v", o)
	}
	if o, _ = db.FindOutreach(ctx, ws, r.CustomerID, "sms"); o.LastInboundAt != nil || o.Consent != nil {
		t.Errorf("sms outreach = %+v, want no inbound and no consent", o)
	}
	if _, err := db.FindOutreach(ctx, ws, 987654321, "sms"); c360.ErrorCode(err) != c360.ENOTFOUND {
		t.Errorf("unknown customer: %v", err)
	}
}

// A status callback belongs to its message's customer. One for a message
// not (yet) stored creates no customer and touches no profile.
func TestStatusOfUnknownMessageCreatesNoCustomer(t *testing.T) {
	db := pgtest.Open(t)
	ws, _, _ := pgtest.Workspace(t, db)
	ctx := context.Background()
	res, err := db.Ingest(ctx, ws, []*c360.Event{{Type: c360.EventMessageStatus, Source: "twilio", DedupeKey: "SMnone:delivered",
		Identities: []c360.Identity{{Type: "phone", Value: "+14155550170"}},
		Message:    &c360.MessageInput{Channel: "sms", Direction: "outbound", ProviderID: "SMnone", Status: "delivered"}}})
	if err != nil {
		t.Fatal(err)
	}
	if !res[0].NoMessage || res[0].CustomerID != 0 {
		t.Errorf("result = %+v, want NoMessage and no customer", res[0])
	}
	var customers, events int
	db.Pool.QueryRow(ctx, `SELECT count(*) FROM customers WHERE workspace_id = $1`, ws).Scan(&customers)
	db.Pool.QueryRow(ctx, `SELECT count(*) FROM events WHERE workspace_id = $1`, ws).Scan(&events)
	if customers != 0 || events != 1 {
		t.Errorf("customers = %d, events = %d; want 0 and 1 (the event is kept for the message to catch up)", customers, events)
	}
}

// A status reaches its customer through its message: a recipient number
// that does not normalize (or none at all) is dropped, and the status is
// applied all the same. Providers address statuses by their own forms of
// a number, and refusing them would lose the status.
func TestStatusWithUnusableRecipientIsApplied(t *testing.T) {
	db := pgtest.Open(t)
	ws, _, _ := pgtest.Workspace(t, db)
	ctx := context.Background()
	sent := ingest1(t, db, ws, &c360.Event{Type: c360.EventMessage, Source: "twilio", DedupeKey: "SMbadto", Identities: ids("phone", "+14155550171"),
		Message: &c360.MessageInput{Channel: "sms", Direction: "outbound", Body: "x", ProviderID: "SMbadto", Status: "queued"}})
	for _, tc := range []struct {
		status string
		ids    []c360.Identity
	}{
		{"sent", ids("phone", "+1 234")},
		{"delivered", nil},
	} {
		res, err := db.Ingest(ctx, ws, []*c360.Event{{Type: c360.EventMessageStatus, Source: "twilio", DedupeKey: "SMbadto:" + tc.status,
			Identities: tc.ids, Properties: map[string]any{"status": tc.status},
			Message: &c360.MessageInput{Channel: "sms", Direction: "outbound", ProviderID: "SMbadto", Status: tc.status}}})
		if err != nil {
			t.Fatalf("status %s to %v: %v", tc.status, tc.ids, err)
		}
		if res[0].NoMessage || res[0].CustomerID != sent.CustomerID {
			t.Errorf("status %s: result = %+v, want the message's customer %d", tc.status, res[0], sent.CustomerID)
		}
		if m, _ := db.FindMessageByProviderID(ctx, ws, "SMbadto"); m.Status != tc.status {
			t.Errorf("message status = %s, want %s", m.Status, tc.status)
		}
	}
	var stored string
	if err := db.Pool.QueryRow(ctx, `SELECT identities::text FROM events WHERE workspace_id = $1 AND dedupe_key = 'SMbadto:sent'`, ws).Scan(&stored); err != nil || stored != "[]" {
		t.Errorf("stored identities = %s, %v; want []", stored, err)
	}
	// Any other event still needs an identity that normalizes.
	_, err := db.Ingest(ctx, ws, []*c360.Event{{Type: c360.EventMessage, Source: "twilio", DedupeKey: "SMbadfrom", Identities: ids("phone", "+1 234"),
		Message: &c360.MessageInput{Channel: "sms", Direction: "inbound", Body: "x", ProviderID: "SMbadfrom", Status: "received"}}})
	if c360.ErrorCode(err) != c360.EINVALID {
		t.Errorf("message from +1 234: err = %v, want %s", err, c360.EINVALID)
	}
}

// LoadProfiles with Messages (one customer's conversations with their
// messages, one batch) answers exactly what the two separate reads answer,
// pages and cursors included.
func TestConversationsWithMessagesMatchesSeparateReads(t *testing.T) {
	db := pgtest.Open(t)
	ws, _, _ := pgtest.Workspace(t, db)
	ctx := context.Background()
	var cust int64
	base := time.Now().Add(-time.Hour)
	for i, ch := range []string{"sms", "whatsapp", "chat"} {
		for j := 0; j < 4; j++ {
			ev := &c360.Event{Type: c360.EventMessage, Source: "test", DedupeKey: fmt.Sprintf("%s-%d", ch, j),
				Identities: ids("phone", "+14155550150"), OccurredAt: base.Add(time.Duration(i*10+j) * time.Minute),
				Message: &c360.MessageInput{Channel: ch, Direction: "inbound", Body: fmt.Sprintf("%s %d", ch, j), Status: "received"}}
			res, err := db.Ingest(ctx, ws, []*c360.Event{ev})
			if err != nil {
				t.Fatal(err)
			}
			cust = res[0].CustomerID
		}
	}
	withMessages := func(ws int64, convArgs, msgArgs c360.PageArgs) (*c360.Page[*c360.Conversation], map[int64]*c360.Page[*c360.Message], error) {
		p, err := db.LoadProfiles(ctx, ws, []int64{cust}, c360.ProfileRequest{Conversations: []c360.PageArgs{convArgs}, Messages: &msgArgs})
		if err != nil {
			return nil, nil, err
		}
		return p.Conversations[convArgs][cust], p.Messages, nil
	}
	check := func(convArgs, msgArgs c360.PageArgs) (*c360.Page[*c360.Conversation], map[int64]*c360.Page[*c360.Message]) {
		t.Helper()
		convs, msgs, err := withMessages(ws, convArgs, msgArgs)
		if err != nil {
			t.Fatal(err)
		}
		want, err := db.ConversationsByCustomers(ctx, ws, []int64{cust}, convArgs)
		if err != nil {
			t.Fatal(err)
		}
		if fmt.Sprint(convs.Cursors, convs.HasNext) != fmt.Sprint(want[cust].Cursors, want[cust].HasNext) {
			t.Errorf("conversations %v: got %v %v, want %v %v", convArgs, convs.Cursors, convs.HasNext, want[cust].Cursors, want[cust].HasNext)
		}
		var convIDs []int64
		for _, c := range convs.Items {
			convIDs = append(convIDs, c.ID)
		}
		wantMsgs, err := db.MessagesByConversations(ctx, ws, convIDs, msgArgs)
		if err != nil {
			t.Fatal(err)
		}
		for _, id := range convIDs {
			got, w := msgs[id], wantMsgs[id]
			if got == nil || fmt.Sprint(got.Cursors, got.HasNext) != fmt.Sprint(w.Cursors, w.HasNext) {
				t.Errorf("messages of %d with %v: got %+v, want %+v", id, msgArgs, got, w)
			}
		}
		return convs, msgs
	}
	convs, msgs := check(c360.PageArgs{First: 2}, c360.PageArgs{First: 3})
	if len(convs.Items) != 2 || !convs.HasNext || len(msgs[convs.Items[0].ID].Items) != 3 || !msgs[convs.Items[0].ID].HasNext {
		t.Fatalf("first pages: %d conversations (more %v), %d messages", len(convs.Items), convs.HasNext, len(msgs[convs.Items[0].ID].Items))
	}
	check(c360.PageArgs{First: 2, After: convs.Cursors[1]}, c360.PageArgs{First: 3, After: msgs[convs.Items[0].ID].Cursors[2]})
	check(c360.PageArgs{First: 10}, c360.PageArgs{First: 10})
	if _, _, err := withMessages(ws, c360.PageArgs{First: 2, After: "%%%"}, c360.PageArgs{First: 1}); c360.ErrorCode(err) != c360.EINVALID {
		t.Errorf("bad cursor: %v, want BAD_USER_INPUT", err)
	}
	// Another workspace sees nothing of this customer.
	other, _, _ := pgtest.Workspace(t, db)
	c, m, err := withMessages(other, c360.PageArgs{First: 10}, c360.PageArgs{First: 10})
	if err != nil || len(c.Items) != 0 || len(m) != 0 {
		t.Errorf("from another workspace: %d conversations, %d message pages (%v)", len(c.Items), len(m), err)
	}
	// Messages come with one customer's conversations only.
	two := c360.ProfileRequest{Conversations: []c360.PageArgs{{First: 10}}, Messages: &c360.PageArgs{First: 10}}
	if _, err := db.LoadProfiles(ctx, ws, []int64{cust, cust + 1}, two); c360.ErrorCode(err) != c360.EINVALID {
		t.Errorf("messages for two customers: %v, want BAD_USER_INPUT", err)
	}
}

// A status callback that arrives while sendMessage's record of the message
// is not yet committed waits for it, and applies: the message ends at the
// callback's status, not at the one it was recorded with.
func TestStatusCallbackDuringTheRecordApplies(t *testing.T) {
	db := pgtest.Open(t)
	ws, _, _ := pgtest.Workspace(t, db)
	ctx := context.Background()
	now := time.Now()
	ingest1(t, db, ws, track("seed", ids("phone", "+14155550123")))
	out := &c360.Event{Type: c360.EventMessage, Source: "twilio", DedupeKey: "SMrace", OccurredAt: now, ReceivedAt: now,
		Identities: ids("phone", "+14155550123"),
		Message:    &c360.MessageInput{Channel: "sms", Direction: "outbound", Body: "hi", ProviderID: "SMrace", Status: "queued"}}
	ready, hold := make(chan struct{}), make(chan struct{})
	recorded := make(chan error, 1)
	go func() { recorded <- db.IngestHeld(ctx, ws, out, ready, hold) }()
	<-ready
	st := &c360.Event{Type: c360.EventMessageStatus, Source: "twilio", DedupeKey: "SMrace:undelivered", OccurredAt: now, ReceivedAt: now,
		Identities: ids("phone", "+14155550123"), Properties: map[string]any{"messageSid": "SMrace", "status": "undelivered", "errorCode": "30003"},
		Message: &c360.MessageInput{Channel: "sms", Direction: "outbound", ProviderID: "SMrace", Status: "undelivered", ErrorCode: "30003"}}
	applied := make(chan error, 1)
	go func() {
		_, err := db.Ingest(ctx, ws, []*c360.Event{st})
		applied <- err
	}()
	// The callback waits for the record (or, wrongly, finishes at once).
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		if count(t, db, `SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted`) > 0 || len(applied) > 0 {
			break
		}
	}
	close(hold)
	if err := <-recorded; err != nil {
		t.Fatal(err)
	}
	if err := <-applied; err != nil {
		t.Fatal(err)
	}
	m, err := db.FindMessageByProviderID(ctx, ws, "SMrace")
	if err != nil {
		t.Fatal(err)
	}
	if m.Status != "undelivered" || m.ErrorCode != "30003" {
		t.Errorf("message %q (%q), want undelivered (30003): the callback was stored and answered, so it must apply", m.Status, m.ErrorCode)
	}
}

// A status callback locks the message's customer before the message, as a
// merge or a split does (it locks the customers, then moves their
// messages): with the other order the two deadlock, and one of them waits
// deadlock_timeout and starts again. Here the customer is held as a merge
// holds it; the merge's update of the message must not wait for the
// callback, which applies once the merge commits, following the message
// to the customer it went to.
func TestStatusCallbackLocksTheCustomerFirst(t *testing.T) {
	db := pgtest.Open(t)
	ws, _, _ := pgtest.Workspace(t, db)
	ctx := context.Background()
	phone := ids("phone", "+14155550124")
	c := ingest1(t, db, ws, &c360.Event{Type: c360.EventMessage, Source: "twilio", DedupeKey: "SMorder", Identities: phone,
		Message: &c360.MessageInput{Channel: "sms", Direction: "outbound", Body: "hi", ProviderID: "SMorder", Status: "queued"}}).CustomerID
	d := ingest1(t, db, ws, track("other", ids("user_id", "order-other"))).CustomerID
	m, err := db.FindMessageByProviderID(ctx, ws, "SMorder")
	if err != nil {
		t.Fatal(err)
	}
	status := func(s string) <-chan error {
		ev := &c360.Event{Type: c360.EventMessageStatus, Source: "twilio", DedupeKey: "SMorder:" + s, Identities: phone,
			Properties: map[string]any{"status": s},
			Message:    &c360.MessageInput{Channel: "sms", Direction: "outbound", ProviderID: "SMorder", Status: s}}
		return ingestAsync(db, ws, ev)
	}

	// The merge's update of the message does not wait for the callback.
	tx, pid := lockCustomer(t, db, ws, c)
	delivered := status("delivered")
	waitBlockedBy(t, db, pid)
	if _, err := tx.Exec(ctx, `SET LOCAL lock_timeout = '500ms'`); err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, `UPDATE messages SET customer_id = customer_id WHERE workspace_id = $1 AND id = $2`, ws, m.ID); err != nil {
		t.Fatalf("updating the message while holding its customer, as a merge does: %v, want no wait for the callback", err)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-delivered; err != nil {
		t.Fatalf("the callback: %v", err)
	}
	if m, _ := db.FindMessageByProviderID(ctx, ws, "SMorder"); m.Status != "delivered" {
		t.Errorf("message status %q, want delivered", m.Status)
	}

	// A merge that moves the message while the callback waits: the callback
	// follows it, and its change is the survivor's.
	tx, pid = lockCustomer(t, db, ws, c)
	if _, err := tx.Exec(ctx, `SELECT 1 FROM customers WHERE workspace_id = $1 AND id = $2 FOR UPDATE`, ws, d); err != nil {
		t.Fatal(err)
	}
	read := status("read")
	waitBlockedBy(t, db, pid)
	for _, sql := range []string{
		`UPDATE conversations SET customer_id = $2 WHERE workspace_id = $1 AND customer_id = $3`,
		`UPDATE messages SET customer_id = $2 WHERE workspace_id = $1 AND customer_id = $3`,
		`UPDATE customers SET merged_into = $2 WHERE workspace_id = $1 AND id = $3`,
	} {
		if _, err := tx.Exec(ctx, sql, ws, d, c); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-read; err != nil {
		t.Fatalf("the callback after the merge: %v", err)
	}
	if m, _ := db.FindMessageByProviderID(ctx, ws, "SMorder"); m.Status != "read" || m.CustomerID != d {
		t.Errorf("message %q of customer %d, want read, of the survivor %d", m.Status, m.CustomerID, d)
	}
	if n := count(t, db, `SELECT count(*) FROM customer_changes WHERE workspace_id = $1 AND customer_id = $2 AND kind = 'message'`, ws, d); n != 1 {
		t.Errorf("the survivor's message changes = %d, want 1 (the callback's)", n)
	}
}

// WhatsApp's 24-hour window is per business number: only a message the
// customer sent to the number sendMessage sends from (the workspace's
// Twilio WhatsApp number, however its "whatsapp:" prefix is written)
// opens it and chooses the number to reply to. One sent to a WhatsApp
// Cloud API number or to another Twilio sender does not. Sending through
// a Messaging Service, whose senders c360 does not know, any message
// received through Twilio counts; without any WhatsApp sender, any does.
func TestFindOutreachWhatsAppWindowIsTheSendersOwn(t *testing.T) {
	db := pgtest.Open(t)
	ws, slug, _ := pgtest.Workspace(t, db)
	ctx := context.Background()
	const sender, phoneA, phoneB = "+14155550198", "+14155550171", "+14155550172"
	update := func(from, service string) {
		t.Helper()
		if _, err := db.UpdateWorkspace(ctx, slug, c360.WorkspaceUpdate{TwilioAccountSID: ptr("AC00000000000000000000000000000001"),
			TwilioAuthToken: ptr("token"), TwilioWhatsAppFrom: ptr(from), TwilioMessagingServiceSID: ptr(service)}); err != nil {
			t.Fatal(err)
		}
	}
	now := db.Now()
	inbound := func(source, key, from, to string, ago time.Duration) int64 {
		t.Helper()
		props := map[string]any{}
		if to != "" {
			props["to"] = to
		}
		return ingest1(t, db, ws, &c360.Event{Type: c360.EventMessage, Source: source, DedupeKey: key, Identities: ids("phone", from),
			Properties: props, OccurredAt: now.Add(-ago), ReceivedAt: now,
			Message: &c360.MessageInput{Channel: "whatsapp", Direction: "inbound", Body: "hi", ProviderID: key, Status: "received"}}).CustomerID
	}
	// Both numbers are one customer's (an email links them).
	ingest1(t, db, ws, &c360.Event{Type: c360.EventIdentify, Source: "test", DedupeKey: "link",
		Identities: ids("email", "o@example.com", "phone", phoneA, "phone", phoneB)})
	id := inbound("twilio", "SMold", phoneA, sender, 30*time.Hour)        // to the sender, long ago
	inbound("twilio", "SMother", phoneB, "+14155550197", 1*time.Hour)     // another Twilio sender
	inbound("whatsapp", "wamid.cloud", phoneB, "+15550783881", time.Hour) // a Cloud API number
	inbound("whatsapp", "wamid.same", phoneB, sender, time.Hour)          // the sender's number, not through Twilio
	window := func(step, wantPhone string, wantAgo time.Duration) {
		t.Helper()
		o, err := db.FindOutreach(ctx, ws, id, "whatsapp")
		if err != nil {
			t.Fatal(err)
		}
		if o.Phone != wantPhone || o.LastInboundAt == nil || o.LastInboundAt.Sub(now.Add(-wantAgo)).Abs() > time.Millisecond {
			t.Errorf("%s: phone %s, last inbound %v; want %s, %s ago", step, o.Phone, o.LastInboundAt, wantPhone, wantAgo)
		}
	}

	update("whatsapp:"+sender, "")
	window("Twilio WhatsApp number", phoneA, 30*time.Hour)
	o, _ := db.FindOutreach(ctx, ws, id, "whatsapp")
	if err := o.CheckSendable(now); c360.ErrorCode(err) != c360.EFORBIDDEN || !strings.Contains(c360.ErrorMessage(err), "24-hour session window is closed") {
		t.Errorf("CheckSendable = %v, want the window closed: the customer wrote to other numbers since", err)
	}
	update(sender, "")
	window("the number without its prefix", phoneA, 30*time.Hour)
	inbound("twilio", "SMnew", phoneA, sender, 2*time.Hour)
	window("a new message to the sender", phoneA, 2*time.Hour)
	if o, _ := db.FindOutreach(ctx, ws, id, "whatsapp"); o.CheckSendable(now) != nil {
		t.Errorf("CheckSendable = %v, want the window open", o.CheckSendable(now))
	}

	update("", "MG00000000000000000000000000000001")
	window("a Messaging Service", phoneB, time.Hour) // SMother, received through Twilio
	update("", "")
	window("no WhatsApp sender", phoneB, time.Hour)
	// SMS is not filtered.
	if o, _ := db.FindOutreach(ctx, ws, id, "sms"); o.LastInboundAt != nil {
		t.Errorf("sms outreach = %+v, want no inbound", o)
	}
}

// The workspace's WhatsApp sender is compared with an inbound message's
// To (E.164, as Twilio writes it) in E.164 however it was typed:
// UpdateWorkspace keeps a sender number so ("+1 415 555 0198",
// "whatsapp: +1 (415) 555-0198" are +14155550198; an SMS sender too, a
// short code and an alphanumeric sender ID as given), a sender kept as
// typed before is normalized when compared, and a sender that is no number
// is refused, naming the setting, and changes nothing. Before, "+1 415 555
// 0198" was kept with its spaces, no inbound message matched it, and every
// WhatsApp send was refused as outside the 24-hour window.
func TestWhatsAppSenderIsComparedInE164(t *testing.T) {
	db := pgtest.Open(t)
	ws, slug, _ := pgtest.Workspace(t, db)
	ctx := context.Background()
	const sender, phone = "+14155550198", "+14155550181"
	now := db.Now()
	id := ingest1(t, db, ws, &c360.Event{Type: c360.EventMessage, Source: "twilio", DedupeKey: "SMin", Identities: ids("phone", phone),
		Properties: map[string]any{"to": sender}, OccurredAt: now.Add(-time.Hour), ReceivedAt: now,
		Message: &c360.MessageInput{Channel: "whatsapp", Direction: "inbound", Body: "hi", ProviderID: "SMin", Status: "received"}}).CustomerID
	open := func(step string, db *postgres.DB) {
		t.Helper()
		o, err := db.FindOutreach(ctx, ws, id, "whatsapp")
		if err != nil {
			t.Fatal(err)
		}
		if o.Phone != phone || o.LastInboundAt == nil || o.CheckSendable(now) != nil {
			t.Errorf("%s: phone %q, last inbound %v, CheckSendable %v; want %s, the window open", step, o.Phone, o.LastInboundAt, o.CheckSendable(now), phone)
		}
	}
	for _, typed := range []string{"+1 415 555 0198", "whatsapp: +1 (415) 555-0198", "WhatsApp:+14155550198", "(415) 555-0198"} {
		w, err := db.UpdateWorkspace(ctx, slug, c360.WorkspaceUpdate{TwilioAccountSID: ptr("AC00000000000000000000000000000001"),
			TwilioAuthToken: ptr("token"), TwilioWhatsAppFrom: ptr(typed)})
		if err != nil {
			t.Fatalf("%q: %v", typed, err)
		}
		if w.TwilioWhatsAppFrom != sender {
			t.Errorf("%q is kept as %q, want %s", typed, w.TwilioWhatsAppFrom, sender)
		}
		open(typed, db)
	}
	// A sender kept as typed before, read by a server without it cached.
	if _, err := db.Pool.Exec(ctx, `UPDATE workspaces SET twilio_whatsapp_from = 'whatsapp:+1 415 555 0198' WHERE id = $1`, ws); err != nil {
		t.Fatal(err)
	}
	open("kept as typed before", pgtest.Open(t))

	for _, tc := range []struct{ typed, want string }{
		{"+1 415 555 0199", "+14155550199"},
		{" 89045 ", "89045"},
		{"Acme Co", "Acme Co"},
		{"", ""},
	} {
		if w, err := db.UpdateWorkspace(ctx, slug, c360.WorkspaceUpdate{TwilioSMSFrom: ptr(tc.typed)}); err != nil || w.TwilioSMSFrom != tc.want {
			t.Errorf("SMS sender %q: %v, %v; want it kept as %q", tc.typed, w, err, tc.want)
		}
	}
	before, err := pgtest.Open(t).FindWorkspaceBySlug(ctx, slug)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		upd          c360.WorkspaceUpdate
		setting, why string
	}{
		{c360.WorkspaceUpdate{TwilioWhatsAppFrom: ptr("+1 234")}, "--twilio-whatsapp-from", "too short"},
		{c360.WorkspaceUpdate{TwilioWhatsAppFrom: ptr("Acme")}, "--twilio-whatsapp-from", "contains letters"},
		{c360.WorkspaceUpdate{TwilioWhatsAppFrom: ptr("000")}, "--twilio-whatsapp-from", "a placeholder"},
		{c360.WorkspaceUpdate{TwilioSMSFrom: ptr("+1 234"), TwilioAuthToken: ptr("other")}, "--twilio-sms-from", "too short"},
		{c360.WorkspaceUpdate{TwilioSMSFrom: ptr("+1 415 555 01OO")}, "--twilio-sms-from", "contains letters"},
		{c360.WorkspaceUpdate{TwilioSMSFrom: ptr("Acme Company Ltd")}, "--twilio-sms-from", "an alphanumeric sender ID holds at most 11 characters"},
		{c360.WorkspaceUpdate{TwilioSMSFrom: ptr("000")}, "--twilio-sms-from", "a placeholder"},
	} {
		w, err := db.UpdateWorkspace(ctx, slug, tc.upd)
		if msg := c360.ErrorMessage(err); w != nil || c360.ErrorCode(err) != c360.EINVALID || !strings.HasPrefix(msg, tc.setting+" ") || !strings.Contains(msg, tc.why) {
			t.Errorf("%+v: %v, %v; want BAD_USER_INPUT naming %s, %s", tc.upd, w, err, tc.setting, tc.why)
		}
	}
	if after, err := pgtest.Open(t).FindWorkspaceBySlug(ctx, slug); err != nil || after.TwilioSMSFrom != before.TwilioSMSFrom ||
		after.TwilioWhatsAppFrom != before.TwilioWhatsAppFrom || after.TwilioAuthToken != before.TwilioAuthToken {
		t.Errorf("after the refusals: %+v, %v; want nothing changed", after, err)
	}
}

// RecordOutbound reads the customer's consent on the channel under the
// customer's lock: an opt-out, however recent, refuses the record with
// sendMessage's refusal, and nothing is recorded (no message, no event
// claiming the key). A repeat of a key used before is answered as a
// repeat, even after an opt-out.
func TestRecordOutboundRefusesAnOptedOutCustomer(t *testing.T) {
	db := pgtest.Open(t)
	ws, _, _ := pgtest.Workspace(t, db)
	ctx := context.Background()
	const phone = "+14155550173"
	id := ingest1(t, db, ws, &c360.Event{Type: c360.EventIdentify, Source: "test", DedupeKey: "c", Identities: ids("phone", phone)}).CustomerID
	record := func(key string) (*c360.Message, bool, error) {
		return db.RecordOutbound(ctx, ws, c360.OutboundRecord{CustomerID: id, Channel: "sms", To: phone, Body: "Promo!",
			SentBy: "key a90000000001", Source: "twilio", Key: key})
	}
	first, _, err := record("k1")
	if err != nil {
		t.Fatal(err)
	}
	ingest1(t, db, ws, &c360.Event{Type: c360.EventMessage, Source: "twilio", DedupeKey: "SMstop", Identities: ids("phone", phone),
		Consent: &c360.ConsentInput{Channel: "sms", Status: c360.ConsentOptedOut},
		Message: &c360.MessageInput{Channel: "sms", Direction: "inbound", Body: "STOP", ProviderID: "SMstop", Status: "received"}})

	m, _, err := record("k2")
	if m != nil || c360.ErrorCode(err) != c360.EFORBIDDEN || c360.ErrorMessage(err) != "customer opted out of sms" {
		t.Errorf("record after the opt-out = %+v, %v; want FORBIDDEN, customer opted out of sms", m, err)
	}
	if n := count(t, db, `SELECT count(*) FROM messages WHERE workspace_id = $1 AND direction = 'outbound'`, ws); n != 1 {
		t.Errorf("outbound messages = %d, want the first alone", n)
	}
	if n := count(t, db, `SELECT count(*) FROM events WHERE workspace_id = $1 AND dedupe_key = 'send:k2'`, ws); n != 0 {
		t.Errorf("events claiming k2 = %d, want 0", n)
	}
	if m, repeat, err := record("k1"); err != nil || !repeat || m.ID != first.ID {
		t.Errorf("repeat of k1 after the opt-out = %+v, %v, %v; want message %d, a repeat", m, repeat, err, first.ID)
	}
	// Another channel is not refused.
	if _, _, err := db.RecordOutbound(ctx, ws, c360.OutboundRecord{CustomerID: id, Channel: "whatsapp", To: phone, Body: "Promo!",
		SentBy: "key a90000000001", Source: "twilio", Key: "k3"}); err != nil {
		t.Errorf("record on whatsapp: %v", err)
	}
}

// Status callbacks stored before their message (NoMessage) are applied, once
// it is recorded, in the order they arrived, as they would have been live:
// the first final status stays, with its error code. Two finals rank alike
// (undelivered, then failed), so the order decides which one the message
// ends in; read back in no particular order, the later one could win.
func TestCatchUpAppliesStatusesInArrivalOrder(t *testing.T) {
	db := pgtest.Open(t)
	ws, _, _ := pgtest.Workspace(t, db)
	ctx := context.Background()
	phone := ids("phone", "+14155550163")
	base := time.Now().UTC().Add(-time.Minute)
	for _, tt := range []struct {
		sid      string
		statuses [][2]string // in arrival order: status, error code
		want     [2]string
		stored   []int // the order they are stored in, if not arrival's
	}{
		{"SMorder1", [][2]string{{"sent", ""}, {"undelivered", "30003"}, {"failed", "30008"}, {"delivered", ""}}, [2]string{"undelivered", "30003"}, nil},
		{"SMorder2", [][2]string{{"failed", "30008"}, {"undelivered", "30003"}}, [2]string{"failed", "30008"}, nil},
		{"SMorder3", [][2]string{{"canceled", ""}, {"failed", "30008"}}, [2]string{"canceled", ""}, nil},
		// Two callbacks ingested concurrently: the one received first
		// commits last. It arrived first, and wins.
		{"SMorder4", [][2]string{{"undelivered", "30003"}, {"failed", "30008"}}, [2]string{"undelivered", "30003"}, []int{1, 0}},
	} {
		order := tt.stored
		if order == nil {
			for i := range tt.statuses {
				order = append(order, i)
			}
		}
		for _, i := range order {
			st := tt.statuses[i]
			at := base.Add(time.Duration(i) * time.Second)
			r := ingest1(t, db, ws, &c360.Event{Type: c360.EventMessageStatus, Source: "twilio", DedupeKey: tt.sid + ":" + st[0],
				Identities: phone, OccurredAt: at, ReceivedAt: at,
				Properties: map[string]any{"messageSid": tt.sid, "status": st[0], "errorCode": st[1]},
				Message:    &c360.MessageInput{Channel: "sms", Direction: "outbound", ProviderID: tt.sid, Status: st[0], ErrorCode: st[1]}})
			if !r.NoMessage {
				t.Fatalf("%s %s: NoMessage = false, want true", tt.sid, st[0])
			}
		}
		ingest1(t, db, ws, &c360.Event{Type: c360.EventMessage, Source: "twilio", DedupeKey: tt.sid, Identities: phone,
			Message: &c360.MessageInput{Channel: "sms", Direction: "outbound", Body: "x", ProviderID: tt.sid, Status: "queued"}})
		m, err := db.FindMessageByProviderID(ctx, ws, tt.sid)
		if err != nil {
			t.Fatal(err)
		}
		if m.Status != tt.want[0] || m.ErrorCode != tt.want[1] {
			t.Errorf("%s: message %s (%q) after %v, want %s (%q), as applied live", tt.sid, m.Status, m.ErrorCode, tt.statuses, tt.want[0], tt.want[1])
		}
	}
}
