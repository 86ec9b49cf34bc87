package server_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/c360dev/c360/internal/trickle"
	"github.com/c360dev/c360/server"
)

// A client that trickles its body (it declares 60,000 bytes and sends one
// every 100 ms) is answered 408 and let go once BodyReadTimeout has passed,
// instead of holding its connection and goroutine for as long as it likes;
// an SSE subscription, whose body came whole, lives on past the deadline.
func TestSlowBodyIsCutOffAndStreamsLiveOn(t *testing.T) {
	const timeout = 500 * time.Millisecond
	e := newRTEnv(t, rtOptions{cfg: server.Config{BodyReadTimeout: timeout}})

	id := ingest(t, e.db, e.ws, email("slow-body@example.com"), nil)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	resp := postSSE(t, ctx, e.srv.URL, e.key, subCustomer, map[string]any{"id": fmt.Sprint(id)})
	waitFor(t, "subscription", func() bool { return e.hub.Stats().Streams == 1 })

	answer, br := trickle.Post(t, e.srv.URL, "/graphql", 100*time.Millisecond)
	msg, _ := io.ReadAll(answer.Body)
	answer.Body.Close()
	if answer.StatusCode != http.StatusRequestTimeout {
		t.Fatalf("trickled body answered %d, want 408", answer.StatusCode)
	}
	// Closed: EOF, or a reset when the trickled bytes reached the server
	// after its last read (closing with unread data sends RST).
	if rest, err := io.ReadAll(br); (err != nil && !errors.Is(err, syscall.ECONNRESET)) || len(rest) > 0 {
		t.Fatalf("the connection stayed open after the 408 (%s): %q, %v", msg, rest, err)
	}
	// (Without the deadline the trickle goes on and no answer comes in the
	// 10 s the read allows: the test fails there, not on a timing.)

	// The stream, opened before, outlives the deadline several times over.
	time.Sleep(3 * timeout)
	ingest(t, e.db, e.ws, email("slow-body@example.com"), map[string]any{"after": "deadline"})
	// A stream that stays open without the change fails the test after
	// 10 s instead of holding it to go test's timeout.
	found := make(chan bool, 1)
	go func() {
		sse := newSSEReader(resp.Body)
		for data, ok := sse.next(); ok; data, ok = sse.next() {
			if strings.Contains(data, "deadline") {
				found <- true
				return
			}
		}
		found <- false
	}()
	select {
	case ok := <-found:
		if !ok {
			t.Fatal("the SSE stream ended before the change after the deadline")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no change on the SSE stream 10 s after the deadline's change")
	}
}

// A request answered without reading its body (a 404 here) from a client
// that sent Expect: 100-continue and waits for the go-ahead is answered at
// once, and its connection closed, as net/http does for any handler: the
// body read deadline must not hide the unread body from net/http, which
// would otherwise hold the answer until the client gave up waiting and sent
// its body, or the deadline passed.
func TestExpectContinueAnsweredWithoutWaitingForTheBody(t *testing.T) {
	// A deadline far past the read's: held for the body, the answer does
	// not come at all within the 10 s the test waits (no timing measured).
	e := newRTEnv(t, rtOptions{cfg: server.Config{BodyReadTimeout: time.Hour}})

	conn, err := net.Dial("tcp", strings.TrimPrefix(e.srv.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "POST /nope HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nExpect: 100-continue\r\nContent-Length: 20\r\n\r\n")
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	answer, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("POST /nope with Expect: 100-continue had no answer in 10 s, held for its body: %v", err)
	}
	answer.Body.Close()
	if answer.StatusCode != http.StatusNotFound {
		t.Fatalf("POST /nope answered %d, want 404", answer.StatusCode)
	}
}
