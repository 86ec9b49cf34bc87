package c360

import (
	"context"
	"encoding/json"
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
	// object as the source received it, which PlainObject accepts. Such an
	// object goes into the store as it came and keeps every digit of its
	// numbers; decoding it into a map only to encode it again cost more
	// than the rest of a Segment call. An event read back from the store
	// has RawProperties too, the object as stored: a page of events is
	// mostly handed on as it is. PropertiesJSON reads whichever is set.
	// Message events carry Properties (the threadKey is read from it).
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

	Message *MessageInput // set for message and message_status events
	Consent *ConsentInput // set when the event changes consent
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
}

// ConsentInput records an opt-in or opt-out carried by an event.
type ConsentInput struct {
	Channel string
	Status  string // opted_in, opted_out
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

// PlainObject reports whether raw, a valid JSON text, is an object that
// any JSON store keeps byte for byte: valid UTF-8, no \u escape (PostgreSQL
// refuses \u0000 and a lone surrogate, which encoding/json would have
// replaced), and no number with an exponent (1e400 is valid JSON that no
// float64 holds, and PostgreSQL would spell it out in 401 digits). A JSON
// object without these is what it looks like; one with them is decoded, as
// any JSON is, before it is stored.
func PlainObject(raw []byte) bool {
	i := 0
	for i < len(raw) && (raw[i] == ' ' || raw[i] == '\t' || raw[i] == '\n' || raw[i] == '\r') {
		i++
	}
	if i == len(raw) || raw[i] != '{' || !utf8.Valid(raw) {
		return false
	}
	inString := false
	for ; i < len(raw); i++ {
		c := raw[i]
		switch {
		case inString && c == '\\':
			i++
			if i < len(raw) && raw[i] == 'u' {
				return false
			}
		case c == '"':
			inString = !inString
		case !inString && (c == 'e' || c == 'E') && raw[i-1] >= '0' && raw[i-1] <= '9':
			return false
		}
	}
	return true
}

// NameOrNil returns the name, or nil when the event type has none.
func (e *Event) NameOrNil() *string {
	if e.Name == "" {
		return nil
	}
	return &e.Name
}
