package hub_test

import (
	"testing"

	"github.com/c360dev/c360"
	"github.com/c360dev/c360/hub"
)

// FuzzDecodeChangeCursor checks that any string a subscriber passes as
// `after` decodes to a change cursor or to a BAD_USER_INPUT refusal, never a
// panic, and that a decoded cursor survives encoding again.
func FuzzDecodeChangeCursor(f *testing.F) {
	f.Add(hub.Cursor{CustomerID: 1, Version: 0}.Encode())
	f.Add(hub.Cursor{CustomerID: 1<<63 - 1, Version: 1<<63 - 1}.Encode())
	for _, s := range []string{"", "Y2hnLg", "Y2hnLjEuMg", "Y2hnLi0xLjI", "MTIz", "Y2hnLjAuMA", "!!!!"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		c, err := hub.DecodeCursor(s)
		if err != nil {
			if code := c360.ErrorCode(err); code != c360.EINVALID {
				t.Fatalf("DecodeCursor(%q) error code = %s, want %s", s, code, c360.EINVALID)
			}
			return
		}
		if c.CustomerID <= 0 || c.Version < 0 {
			t.Fatalf("DecodeCursor(%q) = %+v: out of range", s, c)
		}
		if again, err := hub.DecodeCursor(c.Encode()); err != nil || again != c {
			t.Fatalf("round trip of %q: got %+v, %v, want %+v", s, again, err, c)
		}
	})
}
