package chatbot_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/c360dev/c360"
	"github.com/c360dev/c360/connectors/chatbot"
	"github.com/c360dev/c360/internal/pgtest"
	"github.com/c360dev/c360/postgres"
	"github.com/c360dev/c360/resolver"
	"github.com/c360dev/c360/server"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

var now = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)

// env is the real server with the webhook mounted as cmd/c360 mounts it,
// on a real store, with one workspace.
type env struct {
	db     *postgres.DB
	srv    *httptest.Server
	ws     int64
	slug   string
	secret string
}

func newEnv(t *testing.T) *env {
	t.Helper()
	return newEnvOn(t, pgtest.Open(t))
}

// newEnvOn is newEnv with the server and the webhook on the store db.
func newEnvOn(t *testing.T, db *postgres.DB) *env {
	t.Helper()
	return newEnvClock(t, db, func() time.Time { return now })
}

// newEnvClock is newEnvOn with the webhook's clock.
func newEnvClock(t *testing.T, db *postgres.DB, clock c360.Clock) *env {
	t.Helper()
	return newEnvServer(t, db, clock, server.Config{})
}

// newEnvServer is newEnvClock with the server's configuration cfg (its
// Logger is set to discard).
func newEnvServer(t *testing.T, db *postgres.DB, clock c360.Clock, cfg server.Config) *env {
	t.Helper()
	creds, err := db.CreateWorkspace(context.Background(), fmt.Sprintf("bot%d", time.Now().UnixNano()%1e12), "test")
	if err != nil {
		t.Fatalf("create workspace: %v", err)
	}
	log := slog.New(slog.DiscardHandler)
	cfg.Logger = log
	srv := server.New(cfg, db, &resolver.Resolver{Now: db.Now}, db)
	chatbot.New(chatbot.Config{Store: db, Now: clock, StatusOf: server.StatusOf, Logger: log,
		Limit: srv.LimitWebhook}).Register(srv)
	e := &env{db: db, srv: httptest.NewServer(srv), ws: creds.ID, slug: creds.Slug, secret: creds.WebhookSecret}
	t.Cleanup(e.srv.Close)
	return e
}

type answer struct {
	Status     int         `json:"-"`
	Header     http.Header `json:"-"`
	Body       string      `json:"-"`
	Accepted   int         `json:"accepted"`
	Duplicates int         `json:"duplicates"`
	// DeadLettered counts the events kept as dead letters.
	DeadLettered int    `json:"deadLettered"`
	Code         string `json:"code"`
	Message      string `json:"message"`
}

// post sends body to the workspace's webhook with the signature header sig
// ("" for none).
func (e *env) post(t *testing.T, slug string, body []byte, sig string) answer {
	t.Helper()
	a, err := e.send(slug, body, sig)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// send is post for any goroutine: it returns its failure.
func (e *env) send(slug string, body []byte, sig string) (answer, error) {
	req, _ := http.NewRequest(http.MethodPost, e.srv.URL+"/webhooks/chatbot/"+slug, bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	if sig != "" {
		req.Header.Set(chatbot.SignatureHeader, sig)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return answer{}, err
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		return answer{}, err
	}
	a := answer{Status: res.StatusCode, Header: res.Header, Body: string(b)}
	if err := json.Unmarshal(b, &a); err != nil {
		return answer{}, fmt.Errorf("%d, body not JSON: %q", res.StatusCode, b)
	}
	return a, nil
}

func (e *env) signed(t *testing.T, body []byte) answer {
	t.Helper()
	return e.post(t, e.slug, body, chatbot.Sign(e.secret, now, body))
}

func (e *env) count(t *testing.T, table string) int {
	t.Helper()
	var n int
	if err := e.db.Pool.QueryRow(context.Background(), `SELECT count(*) FROM `+table+` WHERE workspace_id = $1`, e.ws).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func session(id string) []byte {
	b, _ := json.Marshal(map[string]any{
		"sessionId":  id,
		"identities": []any{map[string]any{"type": "email", "value": "Lena@Example.com"}, map[string]any{"type": "chatbot:webchat", "value": "visitor-7"}},
		"traits":     map[string]any{"name": "Lena Park", "language": "de"},
		"turns": []any{
			map[string]any{"id": "1", "role": "user", "text": "Where is my order?", "time": "2025-03-01T11:58:00Z", "intent": "order_status", "confidence": 0.92},
			map[string]any{"id": "2", "role": "assistant", "text": "It ships tomorrow.", "time": "2025-03-01T11:58:02Z"},
			map[string]any{"id": "3", "role": "bot", "text": "Anything else?", "time": "2025-03-01T11:58:03Z"},
		},
		"observations": []any{map[string]any{"text": "prefers German", "confidence": 0.7}},
	})
	return b
}

func TestTurnsBecomeAChatConversation(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	a := e.signed(t, session("s-1"))
	if a.Status != 200 || a.Accepted != 6 || a.Duplicates != 0 {
		t.Fatalf("got %+v, want 200 accepted 6 (traits, 3 turns, 1 intent, 1 observation)", a)
	}
	c, err := e.db.FindCustomerByIdentity(ctx, e.ws, c360.Identity{Type: "chatbot:webchat", Value: "visitor-7"})
	if err != nil {
		t.Fatal(err)
	}
	if c.Traits["name"] != "Lena Park" {
		t.Errorf("traits = %v, want the payload's", c.Traits)
	}
	if other, err := e.db.FindCustomerByIdentity(ctx, e.ws, c360.Identity{Type: "email", Value: "lena@example.com"}); err != nil || other.ID != c.ID {
		t.Errorf("email resolves to %v (%v), want customer %d", other, err, c.ID)
	}
	convs := conversations(t, e, c.ID)
	if len(convs) != 1 || convs[0].Channel != c360.ChannelChat {
		t.Fatalf("conversations = %+v, want one chat conversation", convs)
	}
	msgs := messages(t, e, convs[0].ID)
	if len(msgs) != 3 {
		t.Fatalf("%d messages, want 3", len(msgs))
	}
	// Newest first.
	for i, want := range []struct{ dir, body string }{
		{"outbound", "Anything else?"}, {"outbound", "It ships tomorrow."}, {"inbound", "Where is my order?"},
	} {
		if msgs[i].Direction != want.dir || msgs[i].Body != want.body || msgs[i].Channel != "chat" {
			t.Errorf("message %d = %s %q on %s, want %s %q on chat", i, msgs[i].Direction, msgs[i].Body, msgs[i].Channel, want.dir, want.body)
		}
	}
	if !msgs[2].CreatedAt.Equal(time.Date(2025, 3, 1, 11, 58, 0, 0, time.UTC)) {
		t.Errorf("turn time = %s, want the payload's", msgs[2].CreatedAt)
	}

	evs := events(t, e, c.ID)
	var intent, observation *c360.Event
	for _, ev := range evs {
		switch ev.Name {
		case chatbot.EventIntentDetected:
			intent = ev
		case chatbot.EventObservation:
			observation = ev
		}
	}
	if intent == nil || intent.Type != "track" || intent.Properties["intent"] != "order_status" ||
		intent.Properties["confidence"] != 0.92 || intent.Properties["sessionId"] != "s-1" || intent.Source != "chatbot" {
		t.Errorf("intent event = %+v, want track Intent Detected order_status 0.92 in session s-1", intent)
	}
	if observation == nil || observation.Properties["text"] != "prefers German" || observation.Properties["confidence"] != 0.7 {
		t.Errorf("observation event = %+v", observation)
	}

	// A second session is a second conversation; a later delivery of the
	// first session's turns goes on the first one.
	if a := e.signed(t, session("s-2")); a.Status != 200 {
		t.Fatalf("second session: %+v", a)
	}
	more, _ := json.Marshal(map[string]any{"sessionId": "s-1",
		"identities": []any{map[string]any{"type": "chatbot:webchat", "value": "visitor-7"}},
		"turns":      []any{map[string]any{"id": "4", "role": "user", "text": "No, thanks", "time": "2025-03-01T11:59:00Z"}}})
	if a := e.signed(t, more); a.Status != 200 || a.Accepted != 1 {
		t.Fatalf("follow-up: %+v", a)
	}
	convs = conversations(t, e, c.ID)
	if len(convs) != 2 {
		t.Fatalf("%d conversations, want 2 (one per session)", len(convs))
	}
	for _, conv := range convs {
		n := len(messages(t, e, conv.ID))
		if n != 3 && n != 4 {
			t.Errorf("conversation %d has %d messages, want 4 for s-1 and 3 for s-2", conv.ID, n)
		}
	}
}

func TestReplayIsStoredOnce(t *testing.T) {
	e := newEnv(t)
	body := session("s-replay")
	if a := e.signed(t, body); a.Status != 200 {
		t.Fatal(a)
	}
	before := [3]int{e.count(t, "events"), e.count(t, "messages"), e.count(t, "customer_changes")}
	// The same delivery again (a provider retry), and re-signed a minute later.
	for _, sig := range []string{chatbot.Sign(e.secret, now, body), chatbot.Sign(e.secret, now.Add(time.Minute), body)} {
		a := e.post(t, e.slug, body, sig)
		if a.Status != 200 || a.Duplicates != a.Accepted {
			t.Fatalf("replay: %+v, want 200 with every event a duplicate", a)
		}
	}
	after := [3]int{e.count(t, "events"), e.count(t, "messages"), e.count(t, "customer_changes")}
	if before != after {
		t.Errorf("events, messages, changes = %v after replays, want %v", after, before)
	}
}

// Two bots of one workspace (or one platform serving several channels)
// that both number their sessions 1, 2, ... give two people's turns the
// same keys. The second person's turn is not a redelivery of the first's:
// it is refused with 409 and nothing is stored for it, while a true
// redelivery (the same identities, or some of them) is still a duplicate.
func TestSessionIDReusedByAnotherPerson(t *testing.T) {
	e := newEnv(t)
	payload := func(sid, typ, value string, turns ...map[string]any) []byte {
		b, _ := json.Marshal(map[string]any{"sessionId": sid,
			"identities": []any{map[string]any{"type": typ, "value": value}}, "turns": turns})
		return b
	}
	turn := func(id, role, text string) map[string]any {
		return map[string]any{"id": id, "role": role, "text": text}
	}
	visitor := payload("1", "chatbot:webchat", "visitor-a", turn("1", "user", "Hi from the web"))
	if a := e.signed(t, visitor); a.Status != 200 || a.Accepted != 1 || a.Duplicates != 0 {
		t.Fatalf("first person: %+v, want 200 accepted 1", a)
	}
	before := [4]int{e.count(t, "events"), e.count(t, "messages"), e.count(t, "customers"), e.count(t, "customer_changes")}
	stored := func(when string) {
		t.Helper()
		after := [4]int{e.count(t, "events"), e.count(t, "messages"), e.count(t, "customers"), e.count(t, "customer_changes")}
		if after != before {
			t.Errorf("%s: events, messages, customers, changes = %v, want %v", when, after, before)
		}
	}

	// Another person, the same sessionId and turn id: an inbound turn (the
	// group path) and, with a new turn after it, a request of which
	// nothing may be stored either.
	for _, body := range [][]byte{
		payload("1", "chatbot:voice", "caller-b", turn("1", "user", "Hi from the phone")),
		payload("1", "chatbot:voice", "caller-b", turn("1", "user", "Hi from the phone"), turn("2", "user", "Anyone?")),
	} {
		a := e.signed(t, body)
		if a.Status != http.StatusConflict || a.Code != c360.ECONFLICT ||
			!strings.Contains(a.Message, `sessionId "1" and turn id "1" were already used by another person in this workspace`) {
			t.Errorf("second person: %d %s %q, want 409 CONFLICT naming sessionId 1 and turn 1", a.Status, a.Code, a.Message)
		}
		stored("second person")
	}
	if _, err := e.db.FindCustomerByIdentity(context.Background(), e.ws, c360.Identity{Type: "chatbot:voice", Value: "caller-b"}); c360.ErrorCode(err) != c360.ENOTFOUND {
		t.Errorf("caller-b: %v, want no customer", err)
	}

	// A redelivery, with the same identities or with one more.
	more := payload("1", "chatbot:webchat", "visitor-a", turn("1", "user", "Hi from the web"))
	more = bytes.Replace(more, []byte(`"identities":[`), []byte(`"identities":[{"type":"email","value":"a@example.com"},`), 1)
	for _, body := range [][]byte{visitor, more} {
		if a := e.signed(t, body); a.Status != 200 || a.Duplicates != 1 {
			t.Errorf("redelivery %s: %+v, want 200 duplicates 1", body, a)
		}
	}
	stored("redeliveries")

	// An outbound turn (the per-event path) and an observation.
	if a := e.signed(t, payload("2", "chatbot:webchat", "visitor-a", turn("1", "assistant", "Hello!"))); a.Status != 200 {
		t.Fatalf("outbound turn: %+v", a)
	}
	if a := e.signed(t, payload("2", "chatbot:voice", "caller-b", turn("1", "bot", "Hello!"))); a.Status != http.StatusConflict ||
		!strings.Contains(a.Message, `sessionId "2" and turn id "1"`) {
		t.Errorf("outbound turn of another person: %+v, want 409 naming sessionId 2 and turn 1", a)
	}
	obs := func(typ, value string) []byte {
		b, _ := json.Marshal(map[string]any{"sessionId": "3",
			"identities":   []any{map[string]any{"type": typ, "value": value}},
			"observations": []any{map[string]any{"id": "o1", "text": "prefers mornings"}}})
		return b
	}
	if a := e.signed(t, obs("chatbot:webchat", "visitor-a")); a.Status != 200 {
		t.Fatalf("observation: %+v", a)
	}
	if a := e.signed(t, obs("chatbot:voice", "caller-b")); a.Status != http.StatusConflict ||
		!strings.Contains(a.Message, `sessionId "3" was already used by another person in this workspace`) {
		t.Errorf("observation of another person: %+v, want 409 naming sessionId 3", a)
	}
}

func TestRefusalsWriteNothing(t *testing.T) {
	e := newEnv(t)
	body := session("s-bad")
	good := chatbot.Sign(e.secret, now, body)
	_, goodMAC, _ := strings.Cut(good, ",v1=")
	for _, tc := range []struct {
		name   string
		slug   string
		body   []byte
		sig    string
		status int
	}{
		{"missing signature", e.slug, body, "", 401},
		{"forged with another secret", e.slug, body, chatbot.Sign("whsec_guess", now, body), 401},
		{"body changed after signing", e.slug, bytes.Replace(body, []byte("Lena Park"), []byte("Eve Park!"), 1), good, 401},
		{"expired", e.slug, body, chatbot.Sign(e.secret, now.Add(-6*time.Minute), body), 401},
		{"from the future", e.slug, body, chatbot.Sign(e.secret, now.Add(6*time.Minute), body), 401},
		{"timestamp swapped", e.slug, body, fmt.Sprintf("t=%d,v1=%s", now.Unix()+1, goodMAC), 401},
		{"malformed", e.slug, body, "sha256=" + goodMAC, 401},
		{"no v1", e.slug, body, fmt.Sprintf("t=%d", now.Unix()), 401},
		{"unknown workspace", "no-such-workspace", body, good, 404},
		{"too large", e.slug, bytes.Repeat([]byte(" "), chatbot.DefaultMaxBodyBytes+1), "", 413},
		{"invalid payload", e.slug, []byte(`{"sessionId":"s","identities":[{"type":"email","value":"a@b.c"}],"turns":[{"id":"1","role":"narrator","text":"x"}]}`), "", 400},
		{"not JSON", e.slug, []byte(`{"sessionId":`), "", 400},
		{"sessionId in another case", e.slug, []byte(`{"sessionId":"s","SESSIONID":"other","identities":[{"type":"email","value":"a@b.c"}],"turns":[{"id":"1","role":"user","text":"x"}]}`), "", 400},
		{"text of white space", e.slug, []byte(`{"sessionId":"s","identities":[{"type":"email","value":"a@b.c"}],"turns":[{"id":"1","role":"user","text":"  "}]}`), "", 400},
		{"sessionId with white space around it", e.slug, []byte(`{"sessionId":"  s  ","identities":[{"type":"email","value":"a@b.c"}],"turns":[{"id":"1","role":"user","text":"x"}]}`), "", 400},
		{"text twice", e.slug, []byte(`{"sessionId":"s","identities":[{"type":"email","value":"a@b.c"}],"turns":[{"id":"1","role":"user","text":"x","text":"y"}]}`), "", 400},
		{"invalid identity", e.slug, []byte(`{"sessionId":"s","identities":[{"type":"email","value":"not-an-email"}],"turns":[{"id":"1","role":"user","text":"x"}]}`), "", 400},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sig := tc.sig
			if sig == "" && tc.status == 400 {
				sig = chatbot.Sign(e.secret, now, tc.body)
			}
			a := e.post(t, tc.slug, tc.body, sig)
			if a.Status != tc.status || a.Message == "" {
				t.Fatalf("got %+v, want %d with a message", a, tc.status)
			}
		})
	}
	if n := e.count(t, "events"); n != 0 {
		t.Errorf("refused deliveries stored %d events, want 0", n)
	}
	a := e.post(t, e.slug, []byte(`{"sessionId":"s","identities":[{"type":"email","value":"not-an-email"}],"turns":[{"id":"1","role":"user","text":"x"}]}`), "")
	if a.Code != c360.EUNAUTHENTICATED {
		t.Errorf("unsigned invalid payload: code %q, want the signature checked before the payload", a.Code)
	}
}

// Two observations with one id in a request are refused, as two turns with
// one id are: the id is the observation's dedupe key, so the second was
// taken for a redelivery of the first, answered 200 {"duplicates": 1}, and
// its text was lost.
func TestObservationIDTwiceInOneRequestIsRefused(t *testing.T) {
	e := newEnv(t)
	body, _ := json.Marshal(map[string]any{"sessionId": "s-obs-twice",
		"identities": []any{map[string]any{"type": "email", "value": "twice@example.com"}},
		"observations": []any{
			map[string]any{"id": "lang", "text": "prefers German"},
			map[string]any{"id": "lang", "text": "is allergic to nuts"},
		}})
	a := e.signed(t, body)
	if a.Status != http.StatusBadRequest || a.Code != c360.EINVALID || a.Message != `observations[1].id "lang" appears twice` {
		t.Errorf("answer %d %s, want 400 BAD_USER_INPUT observations[1].id \"lang\" appears twice", a.Status, a.Body)
	}
	if n := e.count(t, "events"); n != 0 {
		t.Errorf("the refused request stored %d events, want 0", n)
	}
}

// A NUL character, which PostgreSQL's text and jsonb refuse, is refused
// where the payload holds it, naming the field, and nothing is written. A
// NUL in sessionId was refused as if in a "messageId" the payload does not
// have; one in a turn's text or intent, an observation's text or the
// traits was answered 200 and every event of the request kept as a dead
// letter that no replay could ever store.
func TestNULIsRefusedNamingTheField(t *testing.T) {
	e := newEnv(t)
	id := []any{map[string]any{"type": "email", "value": "nul@example.com"}}
	turn := func(k, v string) []any {
		m := map[string]any{"id": "1", "role": "user", "text": "hi"}
		m[k] = v
		return []any{m}
	}
	for _, tc := range []struct {
		field   string
		payload map[string]any
	}{
		{"sessionId", map[string]any{"sessionId": "s\x00", "identities": id, "turns": turn("text", "hi")}},
		{"turns[0].text", map[string]any{"sessionId": "s-nul-1", "identities": id, "turns": turn("text", "a\x00b")}},
		{"turns[0].intent", map[string]any{"sessionId": "s-nul-2", "identities": id, "turns": turn("intent", "a\x00b")}},
		{"observations[1].text", map[string]any{"sessionId": "s-nul-3", "identities": id,
			"observations": []any{map[string]any{"text": "fine"}, map[string]any{"text": "x\x00y"}}}},
		{"traits.name", map[string]any{"sessionId": "s-nul-4", "identities": id,
			"traits": map[string]any{"name": []any{"ok", map[string]any{"x": "a\x00"}}}}},
	} {
		body, _ := json.Marshal(tc.payload)
		a := e.signed(t, body)
		want := tc.field + ` holds a NUL character (\u0000), which cannot be stored`
		if a.Status != http.StatusBadRequest || a.Code != c360.EINVALID || a.Message != want {
			t.Errorf("NUL in %s: %d %s, want 400 BAD_USER_INPUT %q", tc.field, a.Status, a.Body, want)
		}
	}
	if n, d := e.count(t, "events"), e.count(t, "dead_letters"); n != 0 || d != 0 {
		t.Errorf("the refused requests stored %d events and %d dead letters, want none", n, d)
	}
	// A turn's or an observation's id never could hold one.
	for _, p := range []map[string]any{
		{"sessionId": "s-nul-5", "identities": id, "turns": []any{map[string]any{"id": "1\x00", "role": "user", "text": "hi"}}},
		{"sessionId": "s-nul-6", "identities": id, "observations": []any{map[string]any{"id": "o\x00", "text": "hi"}}},
	} {
		body, _ := json.Marshal(p)
		if a := e.signed(t, body); a.Status != http.StatusBadRequest || !strings.Contains(a.Message, "].id must be") {
			t.Errorf("NUL in an id: %d %s, want 400 naming the id", a.Status, a.Body)
		}
	}
}

func TestSecretRotation(t *testing.T) {
	e := newEnv(t)
	body := session("s-rotate")
	old := chatbot.Sign("whsec_old", now, body)
	cur := chatbot.Sign(e.secret, now, body)
	_, curMAC, _ := strings.Cut(cur, ",v1=")
	if a := e.post(t, e.slug, body, old+",v1="+curMAC); a.Status != 200 {
		t.Fatalf("old and new signatures: %+v, want 200", a)
	}
}

// After a rotation with a grace period, a request signed with the secret
// it replaced is accepted until the previous secret's expiry and refused
// (401, as a wrong secret is) from that instant, while the webhook's
// store still holds the workspace row in its cache: the expiry timestamp
// decides, not the cache. With no grace the old secret is refused at once.
func TestSecretRotationGracePeriod(t *testing.T) {
	var clock atomic.Int64 // the webhook's clock, in Unix nanoseconds
	clock.Store(time.Now().UnixNano())
	at := func() time.Time { return time.Unix(0, clock.Load()) }
	db := pgtest.Open(t)
	e := newEnvClock(t, db, at)
	ctx := context.Background()
	n := 0
	// post sends a new session signed with secret at the webhook's time.
	post := func(secret string) answer {
		t.Helper()
		n++
		body := session(fmt.Sprintf("s-grace-%d", n))
		return e.post(t, e.slug, body, chatbot.Sign(secret, at(), body))
	}
	old := e.secret
	w, secret, err := db.RotateWebhookSecret(ctx, e.slug, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	expires := *w.PreviousWebhookSecretExpiresAt
	if a := post(old); a.Status != http.StatusOK {
		t.Fatalf("signed with the old secret during the grace: %+v, want 200", a)
	}
	if a := post(secret); a.Status != http.StatusOK {
		t.Fatalf("signed with the new secret: %+v, want 200", a)
	}
	clock.Store(expires.Add(-time.Second).UnixNano())
	if a := post(old); a.Status != http.StatusOK {
		t.Errorf("signed with the old secret a second before the expiry: %+v, want 200", a)
	}
	// The workspace row is cached (the requests above read it less than
	// 5 s ago): the expiry still ends the grace on time.
	clock.Store(expires.UnixNano())
	wrong := post("whsec_guess")
	if a := post(old); a.Status != http.StatusUnauthorized || a.Code != c360.EUNAUTHENTICATED || a.Message != wrong.Message {
		t.Errorf("signed with the old secret at the expiry: %+v, want 401 as for a wrong secret (%+v)", a, wrong)
	}
	if a := post(secret); a.Status != http.StatusOK {
		t.Errorf("signed with the new secret after the grace: %+v, want 200", a)
	}

	// No grace: the secret replaced is refused at once.
	clock.Store(time.Now().UnixNano())
	if _, secret, err = db.RotateWebhookSecret(ctx, e.slug, 0); err != nil {
		t.Fatal(err)
	}
	if a := post(old); a.Status != http.StatusUnauthorized {
		t.Errorf("signed with the first secret after a rotation with no grace: %+v, want 401", a)
	}
	if a := post(w.WebhookSecret); a.Status != http.StatusUnauthorized {
		t.Errorf("signed with the secret a rotation with no grace replaced: %+v, want 401", a)
	}
	if a := post(secret); a.Status != http.StatusOK {
		t.Errorf("signed with the newest secret: %+v, want 200", a)
	}
}

// A rotation made by another process (the command line, another replica)
// while this server holds the workspace row in its 5-second cache: a bot
// that signs with the new secret at once is accepted at once, and so is
// the old secret during the grace, as the docs promise. Before, the cached
// row refused the new secret for up to 5 seconds. The read past the cache
// is bounded: within a second of one, a request the cached row refuses is
// refused without another.
func TestNewSecretAcceptedRightAfterARotationByAnotherProcess(t *testing.T) {
	db := pgtest.Open(t)
	e := newEnvClock(t, db, time.Now)
	cli := pgtest.Open(t) // the command line's own store
	ctx := context.Background()
	n := 0
	post := func(secret string) answer {
		t.Helper()
		n++
		body := session(fmt.Sprintf("s-cli-rotate-%d", n))
		return e.post(t, e.slug, body, chatbot.Sign(secret, time.Now(), body))
	}
	old := e.secret
	if a := post(old); a.Status != http.StatusOK { // caches the row
		t.Fatalf("warm-up: %+v", a)
	}
	_, s1, err := cli.RotateWebhookSecret(ctx, e.slug, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	before := time.Now() // the forced read below comes after this
	if a := post(s1); a.Status != http.StatusOK {
		t.Errorf("signed with the new secret right after the rotation: %d %s, want 200", a.Status, a.Body)
	}
	if a := post(old); a.Status != http.StatusOK {
		t.Errorf("signed with the old secret during the grace: %d %s, want 200", a.Status, a.Body)
	}
	// Bounded, not refused: a second rotation within the second after
	// that read is seen by the next read, which waits until a second has
	// passed since it (at most one forced read of a workspace a second).
	_, s2, err := cli.RotateWebhookSecret(ctx, e.slug, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if a := post(s2); a.Status != http.StatusOK {
		t.Errorf("signed with a secret rotated within the second after a read: %d %s, want 200", a.Status, a.Body)
	}
	if d := time.Since(before); d < time.Second {
		t.Errorf("the second forced read came %v after the first, want at least a second", d)
	}
	if a := post("whsec_guess"); a.Status != http.StatusUnauthorized {
		t.Errorf("signed with a wrong secret: %d %s, want 401", a.Status, a.Body)
	}
}

func conversations(t *testing.T, e *env, customer int64) []*c360.Conversation {
	t.Helper()
	p, err := e.db.ConversationsByCustomers(context.Background(), e.ws, []int64{customer}, c360.PageArgs{First: 50})
	if err != nil {
		t.Fatal(err)
	}
	return p[customer].Items
}

func messages(t *testing.T, e *env, conv int64) []*c360.Message {
	t.Helper()
	p, err := e.db.MessagesByConversations(context.Background(), e.ws, []int64{conv}, c360.PageArgs{First: 50})
	if err != nil {
		t.Fatal(err)
	}
	return p[conv].Items
}

func events(t *testing.T, e *env, customer int64) []*c360.Event {
	t.Helper()
	p, err := e.db.EventsByCustomers(context.Background(), e.ws, []int64{customer}, c360.PageArgs{First: 50})
	if err != nil {
		t.Fatal(err)
	}
	// Reads leave properties as stored; these tests look into them.
	for _, ev := range p[customer].Items {
		if err := json.Unmarshal(ev.RawProperties, &ev.Properties); err != nil {
			t.Fatal(err)
		}
	}
	return p[customer].Items
}

// With traitsAt, traits that return to a value the session sent before
// are applied, and each delivery of one dated set is stored once. Without
// it, the same traits again are taken as a replay (docs/connectors.md).
func TestTraitsAtTellsReturningTraitsApart(t *testing.T) {
	e := newEnv(t)
	traits := func(plan, at string) []byte {
		p := map[string]any{"sessionId": "s-plans", "identities": []any{map[string]any{"type": "email", "value": "plans@example.com"}},
			"traits": map[string]any{"plan": plan}}
		if at != "" {
			p["traitsAt"] = at
		}
		b, _ := json.Marshal(p)
		return b
	}
	plan := func() string {
		var v string
		if err := e.db.Pool.QueryRow(context.Background(), `SELECT traits->>'plan' FROM customers c
			JOIN identities i ON i.workspace_id = c.workspace_id AND i.customer_id = c.id
			WHERE c.workspace_id = $1 AND i.type = 'email' AND i.value = 'plans@example.com'`, e.ws).Scan(&v); err != nil {
			t.Fatal(err)
		}
		return v
	}
	for i, step := range []struct {
		plan, at string
		dup      bool
	}{
		{"pro", "2025-03-01T11:50:00Z", false},
		{"free", "2025-03-01T11:51:00Z", false},
		{"pro", "2025-03-01T11:52:00Z", false}, // back to pro: applied
		{"pro", "2025-03-01T11:52:00Z", true},  // the same delivery again
		{"free", "2025-03-01T11:51:00Z", true}, // an old delivery again: a replay, and it does not win
	} {
		a := e.signed(t, traits(step.plan, step.at))
		if a.Status != 200 || (a.Duplicates == 1) != step.dup {
			t.Fatalf("step %d (%s at %s): %+v, want duplicate %v", i, step.plan, step.at, a, step.dup)
		}
	}
	if got := plan(); got != "pro" {
		t.Errorf("plan %q after pro, free, pro with traitsAt, want pro", got)
	}
	var at time.Time
	if err := e.db.Pool.QueryRow(context.Background(), `SELECT max(occurred_at) FROM events WHERE workspace_id = $1 AND type = 'identify'`, e.ws).Scan(&at); err != nil {
		t.Fatal(err)
	}
	if want := time.Date(2025, 3, 1, 11, 52, 0, 0, time.UTC); !at.Equal(want) {
		t.Errorf("latest identify event occurred at %v, want traitsAt %v", at, want)
	}
	// Without traitsAt, the session's earlier traits again are a replay.
	e.signed(t, traits("basic", ""))
	e.signed(t, traits("team", ""))
	if a := e.signed(t, traits("basic", "")); a.Duplicates != 1 {
		t.Errorf("basic again without traitsAt: %+v, want a duplicate", a)
	}
	// A traitsAt far ahead dates nothing: the event takes the receipt time.
	if a := e.signed(t, traits("enterprise", "2099-01-01T00:00:00Z")); a.Status != 200 || a.Accepted != 1 {
		t.Fatalf("far-future traitsAt: %+v", a)
	}
	if err := e.db.Pool.QueryRow(context.Background(), `SELECT occurred_at FROM events WHERE workspace_id = $1 AND type = 'identify'
		ORDER BY id DESC LIMIT 1`, e.ws).Scan(&at); err != nil {
		t.Fatal(err)
	}
	if !at.Equal(now) {
		t.Errorf("far-future traitsAt dated the event %v, want the receipt time %v", at, now)
	}
}

// TestDocsExamplesAreTwoSessions posts docs/connectors.md's payload example
// and then its shell example, as a reader following the page does: the
// shell's turn is a turn of its own, not a duplicate of the payload's
// turn "1" under the same sessionId.
func TestDocsExamplesAreTwoSessions(t *testing.T) {
	doc, err := os.ReadFile("../../docs/connectors.md")
	if err != nil {
		t.Fatal(err)
	}
	text := string(doc)
	_, rest, ok := strings.Cut(text, "### Payload\n\n```json\n")
	if !ok {
		t.Fatal("docs/connectors.md: no ### Payload json block")
	}
	payload, _, _ := strings.Cut(rest, "```")
	_, rest, ok = strings.Cut(text, "\nbody='")
	if !ok {
		t.Fatal("docs/connectors.md: no body='…' in the shell example")
	}
	shell, _, _ := strings.Cut(rest, "'\n")

	e := newEnv(t)
	if a := e.signed(t, []byte(payload)); a.Status != 200 || a.Accepted == 0 || a.Duplicates != 0 {
		t.Fatalf("payload example: %+v", a)
	}
	a := e.signed(t, []byte(shell))
	if a.Status != 200 || a.Accepted != 1 || a.Duplicates != 0 {
		t.Fatalf("shell example after the payload example: %+v, want accepted 1, duplicates 0", a)
	}
	c, err := e.db.FindCustomerByIdentity(context.Background(), e.ws, c360.Identity{Type: "email", Value: "lena@example.com"})
	if err != nil {
		t.Fatal(err)
	}
	var bodies []string
	for _, conv := range conversations(t, e, c.ID) {
		for _, m := range messages(t, e, conv.ID) {
			bodies = append(bodies, m.Body)
		}
	}
	if !slices.Contains(bodies, "Hi") || !slices.Contains(bodies, "Where is my order?") {
		t.Errorf("messages %q, want both examples' first turns", bodies)
	}
}

// TestOperationsListsEveryRefusal: the chatbot row of docs/operations.md's
// "What each connector answers" lists, as refused with nothing written,
// every 4xx of the chatbot's own answers in docs/connectors.md but 429,
// which that page answers for every connector at once: an operator reading
// it looked for 409, a reused sessionId, and did not find it.
func TestOperationsListsEveryRefusal(t *testing.T) {
	read := func(name string) string {
		b, err := os.ReadFile("../../docs/" + name)
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	_, answers, ok := strings.Cut(read("connectors.md"), "## Chatbot webhook\n")
	if ok {
		_, answers, ok = strings.Cut(answers, "### Answers\n")
	}
	if !ok {
		t.Fatal("docs/connectors.md: no ### Answers under ## Chatbot webhook")
	}
	answers, _, _ = strings.Cut(answers, "\n\n\n")
	answers, _, _ = strings.Cut(answers, "\n##")
	var want []string
	for _, line := range strings.Split(answers, "\n") {
		status, _, _ := strings.Cut(strings.TrimPrefix(line, "| "), " ")
		if len(status) == 3 && status[0] == '4' && status != "429" && !slices.Contains(want, status) {
			want = append(want, status)
		}
	}
	if len(want) < 5 {
		t.Fatalf("docs/connectors.md's chatbot answers list 4xx %v: the table was not read", want)
	}
	var row string
	for _, line := range strings.Split(read("operations.md"), "\n") {
		if strings.HasPrefix(line, "| chatbot webhook |") {
			row = line
		}
	}
	cells := strings.Split(row, "|")
	if len(cells) < 6 {
		t.Fatalf("docs/operations.md: no chatbot webhook row of 5 columns: %q", row)
	}
	refused := strings.Fields(strings.ReplaceAll(cells[4], ",", " "))
	for _, s := range want {
		if !slices.Contains(refused, s) {
			t.Errorf("docs/operations.md's chatbot row refuses %v; docs/connectors.md answers %s too", refused, s)
		}
	}
}
