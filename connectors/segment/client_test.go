package segment_test

import (
	"context"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/c360dev/c360"
)

// clientKey issues a client key, the write key of a browser or a mobile
// app, for e's workspace.
func (e *env) clientKey(t *testing.T) string {
	t.Helper()
	key, _, err := e.db.CreateAPIKey(context.Background(), slugOf(t, e), c360.RoleClient, nil)
	if err != nil {
		t.Fatalf("issue a client key: %v", err)
	}
	return key
}

// noCustomer fails unless no customer holds the identity.
func (e *env) noCustomer(t *testing.T, typ, value, why string) {
	t.Helper()
	c, err := e.db.FindCustomerByIdentity(context.Background(), e.ws, c360.Identity{Type: typ, Value: value})
	if c360.ErrorCode(err) != c360.ENOTFOUND {
		t.Errorf("%s: %s %s resolves to %+v, %v; want no customer", why, typ, value, c, err)
	}
}

// identitiesOf lists a customer's identities as "type value".
func (e *env) identitiesOf(t *testing.T, id int64) []string {
	t.Helper()
	recs, err := e.db.IdentitiesByCustomers(context.Background(), e.ws, []int64{id})
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, r := range recs[id] {
		out = append(out, r.Type+" "+r.Value)
	}
	slices.Sort(out)
	return out
}

// A client key is public: it is in every page of the site. With it and a
// victim's email, a stranger used to send an identify from an anonymousId
// of their own with traits.email = the victim's and traits.phone = their
// own: the phone joined the victim's profile, so the stranger's next SMS or
// call showed the victim's profile to an agent. Now a client key's traits
// stay traits: the phone resolves to no one, the victim's identities and
// traits are as they were, and the traits land on the sender's own
// anonymous profile. However the key is sent (the body's writeKey on a
// browser path, a Basic header on a batch), the key decides. The same
// call with the server's write key still links, as Segment does.
func TestPublicWriteKeyCannotAttachIdentifiersToAnotherProfile(t *testing.T) {
	e := newEnv(t)
	client := e.clientKey(t)
	e.mustPost(t, "/v1/identify", map[string]any{"userId": "victim-1", "messageId": "v1",
		"traits": map[string]any{"email": "rosa@example.com", "name": "Rosa Diaz"}})
	victim := e.customer(t, "user_id", "victim-1")

	r := e.post(t, "/v1/i", "", map[string]any{"anonymousId": "atk-1", "messageId": "a1", "writeKey": client,
		"traits": map[string]any{"email": "Rosa@Example.com", "phone": "+1 415 555 0199", "name": "Rosa (attacker)"}})
	if r.Status != http.StatusOK {
		t.Fatalf("client identify: %+v", r)
	}
	e.noCustomer(t, "phone", "+14155550199", "the attacker's phone")
	if got, want := e.identitiesOf(t, victim.ID), []string{"email rosa@example.com", "user_id victim-1"}; !slices.Equal(got, want) {
		t.Errorf("victim's identities = %v, want %v", got, want)
	}
	if got := e.customer(t, "user_id", "victim-1"); got.ID != victim.ID || got.Traits["name"] != "Rosa Diaz" || got.Traits["phone"] != nil {
		t.Errorf("victim = %d %v, want %d with its traits unchanged", got.ID, got.Traits, victim.ID)
	}
	atk := e.customer(t, "anonymous_id", "atk-1")
	if atk.ID == victim.ID {
		t.Fatalf("the attacker's anonymousId resolves to the victim")
	}
	if got, want := e.identitiesOf(t, atk.ID), []string{"anonymous_id atk-1"}; !slices.Equal(got, want) {
		t.Errorf("attacker's identities = %v, want %v", got, want)
	}
	if atk.Traits["email"] != "Rosa@Example.com" || atk.Traits["phone"] != "+1 415 555 0199" || atk.Traits["name"] != "Rosa (attacker)" {
		t.Errorf("attacker's traits = %v, want the traits sent, as sent", atk.Traits)
	}

	// Two strangers: A's email and B's phone in one call, from a batch
	// (the group commit path) with the client key in a Basic header.
	e.mustPost(t, "/v1/batch", map[string]any{"batch": []any{
		map[string]any{"type": "identify", "userId": "a-1", "messageId": "sa", "traits": map[string]any{"email": "a@example.com"}},
		map[string]any{"type": "identify", "userId": "b-1", "messageId": "sb", "traits": map[string]any{"phone": "+14155550123"}},
	}})
	a, b := e.customer(t, "user_id", "a-1"), e.customer(t, "user_id", "b-1")
	r = e.post(t, "/v1/batch", basic(client), map[string]any{"batch": []any{
		map[string]any{"type": "identify", "anonymousId": "atk-2", "messageId": "a2",
			"traits": map[string]any{"email": "a@example.com", "phone": "+14155550123"}},
		map[string]any{"type": "identify", "anonymousId": "atk-3", "messageId": "a3",
			"traits": map[string]any{"email": "a@example.com", "phone": "+14155550198"}},
	}})
	if r.Status != http.StatusOK || len(r.Rejected) > 0 {
		t.Fatalf("client batch: %+v", r)
	}
	if got := e.customer(t, "phone", "+14155550123"); got.ID != b.ID {
		t.Errorf("B's phone resolves to %d, want B (%d)", got.ID, b.ID)
	}
	if got := e.customer(t, "email", "a@example.com"); got.ID != a.ID || got.ID == b.ID {
		t.Errorf("A's email resolves to %d, want A (%d), apart from B (%d)", got.ID, a.ID, b.ID)
	}
	for _, anon := range []string{"atk-2", "atk-3"} {
		if c := e.customer(t, "anonymous_id", anon); c.ID == a.ID || c.ID == b.ID {
			t.Errorf("%s joined A or B (customer %d)", anon, c.ID)
		}
	}
	e.noCustomer(t, "phone", "+14155550198", "a phone sent in a client batch")
	// RudderStack's beacon path, the key in the query string.
	r = e.post(t, "/beacon/v1/batch?writeKey="+url.QueryEscape(client), "", map[string]any{"batch": []any{
		map[string]any{"type": "identify", "anonymousId": "atk-4", "messageId": "a4",
			"traits": map[string]any{"email": "a@example.com", "phone": "+14155550197"}}}})
	if r.Status != http.StatusOK || len(r.Rejected) > 0 {
		t.Fatalf("client beacon: %+v", r)
	}
	e.noCustomer(t, "phone", "+14155550197", "a phone sent in a client beacon")
	if c := e.customer(t, "anonymous_id", "atk-4"); c.ID == a.ID {
		t.Errorf("atk-4 joined A (customer %d)", c.ID)
	}

	// The server's write key, a secret, links by the same traits.
	e.mustPost(t, "/v1/identify", map[string]any{"anonymousId": "srv-1", "messageId": "s1",
		"traits": map[string]any{"email": "Rosa@Example.com", "phone": "+1 415 555 0199"}})
	if got := e.customer(t, "phone", "+14155550199"); got.ID != victim.ID {
		t.Errorf("with the write key, the phone resolves to %d, want the email's customer %d", got.ID, victim.ID)
	}
}

// A client key's traits are dated when c360 receives them, for trait
// precedence: a made-up timestamp up to 24 hours ahead no longer makes
// them outlast the next true update. The event keeps the time the call
// claims, as every Segment event does.
func TestClientKeyTraitsAreDatedAtReceipt(t *testing.T) {
	e := newEnv(t)
	client := e.clientKey(t)
	now := e.clock()
	e.mustPost(t, "/v1/identify", map[string]any{"userId": "u-1", "messageId": "m1", "traits": map[string]any{"plan": "basic"}})
	ahead := now.Add(23 * time.Hour)
	r := e.post(t, "/v1/identify", basic(client), map[string]any{"userId": "u-1", "messageId": "m2",
		"timestamp": ahead.Format(time.RFC3339), "traits": map[string]any{"plan": "forged"}})
	if r.Status != http.StatusOK {
		t.Fatalf("client identify: %+v", r)
	}
	if got := e.customer(t, "user_id", "u-1").Traits["plan"]; got != "forged" {
		t.Fatalf("plan after the client's identify = %v, want forged (a client key still sets traits)", got)
	}
	var forged *c360.Event
	for _, ev := range e.events(t, e.customer(t, "user_id", "u-1").ID) {
		if ev.Type == c360.EventIdentify && ev.OccurredAt.Equal(ahead) {
			forged = ev
		}
	}
	if forged == nil {
		t.Errorf("no identify event at the claimed time %s", ahead)
	}

	e.mu.Lock()
	e.now = now.Add(time.Minute)
	e.mu.Unlock()
	e.mustPost(t, "/v1/identify", map[string]any{"userId": "u-1", "messageId": "m3", "traits": map[string]any{"plan": "pro"}})
	if got := e.customer(t, "user_id", "u-1").Traits["plan"]; got != "pro" {
		t.Errorf("plan after a later update by the server = %v, want pro", got)
	}
}

// A client key is accepted on every path, like the write key; agent keys
// stay refused, and say which keys may send.
func TestClientKeyAuthenticates(t *testing.T) {
	e := newEnv(t)
	client := e.clientKey(t)
	call := map[string]any{"userId": "u-c", "event": "Clicked"}
	if r := e.post(t, "/v1/track", basic(client), call); r.Status != http.StatusOK {
		t.Errorf("client key in a Basic header: %+v, want 200", r)
	}
	if r := e.post(t, "/v1/t", "", map[string]any{"userId": "u-c", "event": "Clicked", "writeKey": client}); r.Status != http.StatusOK {
		t.Errorf("client key in the body: %+v, want 200", r)
	}
	agent, _, err := e.db.CreateAPIKey(context.Background(), slugOf(t, e), c360.RoleAgent, nil)
	if err != nil {
		t.Fatal(err)
	}
	if r := e.post(t, "/v1/track", basic(agent), call); r.Status != http.StatusForbidden || r.Code != c360.EFORBIDDEN ||
		r.Message != "keys with role agent cannot send tracking calls: use a write or client key" {
		t.Errorf("agent key: %+v, want 403 naming the write and client keys", r)
	}
}

// A client key is public: whoever reads the page could send a call with
// the messageId a server is about to use with the write key (an order id,
// say). That call was stored, and the server's was then answered 200 as a
// retry and never stored. Client-key calls now keep a dedupe space of
// their own: neither kind of call can take the other's messageId, a retry
// is still stored once within each, and the answers name the messageId as
// sent.
func TestClientKeyCannotClaimAWriteKeyMessageID(t *testing.T) {
	e := newEnv(t)
	client := e.clientKey(t)
	track := func(key, id, event string) response {
		t.Helper()
		return e.post(t, "/v1/track", basic(key), map[string]any{"userId": "buyer-1", "event": event, "messageId": id})
	}
	tracks := func() []string {
		t.Helper()
		var names []string
		for _, ev := range e.events(t, e.customer(t, "user_id", "buyer-1").ID) {
			names = append(names, ev.Name)
		}
		slices.Sort(names)
		return names
	}
	for _, c := range []struct{ key, id, event string }{
		{client, "order-1001", "Made Up"},             // the stranger first
		{e.writeKey, "order-1001", "Order Completed"}, // then the server
		{e.writeKey, "order-1002", "Order Completed 2"},
		{client, "order-1002", "Made Up 2"},
		{client, "order-1001", "Made Up"}, // retries
		{e.writeKey, "order-1001", "Order Completed"},
	} {
		if r := track(c.key, c.id, c.event); r.Status != http.StatusOK || !r.Success {
			t.Fatalf("track %s: %+v, want 200", c.id, r)
		}
	}
	if got, want := tracks(), []string{"Made Up", "Made Up 2", "Order Completed", "Order Completed 2"}; !slices.Equal(got, want) {
		t.Errorf("stored tracks %v, want %v", got, want)
	}

	// The prefix that marks client calls is no messageId of another key.
	r := track(e.writeKey, c360.ClientKeyDedupePrefix+"order-1003", "Claimed")
	if r.Status != http.StatusBadRequest || !strings.Contains(r.Message, "kept for the calls of client keys") {
		t.Errorf("write-key call with the client prefix: %+v, want 400", r)
	}
	r = e.post(t, "/v1/batch", basic(e.adminKey), map[string]any{"batch": []any{
		map[string]any{"type": "track", "userId": "buyer-1", "event": "Admin", "messageId": "order-1004"},
		map[string]any{"type": "track", "userId": "buyer-1", "event": "Claimed", "messageId": c360.ClientKeyDedupePrefix + "x"}}})
	if r.Status != http.StatusOK || len(r.Rejected) != 1 || r.Rejected[0].Index != 1 || r.Rejected[0].MessageID != c360.ClientKeyDedupePrefix+"x" {
		t.Errorf("admin batch with the client prefix: %+v, want its call 1 refused", r)
	}

	// A client's messageId is limited to 256 bytes as sent, and answers
	// and dead letters keep it readable.
	long := strings.Repeat("m", 256)
	if r := track(client, long, "Long"); r.Status != http.StatusOK {
		t.Errorf("client call with a 256-byte messageId: %+v, want 200", r)
	}
	r = e.post(t, "/v1/batch", basic(client), map[string]any{"batch": []any{
		map[string]any{"type": "track", "userId": "buyer-1", "event": "Too Long", "messageId": long + "m"},
		map[string]any{"type": "track", "userId": "buyer-1", "event": "Poison", "messageId": "poison-1", "properties": map[string]any{"x": "a\u0000b"}},
		map[string]any{"type": "track", "userId": "buyer-1", "event": "Fine", "messageId": "fine-1"}}})
	if r.Status != http.StatusOK || len(r.Rejected) != 2 || r.Rejected[0].MessageID != long+"m" ||
		r.Rejected[0].Error != "messageId is longer than 256 bytes" || r.Rejected[1].MessageID != "poison-1" {
		t.Errorf("client batch: %+v, want calls 0 and 1 refused by their messageIds as sent", r)
	}
	p, err := e.db.DeadLetters(context.Background(), e.ws, c360.DeadLetterFilter{PageArgs: c360.PageArgs{First: 10}})
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Items) != 1 || p.Items[0].DedupeKey != c360.ClientKeyDedupePrefix+"poison-1" || p.Items[0].Source != "segment" {
		t.Errorf("dead letters %+v, want the poison call under %spoison-1", p.Items, c360.ClientKeyDedupePrefix)
	}
}
