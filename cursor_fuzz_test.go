package c360_test

import (
	"encoding/base64"
	"strconv"
	"testing"
	"time"

	"github.com/c360dev/c360"
)

// FuzzDecodeCursor checks that any string decodes to a cursor or to a
// BAD_USER_INPUT refusal, never a panic, and that a decoded cursor encodes
// back to one that decodes to the same position in the same list.
func FuzzDecodeCursor(f *testing.F) {
	for _, c := range []c360.Cursor{
		{Time: time.Date(2025, 3, 1, 12, 0, 0, 123456000, time.UTC), ID: 42},
		{List: c360.ListEvents, Time: time.Date(2025, 3, 1, 12, 0, 0, 123456000, time.UTC), ID: 42},
		{List: c360.ListCustomers, Time: time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC), ID: 7},
		{Time: time.Unix(0, 0).UTC(), ID: 0},
		{Time: time.Date(1, 1, 1, 0, 0, 0, 0, time.UTC), ID: 1<<63 - 1},
		{Time: time.Date(0, 6, 1, 0, 0, 0, 0, time.UTC), ID: 3},
		{Time: pgMinTime, ID: 4},
	} {
		f.Add(c.Encode())
	}
	for _, s := range []string{"", "=", "MTIz", "YS5i", "LTEuLTE", "not a cursor", "Y2hnLjEuMg", "AAAA", "MC4w\n"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		c, err := c360.DecodeCursor(s, c360.ListEvents)
		if err != nil {
			if code := c360.ErrorCode(err); code != c360.EINVALID {
				t.Fatalf("DecodeCursor(%q) error code = %s, want %s", s, code, c360.EINVALID)
			}
			return
		}
		if c.ID < 0 {
			t.Fatalf("DecodeCursor(%q) = %+v: negative id", s, c)
		}
		if c.List != "" && c.List != c360.ListEvents {
			t.Fatalf("DecodeCursor(%q, events) = %+v: a cursor of another list", s, c)
		}
		if y := c.Time.Year(); c.Time.Before(pgMinTime) || y > 9999 {
			t.Fatalf("DecodeCursor(%q) = %+v: a time PostgreSQL cannot compare", s, c)
		}
		again, err := c360.DecodeCursor(c.Encode(), c360.ListEvents)
		if err != nil {
			t.Fatalf("DecodeCursor(Encode(%+v)) = %v", c, err)
		}
		if !again.Time.Equal(c.Time) || again.ID != c.ID || again.List != c.List {
			t.Fatalf("round trip of %q: got %+v, want %+v", s, again, c)
		}
	})
}

// pgMinTime is PostgreSQL's earliest timestamptz, 4714-11-24 BC (Go's
// year -4713).
var pgMinTime = time.Date(-4713, 11, 24, 0, 0, 0, 0, time.UTC)

// A cursor whose time PostgreSQL cannot hold is refused as bad input, not
// passed on to fail the statement as an internal error; one whose time it
// holds is accepted, year 0 (1 BC) and before included: a list pages past
// a row stored so.
func TestDecodeCursorRefusesTimesOutOfRange(t *testing.T) {
	for _, tm := range []time.Time{time.Date(0, 6, 1, 0, 0, 0, 0, time.UTC), time.Date(0, 1, 1, 0, 0, 0, 0, time.UTC).Add(-time.Microsecond), pgMinTime} {
		c, err := c360.DecodeCursor(c360.Cursor{Time: tm, ID: 1}.Encode(), "")
		if err != nil || !c.Time.Equal(tm) {
			t.Errorf("cursor at %v: %v %v, want it accepted", tm, c.Time, err)
		}
	}
	for _, tm := range []time.Time{time.UnixMicro(-9e17), pgMinTime.Add(-time.Microsecond), time.UnixMicro(9e17), time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC)} {
		s := c360.Cursor{Time: tm, ID: 1}.Encode()
		if _, err := c360.DecodeCursor(s, ""); c360.ErrorCode(err) != c360.EINVALID {
			t.Errorf("cursor at %v: %v, want BAD_USER_INPUT", tm, err)
		}
	}
	if _, err := c360.DecodeCursor(c360.Cursor{Time: time.Date(9999, 12, 31, 0, 0, 0, 0, time.UTC), ID: 1}.Encode(), ""); err != nil {
		t.Errorf("cursor at the end of 9999: %v", err)
	}
}

// A cursor names its list, and another list refuses it; a cursor handed out
// before cursors named their list is accepted by any list, as it was.
func TestDecodeCursorRefusesACursorOfAnotherList(t *testing.T) {
	at := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	events := c360.Cursor{List: c360.ListEvents, Time: at, ID: 3}.Encode()
	if c, err := c360.DecodeCursor(events, c360.ListEvents); err != nil || c.ID != 3 || !c.Time.Equal(at) {
		t.Errorf("an events cursor in events: %+v, %v", c, err)
	}
	for _, list := range []string{c360.ListCustomers, c360.ListConversations, c360.ListMessages, c360.ListAudit, c360.ListDeadLetters} {
		_, err := c360.DecodeCursor(events, list)
		if c360.ErrorCode(err) != c360.EINVALID || c360.ErrorMessage(err) != "cursor of another list" {
			t.Errorf("an events cursor in %s: %v, want BAD_USER_INPUT \"cursor of another list\"", list, err)
		}
	}
	// Encoded as every cursor was before they named their list.
	legacy := base64.RawURLEncoding.EncodeToString([]byte(strconv.FormatInt(at.UnixMicro(), 36) + ".3"))
	if c, err := c360.DecodeCursor(legacy, c360.ListCustomers); err != nil || c.ID != 3 || !c.Time.Equal(at) {
		t.Errorf("a cursor without a list: %+v, %v", c, err)
	}
}
