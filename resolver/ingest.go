package resolver

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"time"
	"unicode/utf8"

	"github.com/c360dev/c360"
)

// ingester returns the caller's workspace when the caller may ingest
// through GraphQL: every role except the read-only assistant and the
// client key, whose calls name only userId and anonymousId through the
// Segment API; here it could name any email or phone.
func ingester(ctx context.Context) (int64, error) {
	p, err := principal(ctx)
	if err != nil {
		return 0, err
	}
	switch p.Role {
	case c360.RoleAssistant:
		return 0, c360.Errorf(c360.EFORBIDDEN, "an assistant key cannot record identify or track calls")
	case c360.RoleClient:
		return 0, c360.Errorf(c360.EFORBIDDEN, "a client key sends Segment calls only (/v1/*): identify and track here take a server key")
	}
	return p.WorkspaceID, nil
}

// event builds the canonical event for a GraphQL identify or track call. A
// call without messageId gets a random one: it is stored once, but a retry
// of it cannot be recognized, which is why clients should send one.
func (r *Resolver) event(typ string, ids []*c360.Identity, messageID *string, ts *time.Time) *c360.Event {
	ev := &c360.Event{Type: typ, Source: "graphql", ReceivedAt: r.Now()}
	for _, id := range ids {
		ev.Identities = append(ev.Identities, *id)
	}
	if messageID != nil && *messageID != "" {
		ev.DedupeKey = *messageID
	} else {
		b := make([]byte, 16)
		rand.Read(b)
		ev.DedupeKey = "gql-" + hex.EncodeToString(b)
	}
	if ts != nil {
		ev.OccurredAt = ts.UTC()
	} else {
		ev.OccurredAt = ev.ReceivedAt
	}
	return ev
}

// erasedRepeat answers an ingest mutation repeated with the messageId of
// an event whose customer was erased: NOT_FOUND, as the customer is gone,
// saying so rather than naming a customer that never was. The repeat
// changed nothing and created nobody (docs/erasure.md).
func erasedRepeat(key string) error {
	return c360.Errorf(c360.ENOTFOUND, "the event with messageId %q belonged to a customer who was erased: nothing was changed, and there is no customer to answer with", truncateKey(key))
}

func checkEventName(name string) error {
	if name == "" || len(name) > 200 || !utf8.ValidString(name) {
		return c360.Errorf(c360.EINVALID, "event must be a non-empty name of at most 200 bytes")
	}
	return nil
}
