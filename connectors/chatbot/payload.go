package chatbot

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"reflect"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/c360dev/c360"
	"github.com/c360dev/c360/connectors/webhook"
)

// Payload is the body of a chatbot webhook: the turns of one session with
// the person's identities, plus what the bot learned about them.
type Payload struct {
	// SessionID is the bot's conversation id; its turns go on one chat
	// conversation.
	SessionID string `json:"sessionId"`
	// Identities identify the person: any type (email, phone, user_id,
	// anonymous_id, or a custom one such as chatbot:webchat).
	Identities []c360.Identity `json:"identities"`
	// Traits, optional, are set on the profile as an identify call's are.
	Traits Traits `json:"traits"`
	// TraitsAt, optional, is when the bot learned the traits (RFC 3339). It
	// dates the identify event and is part of its dedupe key, so traits
	// that return to an earlier value are applied; without it, the same
	// traits within a session are taken as a replay.
	TraitsAt string    `json:"traitsAt"`
	traitsAt time.Time // TraitsAt, parsed by validate
	Turns    []Turn    `json:"turns"`
	// Observations are free-form facts the bot noticed.
	Observations []Observation `json:"observations"`
}

// Turn is one message of the conversation.
type Turn struct {
	// ID is unique within the session; a turn delivered again is stored once.
	ID string `json:"id"`
	// Role is user (from the person), assistant or bot (to the person).
	Role string `json:"role"`
	Text string `json:"text"`
	// Time is RFC 3339; when absent, the time c360 received the turn.
	Time string `json:"time"`
	// Intent, optional, is what the bot understood the turn to ask.
	Intent     string   `json:"intent"`
	Confidence *float64 `json:"confidence"`

	at time.Time // Time, parsed by validate
}

// Observation is something the bot learned about the person.
type Observation struct {
	// ID, optional, identifies the observation within the session; without
	// it, the text does.
	ID         string   `json:"id"`
	Text       string   `json:"text"`
	Confidence *float64 `json:"confidence"`
}

// Source is the source name of every event the webhook ingests.
const Source = "chatbot"

// Event names of the track events the webhook records.
const (
	EventIntentDetected = "Intent Detected"
	EventObservation    = "Observation"
)

// traitsAtKeyLayout writes traitsAt into a dedupe key: every instant of
// years 0 to 9999 to the nanosecond, without the ':' that would end the key
// early (see turnKey).
const traitsAtKeyLayout = "20060102T150405.000000000Z"

// Field limits. Dedupe keys are built from the session and turn ids, and
// must fit the store's 256 bytes.
const (
	maxSessionIDLen = 128
	maxTurnIDLen    = 64
	maxIntentLen    = 256
	maxItems        = 1000 // turns plus observations in one request
)

// Dedupe keys. A turn's key is "<sessionId>:<turn id>". Turn and
// observation ids use URL-safe characters only (no ':' or '/'), so the part
// after a key's last ':' tells what the key is and no two keys collide, even
// across sessions whose ids contain ':':
//
//	<session>:<turn id>                 the turn's message
//	<session>:<turn id>/intent          the turn's intent
//	<session>:/traits/<digest>          the traits
//	<session>:/traits/<digest>/<time>   the traits, with traitsAt
//	                                    (UTC, traitsAtKeyLayout: no ':')
//	<session>:/observation/<id|digest>  an observation
func turnKey(sid, id string) string       { return sid + ":" + id }
func intentKey(sid, id string) string     { return sid + ":" + id + "/intent" }
func traitsKey(sid, digest string) string { return sid + ":/traits/" + digest }
func observationKey(sid, x string) string { return sid + ":/observation/" + x }

// validID reports whether s is a usable turn or observation id: 1 to 64
// letters, digits, '.', '_', '~' or '-'.
func validID(s string) bool {
	if s == "" || len(s) > maxTurnIDLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '.' || c == '_' || c == '~' || c == '-') {
			return false
		}
	}
	return true
}

// Traits are a payload's traits, decoded as a Segment identify call's are
// (c360.DecodeObject): numbers keep their digits, where a float64 would
// store a loyalty id of 12345678901234567 as 12345678901234568, and a
// number no float64 holds is refused naming where it is
// (traits.tiers[1].max).
type Traits map[string]any

// UnmarshalJSON implements json.Unmarshaler: an object or null.
func (t *Traits) UnmarshalJSON(b []byte) error {
	if string(b) == "null" {
		*t = nil
		return nil
	}
	m, err := c360.DecodeObject(b)
	*t = m
	return err
}

// ParsePayload decodes and validates a webhook body. Keys are
// case-sensitive and given once (webhook.CheckKeys): encoding/json alone
// would store a body with "sessionId":"s" and "SESSIONID":"t" under
// session t. Other keys are ignored.
func ParsePayload(body []byte) (*Payload, error) {
	if err := webhook.CheckKeys(body, reflect.TypeFor[Payload](), "the body"); err != nil {
		return nil, err
	}
	var p Payload
	if err := json.Unmarshal(body, &p); err != nil {
		return nil, c360.Errorf(c360.EINVALID, "%s", webhook.DescribeJSONError(err, "the body", nil))
	}
	if err := p.validate(); err != nil {
		return nil, err
	}
	return &p, nil
}

func (p *Payload) validate() error {
	switch {
	case strings.TrimSpace(p.SessionID) == "":
		return invalid("sessionId is missing")
	case len(p.SessionID) > maxSessionIDLen:
		return invalid("sessionId is longer than %d bytes", maxSessionIDLen)
	case strings.TrimSpace(p.SessionID) != p.SessionID:
		// Stored as sent, " s " and "s" would be two sessions: refused,
		// not trimmed, so that the keys of a stored session stay its own.
		return invalid("sessionId begins or ends with white space: send it without")
	case c360.CheckStorable("sessionId", p.SessionID) != nil:
		return c360.CheckStorable("sessionId", p.SessionID)
	case len(p.Identities) == 0:
		return invalid("identities is empty: give at least one {type, value}")
	case len(p.Turns) == 0 && len(p.Observations) == 0 && len(p.Traits) == 0:
		return invalid("nothing to record: give turns, observations or traits")
	case len(p.Turns)+len(p.Observations) > maxItems:
		return invalid("more than %d turns and observations in one request", maxItems)
	case p.TraitsAt != "" && len(p.Traits) == 0:
		return invalid("traitsAt is given without traits")
	}
	if err := traitsStorable(p.Traits); err != nil {
		return err
	}
	if p.TraitsAt != "" {
		t, err := time.Parse(time.RFC3339Nano, p.TraitsAt)
		if err != nil {
			return invalid("traitsAt must be an RFC 3339 time such as 2025-01-31T09:30:00Z")
		}
		p.traitsAt = t.UTC()
	}
	seen := make(map[string]bool, len(p.Turns))
	for i := range p.Turns {
		t := &p.Turns[i]
		switch {
		case t.ID == "":
			return invalid("turns[%d].id is missing", i)
		case !validID(t.ID):
			return invalid("turns[%d].id must be 1 to %d letters, digits, '.', '_', '~' or '-'", i, maxTurnIDLen)
		case seen[t.ID]:
			return invalid("turns[%d].id %q appears twice", i, t.ID)
		case t.Role != "user" && t.Role != "assistant" && t.Role != "bot":
			return invalid("turns[%d].role must be user, assistant or bot", i)
		case t.Text == "":
			return invalid("turns[%d].text is missing", i)
		case strings.TrimSpace(t.Text) == "":
			// A message with nothing to read, as sendMessage refuses one.
			return invalid("turns[%d].text is only white space", i)
		case hasNUL(t.Text):
			return c360.CheckStorable(fmt.Sprintf("turns[%d].text", i), t.Text)
		case len(t.Intent) > maxIntentLen:
			return invalid("turns[%d].intent is longer than %d bytes", i, maxIntentLen)
		case hasNUL(t.Intent):
			return c360.CheckStorable(fmt.Sprintf("turns[%d].intent", i), t.Intent)
		case !validConfidence(t.Confidence):
			return invalid("turns[%d].confidence must be between 0 and 1", i)
		}
		seen[t.ID] = true
		if t.Time != "" {
			at, err := time.Parse(time.RFC3339Nano, t.Time)
			if err != nil {
				return invalid("turns[%d].time must be an RFC 3339 time such as 2025-01-31T09:30:00Z", i)
			}
			t.at = at.UTC()
		}
	}
	// An observation's id is its dedupe key: a second one with the same id
	// would be taken for a redelivery of the first and its text dropped.
	seenObs := make(map[string]bool, len(p.Observations))
	for i, o := range p.Observations {
		switch {
		case o.Text == "":
			return invalid("observations[%d].text is missing", i)
		case hasNUL(o.Text):
			return c360.CheckStorable(fmt.Sprintf("observations[%d].text", i), o.Text)
		case o.ID != "" && !validID(o.ID):
			return invalid("observations[%d].id must be 1 to %d letters, digits, '.', '_', '~' or '-'", i, maxTurnIDLen)
		case o.ID != "" && seenObs[o.ID]:
			return invalid("observations[%d].id %q appears twice", i, o.ID)
		case !validConfidence(o.Confidence):
			return invalid("observations[%d].confidence must be between 0 and 1", i)
		}
		if o.ID != "" {
			seenObs[o.ID] = true
		}
	}
	return nil
}

// hasNUL reports whether s holds a NUL character, which PostgreSQL's text
// and jsonb refuse: an event carrying one could only become a dead letter
// that no replay could store.
func hasNUL(s string) bool { return strings.IndexByte(s, 0) >= 0 }

// traitsStorable refuses traits with a NUL character in a key or a string
// value at any depth, naming the trait, as c360.CheckStorable words it.
func traitsStorable(traits map[string]any) error {
	for k, v := range traits {
		if hasNUL(k) {
			return c360.CheckStorable("a key of traits", k)
		}
		if bad, ok := nulIn(v); ok {
			name := "traits." + k
			if len(k) > 64 || !utf8.ValidString(k) {
				name = "a value of traits"
			}
			return c360.CheckStorable(name, bad)
		}
	}
	return nil
}

// nulIn returns a string or an object key in a decoded JSON value that
// holds a NUL character, if there is one.
func nulIn(v any) (string, bool) {
	switch v := v.(type) {
	case string:
		return v, hasNUL(v)
	case []any:
		for _, x := range v {
			if bad, ok := nulIn(x); ok {
				return bad, true
			}
		}
	case map[string]any:
		for k, x := range v {
			if hasNUL(k) {
				return k, true
			}
			if bad, ok := nulIn(x); ok {
				return bad, true
			}
		}
	}
	return "", false
}

func validConfidence(c *float64) bool { return c == nil || (*c >= 0 && *c <= 1) }

func invalid(format string, args ...any) error {
	return c360.Errorf(c360.EINVALID, format, args...)
}

// Events turns the payload into canonical events, in this order: the
// traits (an identify event), then each turn as a chat message followed by
// its intent (a track event), then the observations (track events). Every
// event's dedupe key derives from the session, so a webhook delivered again
// is stored once. labels name each event for error messages. Events takes
// the times ParsePayload parsed (a traitsAt of year 1 included): call it on
// a payload ParsePayload returned.
func (p *Payload) Events(receivedAt time.Time) (events []*c360.Event, labels []string) {
	sid := p.SessionID
	// The keys are unique per session, and a session id only per bot: a
	// stored key is a redelivery only for the same person (an identity in
	// common), and another person's reuse of it is refused (ServeHTTP).
	base := func(typ, key string, at time.Time) *c360.Event {
		return &c360.Event{Type: typ, Source: Source, DedupeKey: key, Identities: p.Identities,
			OccurredAt: at, ReceivedAt: receivedAt, RepeatSharesIdentity: true}
	}
	if len(p.Traits) > 0 {
		// Changed traits make a new key; the same traits again are a replay,
		// unless traitsAt tells them apart.
		key, at := traitsKey(sid, digest(p.Traits)), receivedAt
		if p.TraitsAt != "" {
			key += "/" + p.traitsAt.Format(traitsAtKeyLayout)
			// A time far ahead, or before 1900, dates nothing (the key
			// still tells the traits apart).
			at = webhook.OccurredAt(p.traitsAt, receivedAt)
		}
		ev := base(c360.EventIdentify, key, at)
		ev.Traits = p.Traits
		events, labels = append(events, ev), append(labels, "traits")
	}
	for i := range p.Turns {
		t := &p.Turns[i]
		at := receivedAt
		if t.Time != "" {
			// A time far ahead, or before 1900, is not believed, as for
			// every connector.
			at = webhook.OccurredAt(t.at, receivedAt)
		}
		ev := base(c360.EventMessage, turnKey(sid, t.ID), at)
		dir, status := c360.DirectionInbound, "received"
		if t.Role != "user" {
			dir, status = c360.DirectionOutbound, "sent"
		}
		ev.Message = &c360.MessageInput{Channel: c360.ChannelChat, Direction: dir, Body: t.Text, Status: status}
		// threadKey selects the session's conversation.
		ev.Properties = map[string]any{"threadKey": sid, "sessionId": sid, "turnId": t.ID, "role": t.Role}
		if t.Intent != "" {
			ev.Properties["intent"] = t.Intent
		}
		if t.Confidence != nil {
			ev.Properties["confidence"] = *t.Confidence
		}
		events, labels = append(events, ev), append(labels, fmt.Sprintf("turn %q", t.ID))
		if t.Intent != "" {
			iev := base(c360.EventTrack, intentKey(sid, t.ID), at)
			iev.Name = EventIntentDetected
			iev.Properties = map[string]any{"intent": t.Intent, "sessionId": sid, "turnId": t.ID, "text": t.Text}
			if t.Confidence != nil {
				iev.Properties["confidence"] = *t.Confidence
			}
			events, labels = append(events, iev), append(labels, fmt.Sprintf("intent of turn %q", t.ID))
		}
	}
	for i, o := range p.Observations {
		key := o.ID
		if key == "" {
			key = digest(o.Text)
		}
		ev := base(c360.EventTrack, observationKey(sid, key), receivedAt)
		ev.Name = EventObservation
		ev.Properties = map[string]any{"text": o.Text, "sessionId": sid}
		if o.ID != "" {
			ev.Properties["observationId"] = o.ID
		}
		if o.Confidence != nil {
			ev.Properties["confidence"] = *o.Confidence
		}
		events, labels = append(events, ev), append(labels, fmt.Sprintf("observations[%d]", i))
	}
	return events, labels
}

// digest is a short, stable hash of v's JSON (map keys sorted).
func digest(v any) string {
	b, _ := json.Marshal(v)
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:16])
}
