package webhook_test

import (
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"

	"github.com/c360dev/c360/connectors/webhook"
)

type failingReader struct{}

func (failingReader) Read([]byte) (int, error) { return 0, errors.New("connection reset") }

// slowReader is a body cut by the connection's read deadline.
type slowReader struct{}

func (slowReader) Read([]byte) (int, error) {
	return 0, &net.OpError{Op: "read", Net: "tcp", Err: os.ErrDeadlineExceeded}
}

func TestReadBody(t *testing.T) {
	for _, tc := range []struct {
		name   string
		body   io.Reader
		length int64 // -1: chunked, no Content-Length
		status int
	}{
		{"within the limit", strings.NewReader("0123456789"), 10, http.StatusOK},
		{"exactly the limit", strings.NewReader(strings.Repeat("x", 16)), 16, http.StatusOK},
		{"declared over the limit", strings.NewReader(strings.Repeat("x", 17)), 17, http.StatusRequestEntityTooLarge},
		{"chunked over the limit", strings.NewReader(strings.Repeat("x", 17)), -1, http.StatusRequestEntityTooLarge},
		{"unreadable", failingReader{}, -1, http.StatusBadRequest},
		{"not in time", slowReader{}, 16, http.StatusRequestTimeout},
	} {
		r := httptest.NewRequest(http.MethodPost, "/webhooks/x/acme", tc.body)
		r.ContentLength = tc.length
		body, status, err := webhook.ReadBody(httptest.NewRecorder(), r, 16)
		if status != tc.status || (err == nil) != (tc.status == http.StatusOK) {
			t.Errorf("%s: status %d, error %v; want %d", tc.name, status, err, tc.status)
		}
		if tc.status == http.StatusOK && int64(len(body)) != tc.length {
			t.Errorf("%s: %d bytes read, want %d", tc.name, len(body), tc.length)
		}
	}
}
