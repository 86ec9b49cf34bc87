package twilio_test

import (
	"context"
	"net/http"
	"testing"

	"github.com/c360dev/c360"
)

// An inbound message that fails inside ingest (a NUL character in the body,
// which PostgreSQL refuses) is kept as a dead letter and answered 200 with
// empty TwiML: Twilio's retries could only fail the same way. A second
// delivery counts one more attempt on the same dead letter.
func TestInboundPoisonIsKeptAsDeadLetter(t *testing.T) {
	e := newEnv(t)
	f := inbound("SM00000000000000000000000000000dl1", "+14155550150", "nul \x00 body")
	for attempt := 1; attempt <= 2; attempt++ {
		status, _, body := e.webhook(t, e.inboundPath(), f, authToken)
		if status != http.StatusOK {
			t.Fatalf("delivery %d: status %d (%s), want 200", attempt, status, body)
		}
		p, err := e.db.DeadLetters(context.Background(), e.ws, c360.DeadLetterFilter{PageArgs: c360.PageArgs{First: 10}})
		if err != nil {
			t.Fatal(err)
		}
		if len(p.Items) != 1 || p.Items[0].DedupeKey != "SM00000000000000000000000000000dl1" || p.Items[0].Attempts != attempt {
			t.Fatalf("delivery %d: dead letters %+v, want one with %d attempts", attempt, p.Items, attempt)
		}
	}
	if n := count(t, e.db, `SELECT count(*) FROM messages WHERE workspace_id = $1`, e.ws); n != 0 {
		t.Errorf("messages = %d, want 0", n)
	}
}
