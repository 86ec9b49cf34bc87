package c360

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"
)

// DeadLetter is an event that failed inside ingest for a reason of its own
// (a value PostgreSQL refuses, a broken constraint, a bug), kept with its
// error so an admin can see it and replay it once the cause is fixed.
// Events refused by validation before the transaction (a bad identity) are
// answered as invalid, to a caller who can correct them, and become dead
// letters only where the caller asks for it (WithInvalidAsDeadLetters):
// a webhook whose provider nobody reads a refusal from keeps them, to
// replay once a fix (of the normalization, say) accepts them.
type DeadLetter struct {
	ID          int64
	WorkspaceID int64
	Source      string
	DedupeKey   string
	EventType   string
	// Event is the canonical event as it was handed to ingest, as JSON (a
	// NUL character, which jsonb cannot hold, shows as U+FFFD; a replay
	// uses the exact event).
	Event map[string]any
	// Error is the last failure's text, database detail included: only
	// admins see it.
	Error         string
	Attempts      int
	FirstFailedAt time.Time
	LastFailedAt  time.Time
	// ReplayedAt is when a replay stored the event; nil while pending.
	ReplayedAt *time.Time
	// ReplayedEventID is the stored event a replay resulted in (the event
	// already stored, when the provider delivered it again meanwhile).
	ReplayedEventID int64
}

// ReplayedEventIDOrNil returns the replayed event's id for GraphQL, nil
// while pending.
func (d *DeadLetter) ReplayedEventIDOrNil() *int64 {
	if d.ReplayedEventID == 0 {
		return nil
	}
	return &d.ReplayedEventID
}

// DeadLetterFilter selects a page of a workspace's dead letters.
type DeadLetterFilter struct {
	PageArgs
	// Pending keeps only dead letters not yet replayed.
	Pending bool
}

// DeadLetterService lists and replays dead letters.
type DeadLetterService interface {
	// DeadLetters returns a page of the workspace's dead letters, newest first.
	DeadLetters(ctx context.Context, workspaceID int64, f DeadLetterFilter) (*Page[*DeadLetter], error)
	// ReplayDeadLetter ingests the dead letter's event again. On success the
	// dead letter is marked replayed and returned; on failure its attempts
	// and error are updated and the failure is returned. Replaying a dead
	// letter already replayed (before, or by a replay at the same time)
	// returns it unchanged, replayed false: nothing is to be recorded.
	ReplayDeadLetter(ctx context.Context, workspaceID, id int64) (d *DeadLetter, replayed bool, err error)
}

// DeadLetteredError reports that ingest failed on events for a reason of
// their own and kept them as dead letters, durably, before returning. A
// webhook that receives it may acknowledge the delivery (the provider would
// only retry it in vain); a caller that can tell its client which events
// failed (Segment's batch answer) refuses them instead. The error's code is
// the cause's: errors.As on *Error and ErrorCode see through it.
type DeadLetteredError struct {
	// IDs are the dead letters, one per event of the failed request.
	IDs []int64
	Err error
}

// Error implements the error interface.
func (e *DeadLetteredError) Error() string {
	return fmt.Sprintf("kept as dead letter %v: %v", e.IDs, e.Err)
}

// Unwrap returns the cause.
func (e *DeadLetteredError) Unwrap() error { return e.Err }

type noDeadLetterKey struct{}

// WithoutDeadLetters returns a context whose Ingest calls do not keep
// failing events as dead letters. A caller uses it when it handles a
// failure itself and would leave dead letters behind for events it then
// stores: Segment's batch tries the whole batch first and, when it fails,
// isolates the failing calls one by one (those single calls do keep them).
func WithoutDeadLetters(ctx context.Context) context.Context {
	return context.WithValue(ctx, noDeadLetterKey{}, true)
}

// DeadLettersWanted reports whether failing events of an Ingest call with
// ctx are to be kept as dead letters (the default).
func DeadLettersWanted(ctx context.Context) bool {
	off, _ := ctx.Value(noDeadLetterKey{}).(bool)
	return !off
}

type invalidDeadLetterKey struct{}

// WithInvalidAsDeadLetters returns a context whose Ingest calls keep events
// that validation refuses (EINVALID before the transaction: an identity
// that does not normalize, say) as dead letters too, and return a
// *DeadLetteredError for them, whose code stays EINVALID. A webhook uses it
// when its refusal would reach no one and its acknowledgement must not
// lose the event: the WhatsApp Cloud API retries a refused notification
// for days, in vain, and shows the refusal to nobody. Events whose source
// or dedupe key cannot key a dead letter are refused as before.
// WithoutDeadLetters wins over it.
func WithInvalidAsDeadLetters(ctx context.Context) context.Context {
	return context.WithValue(ctx, invalidDeadLetterKey{}, true)
}

// InvalidAsDeadLettersWanted reports whether events of an Ingest call with
// ctx that validation refuses are to be kept as dead letters.
func InvalidAsDeadLettersWanted(ctx context.Context) bool {
	on, _ := ctx.Value(invalidDeadLetterKey{}).(bool)
	return on && DeadLettersWanted(ctx)
}

// EventFault reports whether err is an event's own failure (a value the
// database refuses, a broken constraint, a bug) rather than the system's:
// unavailability or overload, cancellation, and serialization failures or
// deadlocks that outlasted their retries are the system's, and a client's
// retry is their cure. A reused key (*KeyReusedError) is neither: it is
// refused to the client. The store keeps only event faults as dead letters,
// and the Segment batch isolates only them; both ask here.
func EventFault(err error) bool {
	if err == nil || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return false
	}
	// PostgreSQL's class 40, through any driver error that names its SQLSTATE.
	var state interface{ SQLState() string }
	if errors.As(err, &state) && strings.HasPrefix(state.SQLState(), "40") {
		return false
	}
	// A reused key is the client's mistake, refused to it, and a replay
	// could only be refused the same way.
	var reused *KeyReusedError
	if errors.As(err, &reused) {
		return false
	}
	switch ErrorCode(err) {
	case EUNAVAILABLE, ERATELIMITED:
		return false
	}
	return true
}
