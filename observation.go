package c360

import (
	"context"
	"time"
	"unicode/utf8"
)

// ChangeObservation is the change-feed kind of an observation recorded on a
// customer or verified: subscribers learn that the assistant context moved.
const ChangeObservation = "observation"

// MaxObservationBytes bounds one observation's text: a fact, not a transcript.
const MaxObservationBytes = 4096

// Observation is a fact an assistant or an agent learned about a customer
// ("prefers WhatsApp after 6pm"), with its provenance. An expired
// observation is kept but no longer listed or put in context.
type Observation struct {
	ID          int64
	WorkspaceID int64
	CustomerID  int64
	Text        string
	// Source says where the fact came from, e.g. "whatsapp-bot" or "call 2024-03-02".
	Source string
	// Confidence is the recorder's confidence in the fact, 0 to 1; nil when not given.
	Confidence *float64
	// RecordedBy names the API key that recorded it ("key <prefix>"); RecordedByRole its role.
	RecordedBy     string
	RecordedByRole Role
	// Verified is set by an agent who confirmed the fact.
	Verified   bool
	VerifiedBy string
	VerifiedAt *time.Time
	CreatedAt  time.Time
	ExpiresAt  *time.Time
}

// ObservationInput is a new observation.
type ObservationInput struct {
	CustomerID int64
	Text       string
	Source     string
	Confidence *float64
	ExpiresAt  *time.Time
	// RecordedBy and RecordedByRole are the provenance, set from the caller's key.
	RecordedBy     string
	RecordedByRole Role
	// MessageID, optional, is the recorder's idempotency key: an
	// observation recorded again by the same key with the same MessageID
	// is the one stored first, returned as it was stored (whatever the new
	// text, customer or confidence, as identify's messageId), and nothing
	// changes.
	MessageID string
}

// DefaultObservationsFirst is how many observations Customer.observations
// lists when not told (its first; at most MaxPage).
const DefaultObservationsFirst = 20

// MaxObservationSourceBytes bounds an observation's source.
const MaxObservationSourceBytes = 200

// MaxObservationMessageIDBytes bounds an observation's messageId, as the
// dedupe key of an event is bounded.
const MaxObservationMessageIDBytes = 256

// Validate refuses an observation that is empty, larger than
// MaxObservationBytes, not UTF-8, has a source over
// MaxObservationSourceBytes, a confidence outside 0..1, has already
// expired at now, or a text, source or messageId that is not storable text
// (a NUL character), naming the field.
func (in *ObservationInput) Validate(now time.Time) error {
	switch {
	case in.Text == "":
		return Errorf(EINVALID, "text must not be empty")
	case len(in.Text) > MaxObservationBytes:
		return Errorf(EINVALID, "text is %d bytes; an observation holds at most %d", len(in.Text), MaxObservationBytes)
	case !utf8.ValidString(in.Text):
		return Errorf(EINVALID, "text must be UTF-8")
	case len(in.Source) > MaxObservationSourceBytes:
		return Errorf(EINVALID, "source must be at most %d bytes", MaxObservationSourceBytes)
	case in.Confidence != nil && !(*in.Confidence >= 0 && *in.Confidence <= 1):
		return Errorf(EINVALID, "confidence must be between 0 and 1")
	case in.ExpiresAt != nil && !in.ExpiresAt.After(now):
		return Errorf(EINVALID, "expiresAt must be in the future")
	}
	if err := CheckStorable("text", in.Text); err != nil {
		return err
	}
	if err := CheckStorable("source", in.Source); err != nil {
		return err
	}
	return in.CheckMessageID()
}

// CheckMessageID refuses a messageId that is too long or not storable
// text: one no stored observation can have. The rest of the input is
// validated only when the messageId is not a retry's (RecordObservation).
func (in *ObservationInput) CheckMessageID() error {
	if len(in.MessageID) > MaxObservationMessageIDBytes {
		return Errorf(EINVALID, "messageId is %d bytes; at most %d", len(in.MessageID), MaxObservationMessageIDBytes)
	}
	return CheckStorable("messageId", in.MessageID)
}

// ObservationService records, verifies and lists observations. Recording and
// verifying are changes of the customer: each appends an "observation" row
// to its change feed.
type ObservationService interface {
	// RecordObservation stores an observation on the customer (a merged-away
	// id records on its survivor); ENOTFOUND when there is no such customer.
	// An input with the MessageID of one its recorder stored before returns
	// the stored observation and changes nothing, before anything else of
	// the input is looked at: a retry is never refused for a customer, an
	// expiry or a text that changed since (Validate is for new ones).
	RecordObservation(ctx context.Context, workspaceID int64, in ObservationInput) (*Observation, error)
	// VerifyObservation sets or clears the verified flag; by names who did it.
	VerifyObservation(ctx context.Context, workspaceID, id int64, verified bool, by string) (*Observation, error)
	// ObservationsByCustomers lists the unexpired observations of many
	// customers at now, verified first, then newest first: the first
	// `first` of each customer's (1..MaxPage).
	ObservationsByCustomers(ctx context.Context, workspaceID int64, customerIDs []int64, now time.Time, first int) (map[int64][]*Observation, error)
}

// SourceOrNil returns the source, or nil when none was given.
func (o *Observation) SourceOrNil() *string {
	if o.Source == "" {
		return nil
	}
	return &o.Source
}

// VerifiedByOrNil returns who verified the observation, or nil.
func (o *Observation) VerifiedByOrNil() *string {
	if o.VerifiedBy == "" {
		return nil
	}
	return &o.VerifiedBy
}
