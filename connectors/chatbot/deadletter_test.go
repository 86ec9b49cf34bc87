package chatbot_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/c360dev/c360"
	"github.com/c360dev/c360/identity"
)

// poison returns a message body the messages table refuses, by a
// constraint that stands for a bug (dropped when the test ends): a value
// that fails inside ingest although the payload is valid. (A NUL
// character did, before the payload's validation refused it.)
func poison(t *testing.T, e *env) string {
	t.Helper()
	ctx := context.Background()
	body := fmt.Sprintf("POISON %d", time.Now().UnixNano())
	constraint := fmt.Sprintf("chatbot_bug_%d", time.Now().UnixNano())
	if _, err := e.db.Pool.Exec(ctx, fmt.Sprintf(`ALTER TABLE messages ADD CONSTRAINT %s CHECK (body IS DISTINCT FROM '%s') NOT VALID`, constraint, body)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if _, err := e.db.Pool.Exec(ctx, `ALTER TABLE messages DROP CONSTRAINT `+constraint); err != nil {
			t.Error(err)
		}
	})
	return body
}

// A request whose events fail inside ingest (a value PostgreSQL refuses)
// is kept whole as dead letters — one per event, nothing stored, as a
// request is all or nothing — and acknowledged with 200 and the count,
// since the bot's retries could only fail the same way.
func TestPoisonRequestIsKeptAsDeadLetters(t *testing.T) {
	e := newEnv(t)
	body, _ := json.Marshal(map[string]any{
		"sessionId":  "dl-1",
		"identities": []any{map[string]any{"type": "email", "value": "dl@example.com"}},
		"turns": []any{
			map[string]any{"id": "1", "role": "user", "text": "fine"},
			map[string]any{"id": "2", "role": "user", "text": poison(t, e)},
		},
	})
	a := e.signed(t, body)
	if a.Status != http.StatusOK || a.Accepted != 2 || a.DeadLettered != 2 {
		t.Fatalf("answer %d %+v, want 200 with accepted 2, deadLettered 2", a.Status, a)
	}
	if n := e.count(t, "events"); n != 0 {
		t.Errorf("events = %d, want 0 (a request is all or nothing)", n)
	}
	p, err := e.db.DeadLetters(context.Background(), e.ws, c360.DeadLetterFilter{PageArgs: c360.PageArgs{First: 10}})
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Items) != 2 {
		t.Fatalf("dead letters = %d, want 2 (one per event of the request)", len(p.Items))
	}
	for _, d := range p.Items {
		if d.Source != "chatbot" || d.Attempts != 1 {
			t.Errorf("dead letter %+v", d)
		}
	}
}

// The same holds when the request's events would be routed to different
// ingest workers: its traits carry an email whose worker is not that of
// the session's identifier, which every event carries too. The request
// stays whole, so it is still all or nothing.
func TestPoisonRequestAcrossWorkersIsKeptWhole(t *testing.T) {
	e := newEnv(t)
	worker := func(id identity.Identity) uint64 { return uint64(identity.Key(e.ws, id)) % 2 } // two workers by default
	visitor := identity.Identity{Type: "chatbot:webchat", Value: "v-split"}
	var email string
	for i := 0; email == ""; i++ {
		if c := fmt.Sprintf("p%d@example.com", i); worker(identity.Identity{Type: "email", Value: c}) != worker(visitor) {
			email = c
		}
	}
	body, _ := json.Marshal(map[string]any{
		"sessionId":  "dl-split",
		"identities": []any{map[string]any{"type": visitor.Type, "value": visitor.Value}},
		"traits":     map[string]any{"email": email, "name": "P"},
		"turns":      []any{map[string]any{"id": "1", "role": "user", "text": poison(t, e)}},
	})
	a := e.signed(t, body)
	if a.Status != http.StatusOK || a.DeadLettered != a.Accepted || a.Accepted < 2 {
		t.Fatalf("answer %d %+v, want 200 with every event dead-lettered", a.Status, a)
	}
	if n := e.count(t, "events"); n != 0 {
		t.Errorf("events = %d, want 0 (a request is all or nothing)", n)
	}
}
