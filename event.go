package c360

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// Event types. Segment's calls keep their names; connectors add message and
// message_status for conversations.
const (
	EventIdentify      = "identify"
	EventTrack         = "track"
	EventPage          = "page"
	EventScreen        = "screen"
	EventGroup         = "group"
	EventAlias         = "alias"
	EventMessage       = "message"
	EventMessageStatus = "message_status"
)

// Event is the canonical form every source is turned into before ingest.
type Event struct {
	ID          int64
	WorkspaceID int64
	CustomerID  int64

	Type       string
	Name       string // track event name, page/screen name
	Identities []Identity
	// PreviousID is the alias call's previous identifier, resolved like the others.
	PreviousID *Identity
	Traits     map[string]any
	// TraitsIfAbsent are set only on a customer who has no value for them
	// yet: a provider's profile name never overwrites a name already known.
	TraitsIfAbsent map[string]any
	// Properties are set by a source, as a map or as RawProperties: a JSON
	// object as the source received it, which a decoder validated and
	// PlainObject accepts. Such an object goes into the store as it came
	// and keeps every digit of its numbers; decoding it into a map only to
	// encode it again cost more than the rest of a Segment call. An event
	// read back from the store has RawProperties too, the object as
	// stored: a page of events is mostly handed on as it is.
	// PropertiesJSON reads whichever is set. Message events carry
	// Properties (the threadKey is read from it).
	Properties    map[string]any
	RawProperties json.RawMessage
	// Context is the source's context object, as a map or as RawContext,
	// which PlainObject accepts (as RawProperties).
	Context    map[string]any
	RawContext json.RawMessage

	Source     string // graphql, segment, twilio, whatsapp, chatbot
	DedupeKey  string // the source's own id (messageId, MessageSid); unique per workspace and source
	OccurredAt time.Time
	ReceivedAt time.Time
	// RepeatSharesIdentity is set by a source whose keys are unique per
	// person rather than per workspace (a chatbot's session id, which two
	// bots of a workspace may both number 1, 2, ...). An event whose key is
	// stored already is then a redelivery only when the two share an
	// identity (after normalization); one that shares none is another
	// person's event under a reused key, and Ingest refuses the whole call
	// with a *KeyReusedError, writing nothing.
	RepeatSharesIdentity bool
	// FromClientKey is set by a source for an event sent with a client
	// key (RoleClient), which may be public: whoever reads a web page can
	// send such an event in the name of any anonymousId or userId. It
	// links only the identities it names (Identities and PreviousID): an
	// identify's email and phone traits stay traits and identify nobody,
	// so it can neither attach a phone number to another person's profile
	// nor merge two people by them. Its traits are dated at ReceivedAt
	// for trait precedence (TraitsAt), whatever time its sender claims.
	FromClientKey bool
	// Unreadable is set by a source that could not read the event whole (a
	// provider's item of a shape it does not know: a field of another JSON
	// type), and says why. Ingest refuses such an event as invalid with
	// this reason, whatever else it holds, and a caller that asks for it
	// (WithInvalidAsDeadLetters) keeps it as a dead letter, holding what
	// could be read (its key, its identities, the item in its properties),
	// for an admin to see; a replay refuses it again. A webhook whose
	// provider would retry a refused delivery in vain thus acknowledges the
	// rest of it without losing this one.
	Unreadable string

	Message *MessageInput // set for message and message_status events
	Consent *ConsentInput // set when the event changes consent
	// Dropped lists, on an event read back with its drop records
	// (FindEventByID reads them, a page of events when asked:
	// PageArgs.Dropped), the identifiers it dropped, as ingest recorded
	// them (events.dropped): empty, not nil, when it dropped none; nil
	// when they were not read.
	Dropped []*DroppedIdentity
}

// DroppedList returns the identifiers the event dropped (Event.dropped).
// An event read without its drop records cannot tell, and says so rather
// than answer that it dropped none.
func (e *Event) DroppedList() ([]*DroppedIdentity, error) {
	if e.Dropped == nil {
		return nil, fmt.Errorf("event %d was read without its drop records", e.ID)
	}
	return e.Dropped, nil
}

// MessageInput is the conversation part of a message event.
type MessageInput struct {
	Channel    string // sms, whatsapp, chat
	Direction  string // inbound, outbound
	Body       string
	MediaURLs  []string
	ProviderID string
	Status     string
	// ErrorCode is the provider's error code of a failed or undelivered message.
	ErrorCode string
	// OutboundID is, on a status, c360's id of the outbound message it is
	// about, as the status callback's URL names it (0 if it names none): the
	// status attaches ProviderID to that message when no message has it yet.
	OutboundID int64
}

// ConsentInput records an opt-in or opt-out carried by an event.
type ConsentInput struct {
	Channel string
	Status  string // opted_in, opted_out
}

// MaxFuture is how far past its receipt an event may say it happened.
// Further, the clock that stamped it is wrong (or the call is made up; a
// client write key is public in a browser), and the time is not believed:
// an event dated years ahead would win every later trait update, since
// the newest observation of a trait wins. Ingest applies it to every
// event, whatever its source (GraphQL's timestamp included).
const MaxFuture = 24 * time.Hour

// MinOccurredAt is the earliest time an event may say it happened. No
// customer event c360 records (a web or app call, a message, a purchase in
// a historical import) took place before 1900: an earlier time is a clock
// or a formatter gone wrong (Go's zero time, year 0, a date field read as
// the year), and is not believed, as one too far ahead is not. The bound
// also keeps every stored time in the range a cursor holds.
var MinOccurredAt = time.Date(1900, 1, 1, 0, 0, 0, 0, time.UTC)

// OccurredAt returns the time an event claims, unless it is more than
// MaxFuture past receivedAt or before MinOccurredAt: then receivedAt. It is
// cut to microseconds, PostgreSQL's precision, so that what is derived from
// it (a trait's observedAt, kept in JSON) is the event's time as stored.
func OccurredAt(claimed, receivedAt time.Time) time.Time {
	if claimed.After(receivedAt.Add(MaxFuture)) || claimed.Before(MinOccurredAt) {
		claimed = receivedAt
	}
	return claimed.Truncate(time.Microsecond)
}

// ClientKeyDedupePrefix starts the dedupe key of every event a source
// received with a client key (FromClientKey), before the id its sender
// sent (a Segment call's messageId). A client key is public, so its calls
// keep a dedupe space of their own: a call made up with it cannot claim
// the messageId of a call a server sends with the write key, which would
// then be answered as stored and never be, nor the other way round. A
// source refuses a key that starts with it from any other caller.
const ClientKeyDedupePrefix = "c360-client:"

// SentKey returns the event's dedupe key as its sender sent it: without
// ClientKeyDedupePrefix for an event sent with a client key. The limits
// on a key (256 bytes) are on what the sender sent.
func (e *Event) SentKey() string {
	if e.FromClientKey {
		return strings.TrimPrefix(e.DedupeKey, ClientKeyDedupePrefix)
	}
	return e.DedupeKey
}

// TraitsAt is the time the event's traits were observed, which trait
// precedence compares (the newest observation wins): OccurredAt, or
// ReceivedAt for an event sent with a client key, whose sender may claim
// any time up to MaxFuture ahead to make made-up traits outlast true ones.
func (e *Event) TraitsAt() time.Time {
	if e.FromClientKey {
		return e.ReceivedAt
	}
	return e.OccurredAt
}

// IngestResult is what ingest did with one event.
type IngestResult struct {
	EventID    int64
	CustomerID int64
	// Duplicate is true when the event was already stored: nothing changed.
	Duplicate bool
	// Dropped lists identifiers left out of resolution, with the reason.
	Dropped []string
	// NoMessage is true for a message_status event whose provider id matches
	// no stored message: the status is kept as an event and nothing else changed.
	NoMessage bool
}

// KeyReusedError reports that an event marked RepeatSharesIdentity has
// the dedupe key of a stored event with which it shares no identity: not a
// redelivery, but another person's event under the same key. Ingest wrote
// nothing of the call. Its code is ECONFLICT; errors.As on *Error and
// ErrorCode see through it.
type KeyReusedError struct {
	Source, DedupeKey string
}

// Error implements the error interface.
func (e *KeyReusedError) Error() string {
	return fmt.Sprintf("%s event %q: the key is stored already for an event of another person", e.Source, e.DedupeKey)
}

// Unwrap returns the domain error, so that callers see ECONFLICT.
func (e *KeyReusedError) Unwrap() error {
	return Errorf(ECONFLICT, "the %s key %q is stored already for another person's event", e.Source, e.DedupeKey)
}

// Ingester stores canonical events exactly once and applies them to profiles.
type Ingester interface {
	// Ingest applies events in one transaction; it returns only after commit.
	Ingest(ctx context.Context, workspaceID int64, events []*Event) ([]IngestResult, error)
}

// EventService reads stored events.
type EventService interface {
	FindEventByID(ctx context.Context, workspaceID, id int64) (*Event, error)
	// EventsByCustomers returns a page of events, newest first, per customer.
	EventsByCustomers(ctx context.Context, workspaceID int64, customerIDs []int64, args PageArgs) (map[int64]*Page[*Event], error)
}

// DroppedIdentity is an identifier an event carried that did not reach
// its customer, and why (IngestResult.Dropped, kept on the event): taking
// in its owner would have broken an identity limit or joined customers
// split apart, the workspace's rules block its value, or a status
// callback's number did not normalize.
type DroppedIdentity struct {
	// Type and Value name the identifier as the event carried it
	// (normalized, or as received where it did not normalize); both are
	// empty for a record that names none.
	Type, Value string
	Reason      string
}

// ParseDropped reads one of an event's drop records, as ingest words
// them: `type "value": why`, or `invalid type "value": why` for an
// identifier that did not normalize (identity.InvalidError). A record of
// another shape is all reason.
func ParseDropped(s string) DroppedIdentity {
	typ, rest, _ := strings.Cut(s, " ")
	prefix := ""
	if typ == "invalid" {
		typ, rest, _ = strings.Cut(rest, " ")
		prefix = "invalid: "
	}
	quoted, err := strconv.QuotedPrefix(rest)
	if typ == "" || err != nil || !strings.HasPrefix(rest[len(quoted):], ": ") {
		return DroppedIdentity{Reason: s}
	}
	value, err := strconv.Unquote(quoted)
	if err != nil {
		return DroppedIdentity{Reason: s}
	}
	return DroppedIdentity{Type: typ, Value: value, Reason: prefix + rest[len(quoted)+2:]}
}

// PropertiesJSON returns the properties as a JSON object.
func (e *Event) PropertiesJSON() (json.RawMessage, error) {
	if e.RawProperties != nil {
		return e.RawProperties, nil
	}
	if e.Properties == nil {
		return json.RawMessage(`{}`), nil
	}
	return json.Marshal(e.Properties)
}

// maxPlainNumber bounds the length of a number literal PlainObject lets
// through: PostgreSQL's numeric holds at most 16,383 digits after the
// point, and a reader that decodes numbers as float64 (an MCP client, say)
// fails on one past 1.8e308. A literal past this bound is read as a
// float64, as encoding/json reads any number.
const maxPlainNumber = 300

// PlainObject reports whether raw, a valid JSON text, is an object that
// PostgreSQL's jsonb takes with its meaning unchanged, numbers with every
// digit: valid UTF-8; no \u0000 and no surrogate escape (PostgreSQL refuses
// the first and a lone surrogate, which encoding/json would have replaced
// with U+FFFD); no number with an exponent (1e400 is valid JSON that no
// float64 holds, and PostgreSQL would spell it out in 401 digits) or longer
// than maxPlainNumber. Such an object can be stored as it came; any other
// is decoded first (DecodeObject). raw must be valid JSON: PlainObject
// does not check what a decoder checks.
func PlainObject(raw []byte) bool {
	i := 0
	for i < len(raw) && (raw[i] == ' ' || raw[i] == '\t' || raw[i] == '\n' || raw[i] == '\r') {
		i++
	}
	if i == len(raw) || raw[i] != '{' || !utf8.Valid(raw) {
		return false
	}
	inString, number := false, 0 // number: the length of the number being read
	for ; i < len(raw); i++ {
		c := raw[i]
		if inString {
			switch c {
			case '\\':
				i++
				if i+4 < len(raw) && raw[i] == 'u' && !plainEscape(raw[i+1:i+5]) {
					return false
				}
			case '"':
				inString = false
			}
			continue
		}
		switch {
		case c == '"':
			inString, number = true, 0
		case c >= '0' && c <= '9' || c == '-' || c == '.':
			if number++; number > maxPlainNumber {
				return false
			}
		case c == 'e' || c == 'E':
			// In true and false an e follows a letter; in a number, a digit.
			if number > 0 {
				return false
			}
		default:
			number = 0
		}
	}
	return true
}

// plainEscape reports whether the four hex digits of a \u escape name a
// character PostgreSQL stores as it is: neither NUL nor a surrogate.
func plainEscape(hex []byte) bool {
	if string(hex) == "0000" {
		return false
	}
	return !((hex[0] == 'd' || hex[0] == 'D') && strings.IndexByte("89abcdefABCDEF", hex[1]) >= 0)
}

// DecodeObject decodes raw, a valid JSON object, as the store takes it:
// numbers keep their digits (json.Number), except those PlainObject would
// not let through (an exponent, or longer than maxPlainNumber), which are
// read as float64, as encoding/json reads any number; one a float64
// cannot hold is an *json.UnmarshalTypeError, as encoding/json's own, whose
// Field is where it is in raw (StorableNumbers).
// Escapes are decoded as encoding/json decodes them.
func DecodeObject(raw []byte) (map[string]any, error) {
	var m map[string]any
	if err := UnmarshalExact(raw, &m); err != nil {
		return nil, err
	}
	if _, err := StorableNumbers(m); err != nil { // in place
		return nil, err
	}
	return m, nil
}

// UnmarshalExact is json.Unmarshal with numbers as json.Number: a large
// integer keeps its digits, where a float64 would round it. As
// json.Unmarshal, it refuses data that is more than one JSON value: a
// second value or anything but white space after the first
// (ErrTrailingData), which a decoder alone would leave unread.
func UnmarshalExact(data []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if len(bytes.TrimLeft(data[dec.InputOffset():], " \t\r\n")) > 0 {
		return ErrTrailingData
	}
	return nil
}

// ErrTrailingData is UnmarshalExact's refusal of data after the first JSON
// value.
var ErrTrailingData = errors.New("invalid JSON: data after the top-level value")

// StorableNumbers returns v, a decoded JSON value, with every json.Number
// PlainObject would not let through (an exponent, or longer than
// maxPlainNumber) read as a float64; one a float64 cannot hold is an
// *json.UnmarshalTypeError. DecodeObject applies it to an object; a value
// decoded elsewhere (GraphQL's variables) is stored through it too, so
// that 1e100000, 30 bytes in, never reads back as 100,001 digits.
//
// The type error's Field is the number's path within v, as the caller's
// decoder would extend it: keys joined by dots and indexes in brackets
// (plan.seats[1]), each key at most 64 bytes (longer ones cut, with "…"),
// an empty one written "". It is a place in the sender's own document,
// never a value.
func StorableNumbers(v any) (any, error) {
	switch v := v.(type) {
	case json.Number:
		if len(v) <= maxPlainNumber && !strings.ContainsAny(string(v), "eE") {
			return v, nil
		}
		f, err := strconv.ParseFloat(string(v), 64)
		if err != nil {
			return nil, &json.UnmarshalTypeError{Value: "number " + string(v), Type: reflect.TypeFor[float64]()}
		}
		return f, nil
	case map[string]any:
		for k, x := range v {
			x, err := StorableNumbers(x)
			if err != nil {
				return nil, within(err, pathKey(k))
			}
			v[k] = x
		}
	case []any:
		for i, x := range v {
			x, err := StorableNumbers(x)
			if err != nil {
				return nil, within(err, "["+strconv.Itoa(i)+"]")
			}
			v[i] = x
		}
	}
	return v, nil
}

// maxPathKey is the longest key, in bytes, a path of StorableNumbers
// names whole.
const maxPathKey = 64

// within prefixes the Field of err, a type error of StorableNumbers, with
// step, the key or index of the member it is in.
func within(err error, step string) error {
	te, ok := err.(*json.UnmarshalTypeError)
	if !ok {
		return err
	}
	te.Field = FieldPath(step, te.Field)
	return te
}

// FieldPath is the path of the member at inner (a path as a JSON type
// error's Field writes it: "a.b", "[2]", or "" for the value itself)
// within outer: "outer.a.b", "outer[2]", "outer".
func FieldPath(outer, inner string) string {
	switch {
	case inner == "":
		return outer
	case inner[0] == '[':
		return outer + inner
	default:
		return outer + "." + inner
	}
}

// pathKey is key as a step of a path: cut to maxPathKey bytes (at a
// character's start), and "" when empty.
func pathKey(key string) string {
	if key == "" {
		return `""`
	}
	if len(key) <= maxPathKey {
		return key
	}
	n := maxPathKey
	for n > 0 && !utf8.RuneStart(key[n]) {
		n--
	}
	return key[:n] + "…"
}

// NameOrNil returns the name, or nil when the event type has none.
func (e *Event) NameOrNil() *string {
	if e.Name == "" {
		return nil
	}
	return &e.Name
}
