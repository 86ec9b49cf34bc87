// Package identity holds c360's identity logic: validating and normalizing
// identifiers (emails, phone numbers, user ids, ...), the workspace rules
// that govern how many identifiers of a type a customer may hold, and the
// planner that decides which customer an event resolves to and which
// customers it merges.
//
// The package is pure: no I/O and no imports from the rest of the project,
// so the resolution rules can be tested exhaustively and reused by the API,
// the ingestion workers and offline backfills alike.
package identity

import (
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"slices"
	"unicode/utf8"
)

// Standard identity types. Any other type that satisfies ValidType is a
// custom type (for example "crm_id" or "chatbot:webchat").
const (
	// TypeUserID is the workspace's own stable user identifier; it is the
	// strongest identifier and a customer holds at most one by default.
	TypeUserID = "user_id"
	// TypeEmail is an email address, stored lowercased.
	TypeEmail = "email"
	// TypePhone is a phone number, stored in E.164 form.
	TypePhone = "phone"
	// TypeAnonymousID is a device or cookie identifier; it is the weakest
	// identifier because devices are shared and cookies are reset.
	TypeAnonymousID = "anonymous_id"
)

// Size limits. They are exported so that storage schemas and API
// validators can agree with the normalizer instead of copying numbers.
const (
	// MaxTypeLen is the maximum length in bytes of an identity type.
	MaxTypeLen = 64
	// MaxValueLen is the maximum length in bytes of a normalized identity
	// value; it keeps index entries small and bounds the work per value.
	MaxValueLen = 256
)

// Identity is a (type, value) pair identifying a customer. It is defined
// here rather than imported so that the package has no project
// dependencies. It is comparable and therefore usable as a map key.
type Identity struct {
	Type  string `json:"type"`
	Value string `json:"value"`
}

// String formats the identity as type:"value" for logs and messages.
func (id Identity) String() string {
	return fmt.Sprintf("%s:%q", id.Type, id.Value)
}

// ErrBlocked is returned by Normalizer.Normalize for placeholder values such
// as "null", "undefined" or "0". Such values are sent by broken
// integrations for many unrelated people, so resolving on them would merge
// strangers into one customer; callers must ignore the identifier rather
// than reject the whole event.
var ErrBlocked = errors.New("identity: blocked value")

// InvalidError reports an identity that Normalize refused. Field is "type"
// when the type name is malformed and "value" when the value is; Type and
// Value are the identity as received, and Reason is a human sentence that
// can be shown to the API client who sent it.
type InvalidError struct {
	Field  string
	Type   string
	Value  string
	Reason string
}

// Error formats the error, e.g. `invalid phone "12": not a valid phone
// number`. Long values are shortened so a hostile payload cannot blow up
// log lines.
func (e *InvalidError) Error() string {
	if e.Field == "type" {
		return fmt.Sprintf("invalid identity type %q: %s", shorten(e.Type), e.Reason)
	}
	return fmt.Sprintf("invalid %s %q: %s", shorten(e.Type), shorten(e.Value), e.Reason)
}

// shorten truncates s to a bounded number of bytes on a rune boundary.
func shorten(s string) string {
	const max = 80
	if len(s) <= max {
		return s
	}
	cut := max
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "…"
}

// ValidType reports whether t is a well-formed identity type: it matches
// ^[a-z][a-z0-9_.:-]*$ and is at most MaxTypeLen bytes. Types are part of
// lock keys and index keys, so they are kept to a small, case-sensitive
// alphabet instead of being normalized.
func ValidType(t string) bool {
	if len(t) == 0 || len(t) > MaxTypeLen {
		return false
	}
	if t[0] < 'a' || t[0] > 'z' {
		return false
	}
	for i := 1; i < len(t); i++ {
		c := t[i]
		switch {
		case 'a' <= c && c <= 'z', '0' <= c && c <= '9':
		case c == '_', c == '.', c == ':', c == '-':
		default:
			return false
		}
	}
	return true
}

// Priority returns the built-in merge priority of an identity type; higher
// wins. The order (user_id > email > phone > custom > anonymous_id) follows
// how reliably each kind of identifier names exactly one person.
func Priority(t string) int {
	switch t {
	case TypeUserID:
		return 400
	case TypeEmail:
		return 300
	case TypePhone:
		return 200
	case TypeAnonymousID:
		return 0
	default:
		return 100
	}
}

// compareIdentity orders identities by (Type, Value), byte-wise.
func compareIdentity(a, b Identity) int {
	if c := cmp.Compare(a.Type, b.Type); c != 0 {
		return c
	}
	return cmp.Compare(a.Value, b.Value)
}

// Sort returns the identities ordered by (Type, Value) with exact
// duplicates removed. The store takes row locks in this fixed order so
// that two concurrent events touching the same identities cannot deadlock.
// The input slice is not modified.
func Sort(ids []Identity) []Identity {
	if len(ids) == 0 {
		return nil
	}
	out := slices.Clone(ids)
	slices.SortFunc(out, compareIdentity)
	return slices.Compact(out)
}

// Key returns a stable 64-bit key for an identity within a workspace, for
// use with pg_advisory_xact_lock. It is FNV-1a 64 over the workspace id (8
// bytes, big-endian), the type, a 0 byte and the value. The algorithm is
// fixed because processes running different releases during a rolling
// deploy must agree on the key; the 0 byte cannot occur in a type, so
// ("ab", "c") and ("a", "bc") hash differently. A collision only makes two
// unrelated identities share a lock, which costs throughput, not
// correctness.
func Key(workspaceID int64, id Identity) int64 {
	h := fnv.New64a()
	var buf [8]byte
	binary.BigEndian.PutUint64(buf[:], uint64(workspaceID))
	_, _ = h.Write(buf[:])
	_, _ = io.WriteString(h, id.Type)
	_, _ = h.Write([]byte{0})
	_, _ = io.WriteString(h, id.Value)
	return int64(h.Sum64())
}
