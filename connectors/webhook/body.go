// Package webhook holds what the connectors' HTTP endpoints share around
// their own parsing: the bounded body read and the workspace's rate limit
// once a request is verified (Twilio, WhatsApp, chatbot), the
// client's description of JSON that does not decode (WhatsApp, chatbot,
// Segment), the refusal of a JSON field's key given twice or in another
// case (chatbot), how far ahead an event's own time is believed (WhatsApp,
// chatbot, Segment), and a refusal's reason as logs carry it (Twilio,
// WhatsApp).
package webhook

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
)

// ErrBodyTimeout is the refusal of a body that did not arrive within the
// server's read deadline: 408.
var ErrBodyTimeout = errors.New("the request body did not arrive within the read timeout: send it whole at once")

// TimedOut reports whether err is a read of the request body cut by the
// connection's read deadline, which the server sets while a body is read
// (server.Config.BodyReadTimeout).
func TimedOut(err error) bool { return errors.Is(err, os.ErrDeadlineExceeded) }

// ReadBody reads a webhook's whole body, bounded by limit bytes, before
// anything parses or verifies it. On failure it returns the status to
// answer: 413 for a body over the limit (declared by Content-Length or
// found while reading a chunked body), 400 for a body that could not be
// read, 408 for a body that did not arrive within the server's read
// deadline (server.Config.BodyReadTimeout, C360_BODY_READ_TIMEOUT).
func ReadBody(w http.ResponseWriter, r *http.Request, limit int64) ([]byte, int, error) {
	tooLarge := fmt.Errorf("request body larger than %d bytes", limit)
	if r.ContentLength > limit {
		return nil, http.StatusRequestEntityTooLarge, tooLarge
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return nil, http.StatusRequestEntityTooLarge, tooLarge
		}
		if TimedOut(err) {
			return nil, http.StatusRequestTimeout, ErrBodyTimeout
		}
		return nil, http.StatusBadRequest, errors.New("could not read the request body")
	}
	return body, http.StatusOK, nil
}
