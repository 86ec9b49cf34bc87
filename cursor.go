package c360

import (
	"encoding/base64"
	"strconv"
	"strings"
	"time"
)

// The lists a Cursor positions in. A cursor names its list, and a list
// refuses another's cursor: its time and id would position the page
// somewhere arbitrary.
const (
	ListCustomers     = "customers"
	ListEvents        = "events"
	ListConversations = "conversations"
	ListMessages      = "messages"
	ListAudit         = "audit"
	ListDeadLetters   = "deadletters"
)

// Cursor is a keyset position in a list: a time and an id that breaks ties.
// Clients see it only as an opaque string.
type Cursor struct {
	// List is one of the List constants; empty in a cursor handed out
	// before cursors named their list, which any list accepts.
	List string
	Time time.Time
	ID   int64
}

// Encode returns the opaque form of c.
func (c Cursor) Encode() string {
	s := strconv.FormatInt(c.Time.UnixMicro(), 36) + "." + strconv.FormatInt(c.ID, 36)
	if c.List != "" {
		s = c.List + ":" + s
	}
	return base64.RawURLEncoding.EncodeToString([]byte(s))
}

// minCursorMicros is PostgreSQL's earliest timestamptz, 4714-11-24
// 00:00:00 UTC BC, in microseconds since the Unix epoch.
const minCursorMicros = -210866803200 * 1_000_000

// DecodeCursor parses an opaque cursor of list; a malformed one, or one of
// another list, is EINVALID.
func DecodeCursor(s, list string) (Cursor, error) {
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil || len(b) > 64 {
		return Cursor{}, Errorf(EINVALID, "invalid cursor")
	}
	var c Cursor
	pos := string(b)
	if l, rest, ok := strings.Cut(pos, ":"); ok {
		c.List, pos = l, rest
	}
	t, id, ok := strings.Cut(pos, ".")
	if !ok {
		return Cursor{}, Errorf(EINVALID, "invalid cursor")
	}
	us, err1 := strconv.ParseInt(t, 36, 64)
	n, err2 := strconv.ParseInt(id, 36, 64)
	if err1 != nil || err2 != nil || n < 0 {
		return Cursor{}, Errorf(EINVALID, "invalid cursor")
	}
	// Only a time PostgreSQL can compare with a stored one: outside its
	// range the statement itself would fail. Every time it stores back to
	// its earliest is in, year 0 (1 BC) and before included (a row stored
	// before ingest bounded the past, MinOccurredAt): the list must page
	// past it. Nothing c360 stores is past 9999 (ingest bounds the future,
	// MaxFuture).
	tm := time.UnixMicro(us).UTC()
	if us < minCursorMicros || tm.Year() > 9999 {
		return Cursor{}, Errorf(EINVALID, "invalid cursor")
	}
	if c.List != "" && c.List != list {
		return Cursor{}, Errorf(EINVALID, "cursor of another list")
	}
	c.Time, c.ID = tm, n
	return c, nil
}
