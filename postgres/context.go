package postgres

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/c360dev/c360"
)

var _ c360.ContextService = (*DB)(nil)

// contextSQL assembles a whole customer context in one statement: the
// customer (found by id, following a merge, or by identity), then each part
// as a JSON array built by a bounded subquery. One statement means one round
// trip and one snapshot: the parts agree with each other.
//
// $1 workspace, $2/$3 identity type and value (NULL for a lookup by id),
// $4 id (NULL for a lookup by identity), $5 now, $6 events since,
// $7 messages per conversation, $8 conversations, $9 events scanned,
// $10 event groups, $11 observations, $12 merges.
//
// The customer's id is one subquery's value, not a COALESCE of two: under
// row-level security the planner bounds an index scan only by conditions it
// can prove leakproof, and "c.id = coalesce(...)" is not one, so both the
// generic and the custom plan read every customer of the workspace (or the
// table) and filtered them. "c.id = (SELECT ...)" compares with a parameter
// of the plan, and is an index lookup (TestMergeFollowingPlansStayIndexLookups).
var contextSQL = `
WITH c AS (
	SELECT c.* FROM customers c
	WHERE c.workspace_id = $1 AND c.id = (SELECT coalesce(
		(SELECT coalesce(m.merged_into, m.id) FROM customers m WHERE m.workspace_id = $1 AND m.id = $4::bigint),
		(SELECT i.customer_id FROM identities i WHERE i.workspace_id = $1 AND i.type = $2::text AND i.value = $3::text)))
)
SELECT
	(SELECT coalesce(json_agg(json_build_object('type', i.type, 'value', i.value, 'source', i.source,
			'firstSeen', i.first_seen, 'lastSeen', i.last_seen) ORDER BY i.type, i.value), '[]')
		FROM identities i WHERE i.workspace_id = c.workspace_id AND i.customer_id = c.id),
	(SELECT coalesce(json_agg(json_build_object('channel', k.channel, 'status', k.status,
			'source', coalesce(k.source, ''), 'updatedAt', k.updated_at) ORDER BY k.channel), '[]')
		FROM consents k WHERE k.workspace_id = c.workspace_id AND k.customer_id = c.id),
	(SELECT coalesce(json_agg(json_build_object('id', v.id, 'channel', v.channel, 'status', v.status,
			'lastMessageAt', v.last_message_at, 'createdAt', v.created_at, 'messages', v.messages)
			ORDER BY v.active DESC, v.id DESC), '[]')
		FROM (
			SELECT cv.id, cv.channel, cv.status, cv.last_message_at, cv.created_at,
				coalesce(cv.last_message_at, cv.created_at) AS active,
				(SELECT coalesce(json_agg(json_build_object('id', mm.id, 'channel', mm.channel,
						'direction', mm.direction, 'body', coalesce(mm.body, ''), 'mediaUrls', mm.media_urls,
						'status', mm.status, 'providerId', coalesce(mm.provider_id, ''),
						'errorCode', coalesce(mm.error_code, ''), 'createdAt', mm.created_at)
						ORDER BY mm.created_at, mm.id), '[]')
					FROM (SELECT * FROM messages m WHERE m.workspace_id = cv.workspace_id AND m.conversation_id = cv.id
						ORDER BY m.created_at DESC, m.id DESC LIMIT $7) mm) AS messages
			FROM conversations cv
			WHERE cv.workspace_id = c.workspace_id AND cv.customer_id = c.id AND cv.status = 'open'
			ORDER BY coalesce(cv.last_message_at, cv.created_at) DESC, cv.id DESC LIMIT $8) v),
	(SELECT coalesce(json_agg(json_build_object('type', g.type, 'name', g.name, 'count', g.n, 'lastAt', g.last_at)
			ORDER BY g.last_at DESC, g.type, g.name), '[]')
		FROM (
			SELECT e.type, e.name, count(*) AS n, max(e.occurred_at) AS last_at
			FROM (SELECT e.type, coalesce(e.name, '') AS name, e.occurred_at FROM events e
				WHERE e.workspace_id = c.workspace_id AND e.customer_id = c.id AND e.occurred_at >= $6
					AND e.type <> 'message_status'
				ORDER BY e.occurred_at DESC, e.id DESC LIMIT $9) e
			GROUP BY e.type, e.name
			ORDER BY max(e.occurred_at) DESC, e.type, e.name LIMIT $10) g),
	(SELECT coalesce(json_agg(json_build_object('id', o.id, 'text', o.text, 'source', o.source,
			'confidence', o.confidence, 'recordedBy', o.recorded_by, 'recordedByRole', o.recorded_by_role,
			'verified', o.verified, 'verifiedBy', coalesce(o.verified_by, ''), 'verifiedAt', o.verified_at,
			'createdAt', o.created_at, 'expiresAt', o.expires_at)
			ORDER BY o.verified DESC, o.created_at DESC, o.id DESC), '[]')
		FROM (SELECT * FROM observations o
			WHERE o.workspace_id = c.workspace_id AND o.customer_id = c.id AND (o.expires_at IS NULL OR o.expires_at > $5)
			ORDER BY o.verified DESC, o.created_at DESC, o.id DESC LIMIT $11) o),
	(SELECT coalesce(json_agg(json_build_object('id', g.id, 'kind', g.kind, 'survivorId', g.survivor_id,
			'mergedId', g.merged_id, 'identityType', g.identity_type, 'identityValue', g.identity_value,
			'eventId', g.event_id, 'reason', g.reason, 'actor', g.actor, 'createdAt', g.created_at)
			ORDER BY g.created_at DESC, g.id DESC), '[]')
		FROM (` + mergesOfSQL("c.workspace_id", "c.id") + ` -- the entries of Customer.merges
			ORDER BY created_at DESC, id DESC LIMIT $12) g),
	` + customerColumns + `
FROM c`

// CustomerContext assembles the customer's context in one statement.
func (db *DB) CustomerContext(ctx context.Context, ws int64, ref c360.CustomerRef, now time.Time, lim c360.ContextLimits) (*c360.CustomerContext, error) {
	var idType, idValue *string
	var id *int64
	switch {
	case ref.Identity != nil:
		n, err := db.normalizeLookup(*ref.Identity)
		if err != nil {
			return nil, err
		}
		idType, idValue = &n.Type, &n.Value
	case ref.ID != 0:
		id = &ref.ID
	default:
		return nil, c360.Errorf(c360.EINVALID, "give a customer id or an identity")
	}
	var parts [6][]byte
	cust, err := scanCustomer(db.as(ws).QueryRow(ctx, contextSQL, ws, idType, idValue, id, now, now.Add(-lim.EventWindow),
		lim.MessagesPerConversation, lim.Conversations, lim.EventsScanned, lim.EventNames, lim.Observations, lim.Merges),
		&parts[0], &parts[1], &parts[2], &parts[3], &parts[4], &parts[5])
	if err == pgx.ErrNoRows {
		if ref.Identity != nil {
			return nil, c360.Errorf(c360.ENOTFOUND, "no customer has %s %q", *idType, *idValue)
		}
		return nil, c360.Errorf(c360.ENOTFOUND, "customer %d not found", ref.ID)
	} else if err != nil {
		return nil, interpretError(fmt.Errorf("load customer context: %w", err))
	}
	out, err := decodeContext(cust, parts)
	if err != nil {
		return nil, fmt.Errorf("decode customer context: %w", err)
	}
	return out, nil
}

// The JSON shapes contextSQL builds.
type (
	ctxIdentity struct {
		Type, Value, Source string
		FirstSeen, LastSeen time.Time
	}
	ctxMessage struct {
		ID                                                      int64
		Channel, Direction, Body, Status, ProviderID, ErrorCode string
		MediaURLs                                               []string
		CreatedAt                                               time.Time
	}
	ctxConversation struct {
		ID              int64
		Channel, Status string
		LastMessageAt   *time.Time
		CreatedAt       time.Time
		Messages        []ctxMessage
	}
	ctxEvent struct {
		Type, Name string
		Count      int
		LastAt     time.Time
	}
	ctxObservation struct {
		ID                                                   int64
		Text, Source, RecordedBy, RecordedByRole, VerifiedBy string
		Confidence                                           *float64
		Verified                                             bool
		VerifiedAt, ExpiresAt                                *time.Time
		CreatedAt                                            time.Time
	}
	ctxMerge struct {
		ID, SurvivorID, MergedID    int64
		Kind, Reason, Actor         string
		IdentityType, IdentityValue *string
		EventID                     *int64
		CreatedAt                   time.Time
	}
)

func decodeContext(c *c360.Customer, parts [6][]byte) (*c360.CustomerContext, error) {
	var (
		ids      []ctxIdentity
		consents []c360.Consent
		convs    []ctxConversation
		events   []ctxEvent
		obs      []ctxObservation
		merges   []ctxMerge
	)
	for i, dst := range []any{&ids, &consents, &convs, &events, &obs, &merges} {
		if err := json.Unmarshal(parts[i], dst); err != nil {
			return nil, fmt.Errorf("part %d: %w", i, err)
		}
	}
	ws := c.WorkspaceID
	out := &c360.CustomerContext{Customer: c,
		Identities:    make([]*c360.IdentityRecord, len(ids)),
		Consents:      make([]*c360.Consent, len(consents)),
		Conversations: make([]*c360.ContextConversation, len(convs)),
		Events:        make([]*c360.EventSummary, len(events)),
		Observations:  make([]*c360.Observation, len(obs)),
		Merges:        make([]*c360.MergeRecord, len(merges)),
	}
	for i, x := range ids {
		out.Identities[i] = &c360.IdentityRecord{Identity: c360.Identity{Type: x.Type, Value: x.Value},
			CustomerID: c.ID, FirstSeen: x.FirstSeen.UTC(), LastSeen: x.LastSeen.UTC(), Source: x.Source}
	}
	for i := range consents {
		k := consents[i]
		k.CustomerID, k.UpdatedAt = c.ID, k.UpdatedAt.UTC()
		out.Consents[i] = &k
	}
	for i, x := range convs {
		cv := &c360.ContextConversation{Conversation: &c360.Conversation{ID: x.ID, WorkspaceID: ws, CustomerID: c.ID,
			Channel: x.Channel, Status: x.Status, LastMessageAt: utcPtr(x.LastMessageAt), CreatedAt: x.CreatedAt.UTC()},
			Messages: make([]*c360.Message, len(x.Messages))}
		for j, m := range x.Messages {
			if m.MediaURLs == nil {
				m.MediaURLs = []string{}
			}
			cv.Messages[j] = &c360.Message{ID: m.ID, WorkspaceID: ws, ConversationID: x.ID, CustomerID: c.ID,
				Channel: m.Channel, Direction: m.Direction, Body: m.Body, MediaURLs: m.MediaURLs, Status: m.Status,
				ProviderID: m.ProviderID, ErrorCode: m.ErrorCode, CreatedAt: m.CreatedAt.UTC()}
		}
		out.Conversations[i] = cv
	}
	for i, x := range events {
		out.Events[i] = &c360.EventSummary{Type: x.Type, Name: x.Name, Count: x.Count, LastAt: x.LastAt.UTC()}
	}
	for i, x := range obs {
		out.Observations[i] = &c360.Observation{ID: x.ID, WorkspaceID: ws, CustomerID: c.ID, Text: x.Text,
			Source: x.Source, Confidence: x.Confidence, RecordedBy: x.RecordedBy, RecordedByRole: c360.Role(x.RecordedByRole),
			Verified: x.Verified, VerifiedBy: x.VerifiedBy, VerifiedAt: utcPtr(x.VerifiedAt),
			CreatedAt: x.CreatedAt.UTC(), ExpiresAt: utcPtr(x.ExpiresAt)}
	}
	for i, x := range merges {
		r := &c360.MergeRecord{ID: x.ID, Kind: x.Kind, SurvivorID: x.SurvivorID, MergedID: x.MergedID,
			EventID: x.EventID, Reason: x.Reason, Actor: x.Actor, At: x.CreatedAt.UTC()}
		if x.IdentityType != nil && x.IdentityValue != nil {
			r.Identity = &c360.Identity{Type: *x.IdentityType, Value: *x.IdentityValue}
		}
		out.Merges[i] = r
	}
	return out, nil
}

func utcPtr(t *time.Time) *time.Time {
	if t == nil {
		return nil
	}
	u := t.UTC()
	return &u
}
