package segment

import (
	"bytes"
	"compress/gzip"
	"fmt"
	"io"
	"net/http/httptest"
	"os"
	"testing"
)

// cutReader gives its bytes, then fails as a read cut by the connection's
// read deadline does.
type cutReader struct{ r io.Reader }

func (c *cutReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	if err == io.EOF {
		return n, fmt.Errorf("read tcp: %w", os.ErrDeadlineExceeded)
	}
	return n, err
}

// A body cut by the read deadline is errBodyTimeout (408), plain or
// gzipped, wherever the deadline falls: in the gzip header (its first
// bytes trickled) as in the compressed stream.
func TestReadBodyCutByTheDeadline(t *testing.T) {
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write(bytes.Repeat([]byte(`{"type":"track","event":"e","userId":"u"}`), 100))
	zw.Close()
	for _, c := range []struct {
		name, encoding string
		sent           []byte
	}{
		{"plain", "", []byte(`{"type":"track"`)},
		{"gzip, nothing sent", "gzip", nil},
		{"gzip, inside the header", "gzip", gz.Bytes()[:4]},
		{"gzip, inside the stream", "gzip", gz.Bytes()[:gz.Len()/2]},
	} {
		r := httptest.NewRequest("POST", "/v1/batch", &cutReader{bytes.NewReader(c.sent)})
		if c.encoding != "" {
			r.Header.Set("Content-Encoding", c.encoding)
		}
		var buf bytes.Buffer
		if err := readBody(r, &buf, 1<<20); err != errBodyTimeout {
			t.Errorf("%s: readBody = %v, want errBodyTimeout (408)", c.name, err)
		}
	}
}
