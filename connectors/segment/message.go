package segment

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"reflect"
	"strings"
	"time"

	"github.com/c360dev/c360"
	"github.com/c360dev/c360/connectors/webhook"
)

// Message is one Segment call (identify, track, page, screen, group or alias)
// as it arrives on the wire, in a single call's body or as an item of a
// batch. Fields c360 does not keep (integrations, per-item writeKey, ...)
// are read past and dropped.
type Message struct {
	Type        string `json:"type"`
	MessageID   ID     `json:"messageId"`
	UserID      ID     `json:"userId"`
	AnonymousID ID     `json:"anonymousId"`
	PreviousID  ID     `json:"previousId"`
	GroupID     ID     `json:"groupId"`

	Event    string `json:"event"`
	Name     string `json:"name"`
	Category string `json:"category"`

	// Traits are decoded (they are merged into the profile), their plain
	// numbers with every digit (Object.Map).
	Traits     Object `json:"traits"`
	Properties Object `json:"properties"`
	Context    Object `json:"context"`

	Timestamp         Time `json:"timestamp"`
	OriginalTimestamp Time `json:"originalTimestamp"`
	SentAt            Time `json:"sentAt"`

	// WriteKey authenticates a single call that carries no Authorization
	// header, as Segment's HTTP API allows.
	WriteKey string `json:"writeKey"`
}

// checkObjects returns why the call's properties or context are refused,
// if they are.
func (m *Message) checkObjects() error {
	if err := m.Traits.check("traits"); err != nil {
		return err
	}
	if err := m.Properties.check("properties"); err != nil {
		return err
	}
	return m.Context.check("context")
}

// ID is a Segment identifier (userId, anonymousId, messageId, ...). Clients
// send them as JSON strings or numbers; numbers are kept as their literal
// text, so userId 42 and "42" are the same user.
type ID string

var idType = reflect.TypeFor[ID]()

// idWants names what an ID wants in a decoding error: its Go kind, a
// string, would say less than UnmarshalJSON accepts.
var idWants = map[reflect.Type]string{idType: "a string or a number"}

// UnmarshalJSON implements json.Unmarshaler: a string, a number or null
// (webhook.StringOrNumber).
func (id *ID) UnmarshalJSON(b []byte) error {
	v, err := webhook.StringOrNumber(b, idType)
	*id = ID(v)
	return err
}

// Time is a Segment timestamp: an ISO-8601 string. A value that does not
// parse is treated as absent, so the event is stamped with the time c360
// received it rather than refused; Invalid then says so, for the answer
// and the metric of such values.
type Time struct {
	time.Time
	// Invalid reports a value sent but not read as a time: a string that
	// does not parse, or a number, bool, array or object.
	Invalid bool
}

// timeLayouts are the forms accepted, most common first, once timeText
// has made the date-time separator "T" and a zone "Z" uppercase: RFC 3339
// and the ISO-8601 forms clients print, with seconds (and any fraction) or
// minutes only, a zone Z, +hh:mm, +hhmm or +hh, or none (then UTC), or a
// date alone (its midnight UTC).
var timeLayouts = []string{
	time.RFC3339Nano,
	"2006-01-02T15:04:05.999999999",
	"2006-01-02T15:04:05.999999999Z0700",
	"2006-01-02T15:04:05.999999999Z07",
	"2006-01-02T15:04Z07:00",
	"2006-01-02T15:04",
	"2006-01-02T15:04Z0700",
	"2006-01-02T15:04Z07",
	"2006-01-02",
}

// UnmarshalJSON implements json.Unmarshaler; it never fails.
func (t *Time) UnmarshalJSON(b []byte) error {
	*t = Time{}
	if len(b) == 0 || b[0] == 'n' {
		return nil // null
	}
	if len(b) < 2 || b[0] != '"' {
		t.Invalid = true
		return nil
	}
	// The decoder has validated the literal: without escapes it is the
	// bytes between the quotes.
	s := string(b[1 : len(b)-1])
	if bytes.IndexByte(b, '\\') >= 0 {
		if err := json.Unmarshal(b, &s); err != nil {
			t.Invalid = true
			return nil
		}
	}
	if s == "" {
		return nil // absent, as some clients send it
	}
	s = timeText(s)
	for _, layout := range timeLayouts {
		if v, err := time.Parse(layout, s); err == nil {
			t.Time = v.UTC()
			return nil
		}
	}
	t.Invalid = true
	return nil
}

// timeText returns s with the spellings RFC 3339 allows besides the ones
// Go's layouts read made uppercase: a space or "t" between date and time
// (Python's str(datetime) prints a space), and a "z" zone.
func timeText(s string) string {
	if len(s) <= len("2006-01-02") || (s[10] != ' ' && s[10] != 't' && s[len(s)-1] != 'z') {
		return s
	}
	b := []byte(s)
	if b[10] == ' ' || b[10] == 't' {
		b[10] = 'T'
	}
	if b[len(b)-1] == 'z' {
		b[len(b)-1] = 'Z'
	}
	return string(b)
}

// UnreadTimes names m's time fields that were sent but are not times c360
// reads: they count as absent (Time).
func (m *Message) UnreadTimes() []string {
	var out []string
	for _, f := range []struct {
		name string
		t    *Time
	}{{"timestamp", &m.Timestamp}, {"originalTimestamp", &m.OriginalTimestamp}, {"sentAt", &m.SentAt}} {
		if f.t.Invalid {
			out = append(out, f.name)
		}
	}
	return out
}

// Call types, as named in a batch item's "type".
var callTypes = map[string]string{
	"identify": c360.EventIdentify,
	"track":    c360.EventTrack,
	"page":     c360.EventPage,
	"screen":   c360.EventScreen,
	"group":    c360.EventGroup,
	"alias":    c360.EventAlias,
}

// Source is the source name of every event this API ingests.
const Source = "segment"

// aliasUnresolved marks an alias previousId whose identity type is decided
// by the handler (see resolveAliases), which can ask the store.
const aliasUnresolved = ""

// Canonical converts m, a call of type typ, into a canonical event received at
// receivedAt. sentAt is the batch's sentAt, used when m has none. It returns
// an EINVALID error for a call Segment would refuse.
//
// Timestamps follow Segment: when the client sends both timestamp and
// sentAt, its clock skew (receivedAt - sentAt) is added to timestamp.
func (m *Message) Canonical(typ string, receivedAt, sentAt time.Time) (*c360.Event, error) {
	ev := &c360.Event{
		Type:       typ,
		Source:     Source,
		DedupeKey:  string(m.MessageID),
		ReceivedAt: receivedAt,
		OccurredAt: occurredAt(m, receivedAt, sentAt),
	}
	if m.UserID == "" && m.AnonymousID == "" {
		return nil, c360.Errorf(c360.EINVALID, "no userId or anonymousId: every call needs at least one")
	}
	ev.Identities = make([]c360.Identity, 0, 2)
	if m.UserID != "" {
		ev.Identities = append(ev.Identities, c360.Identity{Type: "user_id", Value: string(m.UserID)})
	}
	if m.AnonymousID != "" {
		ev.Identities = append(ev.Identities, c360.Identity{Type: "anonymous_id", Value: string(m.AnonymousID)})
	}
	switch typ {
	case c360.EventIdentify:
		ev.Traits = m.Traits.Map()
	case c360.EventTrack:
		if m.Event == "" {
			return nil, c360.Errorf(c360.EINVALID, "track call has no event name")
		}
		ev.Name = m.Event
	case c360.EventPage, c360.EventScreen:
		ev.Name = m.Name
		if m.Category != "" {
			props := m.Properties.Map()
			if _, ok := props["category"]; !ok {
				if props == nil {
					props = make(map[string]any, 1)
				}
				props["category"] = m.Category
				m.Properties.set(props)
			}
		}
	case c360.EventGroup:
		if m.GroupID == "" {
			return nil, c360.Errorf(c360.EINVALID, "group call has no groupId")
		}
		// A group's traits describe the group, not the person: they are
		// recorded on the event and leave the profile's traits alone.
		props := map[string]any{"groupId": string(m.GroupID)}
		if traits := m.Traits.Map(); traits != nil {
			props["traits"] = traits
		}
		m.Properties.set(props)
	case c360.EventAlias:
		if m.PreviousID == "" {
			return nil, c360.Errorf(c360.EINVALID, "alias call has no previousId")
		}
		if m.UserID == "" {
			return nil, c360.Errorf(c360.EINVALID, "alias call has no userId")
		}
		t := aliasUnresolved
		switch {
		case strings.TrimSpace(string(m.PreviousID)) == strings.TrimSpace(string(m.UserID)):
			// The user's own id (as ingest normalizes user ids): the alias
			// names that user id only and adds nothing, as an identify
			// repeating a profile's traits changes nothing. Taken as an
			// unknown user id, it would add an anonymous_id equal to it.
			t = "user_id"
		case m.PreviousID == m.AnonymousID:
			t = "anonymous_id"
		}
		ev.PreviousID = &c360.Identity{Type: t, Value: string(m.PreviousID)}
	default:
		return nil, c360.Errorf(c360.EINVALID, "unknown call type %q: use identify, track, page, screen, group or alias", typ)
	}
	if ev.DedupeKey == "" {
		// Segment's libraries always send one. Without it a retry cannot be
		// told from a new call, so a retried call is stored twice.
		ev.DedupeKey = newMessageID()
	}
	ev.RawProperties, ev.Properties = m.Properties.raw, m.Properties.m
	ev.RawContext, ev.Context = m.Context.raw, m.Context.m
	return ev, nil
}

// occurredAt applies Segment's timestamp rules; a time more than
// webhook.MaxFuture past receipt, or before c360.MinOccurredAt (1900), is
// replaced by the receipt's.
func occurredAt(m *Message, receivedAt, batchSentAt time.Time) time.Time {
	return webhook.OccurredAt(claimedAt(m, receivedAt, batchSentAt), receivedAt)
}

func claimedAt(m *Message, receivedAt, batchSentAt time.Time) time.Time {
	ts := m.Timestamp.Time
	if ts.IsZero() {
		ts = m.OriginalTimestamp.Time
	}
	if ts.IsZero() {
		return receivedAt
	}
	sent := m.SentAt.Time
	if sent.IsZero() {
		sent = batchSentAt
	}
	if sent.IsZero() {
		return ts
	}
	return ts.Add(receivedAt.Sub(sent))
}

func newMessageID() string {
	var b [16]byte
	rand.Read(b[:])
	return "c360-" + hex.EncodeToString(b[:])
}

// describeDecodeError turns a JSON decoding error into a sentence safe and
// useful for the client: which field, what was expected.
func describeDecodeError(err error) string {
	return webhook.DescribeJSONError(err, "the call", idWants)
}
