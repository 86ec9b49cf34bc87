package chatbot_test

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/c360dev/c360/internal/pgtest"
	"github.com/c360dev/c360/internal/trickle"
	"github.com/c360dev/c360/server"
)

// A bot that trickles its body past the server's read deadline
// (C360_BODY_READ_TIMEOUT) is answered 408, as the Twilio and WhatsApp
// webhooks answer, and told to send it whole: not 400 "unreadable body",
// which tells it its payload is bad and not to retry.
func TestSlowBodyIsAnswered408(t *testing.T) {
	e := newEnvServer(t, pgtest.Open(t), func() time.Time { return now },
		server.Config{BodyReadTimeout: 300 * time.Millisecond})

	res, _ := trickle.Post(t, e.srv.URL, "/webhooks/chatbot/"+e.slug, 50*time.Millisecond)
	b, _ := io.ReadAll(res.Body)
	res.Body.Close()
	var a answer
	if err := json.Unmarshal(b, &a); err != nil {
		t.Fatalf("%d, body not JSON: %q", res.StatusCode, b)
	}
	if res.StatusCode != http.StatusRequestTimeout || !strings.Contains(a.Message, "did not arrive within") {
		t.Fatalf("trickled body answered %d %q, want 408 saying it did not arrive in time", res.StatusCode, b)
	}
	if n := e.count(t, "events"); n != 0 {
		t.Errorf("%d events stored, want 0", n)
	}
}
