package c360

import (
	"encoding/base64"
	"strconv"
	"strings"
	"time"
)

// Cursor is a keyset position: a time and an id that breaks ties. Clients see
// it only as an opaque string.
type Cursor struct {
	Time time.Time
	ID   int64
}

// Encode returns the opaque form of c.
func (c Cursor) Encode() string {
	s := strconv.FormatInt(c.Time.UnixMicro(), 36) + "." + strconv.FormatInt(c.ID, 36)
	return base64.RawURLEncoding.EncodeToString([]byte(s))
}

// DecodeCursor parses an opaque cursor; a malformed one is EINVALID.
func DecodeCursor(s string) (Cursor, error) {
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil || len(b) > 40 {
		return Cursor{}, Errorf(EINVALID, "invalid cursor")
	}
	t, id, ok := strings.Cut(string(b), ".")
	if !ok {
		return Cursor{}, Errorf(EINVALID, "invalid cursor")
	}
	us, err1 := strconv.ParseInt(t, 36, 64)
	n, err2 := strconv.ParseInt(id, 36, 64)
	if err1 != nil || err2 != nil || n < 0 {
		return Cursor{}, Errorf(EINVALID, "invalid cursor")
	}
	// Only a time PostgreSQL can compare with a stored one: outside its
	// range the statement itself would fail.
	tm := time.UnixMicro(us).UTC()
	if tm.Year() < 1 || tm.Year() > 9999 {
		return Cursor{}, Errorf(EINVALID, "invalid cursor")
	}
	return Cursor{Time: tm, ID: n}, nil
}
