package chatbot_test

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/c360dev/c360/internal/pgtest"
	"github.com/c360dev/c360/server"
)

// A bot that trickles its body past the server's read deadline
// (C360_BODY_READ_TIMEOUT) is answered 408, as the Twilio and WhatsApp
// webhooks answer, and told to send it whole: not 400 "unreadable body",
// which tells it its payload is bad and not to retry.
func TestSlowBodyIsAnswered408(t *testing.T) {
	e := newEnvServer(t, pgtest.Open(t), func() time.Time { return now },
		server.Config{BodyReadTimeout: 300 * time.Millisecond})

	conn, err := net.Dial("tcp", strings.TrimPrefix(e.srv.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "POST /webhooks/chatbot/%s HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 60000\r\n\r\n{", e.slug)
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		for {
			select {
			case <-stop:
				return
			case <-time.After(50 * time.Millisecond):
				if _, err := conn.Write([]byte(" ")); err != nil {
					return
				}
			}
		}
	}()
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	res, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("no answer to the trickled body: %v", err)
	}
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
