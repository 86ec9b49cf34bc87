// Package trickle sends a request whose body comes a byte at a time, as a
// slow or hostile client sends one, for the tests of the server's body
// read deadline.
package trickle

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// Post connects to base (an httptest server's URL), sends a POST to path
// that declares a JSON body of 60,000 bytes, and then sends one byte of it
// every interval until the server stops reading or the test ends. It waits
// up to 10 s for the answer and returns it with the connection's reader,
// positioned after the answer's head, for what follows. The test fails
// when no answer comes. The connection closes when the test ends.
func Post(t testing.TB, base, path string, every time.Duration) (*http.Response, *bufio.Reader) {
	t.Helper()
	conn, err := net.Dial("tcp", strings.TrimPrefix(base, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	t.Cleanup(func() {
		close(stop)
		conn.Close()
	})
	fmt.Fprintf(conn, "POST %s HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 60000\r\n\r\n{", path)
	go func() {
		for {
			select {
			case <-stop:
				return
			case <-time.After(every):
				if _, err := conn.Write([]byte(" ")); err != nil {
					return
				}
			}
		}
	}()
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("no answer to the body trickled to %s: %v", path, err)
	}
	return resp, br
}
