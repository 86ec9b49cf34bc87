package postgres

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/c360dev/c360"
	"github.com/c360dev/c360/identity"
)

var _ c360.MessagingService = (*DB)(nil)

// applyMessageStatus moves the message with the event's provider id to the
// event's status, forward only (c360.MessageStatusAdvances): a late "sent"
// never undoes "delivered", and failed or undelivered are final and keep
// their error code. found is false when no such message is stored; m is nil
// when nothing changed, else cust is its customer, locked.
//
// It locks the customer before the message, the order of every
// transaction that moves messages (a merge or a split locks the customers,
// then updates their messages): locking the message first would deadlock
// with them. The message is read without a row lock; the provider id's
// lock (lockedQueryRow) already serializes every write of its status.
func applyMessageStatus(ctx context.Context, tx pgx.Tx, ws int64, ev *c360.Event) (m *c360.Message, cust *customerRow, found bool, err error) {
	m = &c360.Message{WorkspaceID: ws}
	var current string
	err = lockedQueryRow(ctx, tx, ws, ev.Message.ProviderID, `
		SELECT m.id, m.conversation_id, coalesce(c.merged_into, c.id), m.channel, m.direction, m.status
		FROM messages m JOIN customers c ON c.workspace_id = m.workspace_id AND c.id = m.customer_id
		WHERE m.workspace_id = $1 AND m.provider_id = $2`, []any{ws, ev.Message.ProviderID},
		&m.ID, &m.ConversationID, &m.CustomerID, &m.Channel, &m.Direction, &current)
	if err == pgx.ErrNoRows {
		return nil, nil, false, nil
	} else if err != nil {
		return nil, nil, false, interpretError(fmt.Errorf("find message: %w", err))
	}
	if !c360.MessageStatusAdvances(current, ev.Message.Status) {
		return nil, nil, true, nil
	}
	m.Status = ev.Message.Status
	if c360.MessageStatusFinal(m.Status) {
		m.ErrorCode = ev.Message.ErrorCode
	}
	// A merge or a split that commits between the read and the locks moves
	// the message to another customer: follow it, at most a few times.
	for attempt := 0; attempt < 3; attempt++ {
		locked, stale, err := lockCustomers(ctx, tx, ws, []int64{m.CustomerID})
		if err != nil {
			return nil, nil, true, err
		}
		if cust = locked[m.CustomerID]; !stale && cust != nil {
			// The message's row lock, now after its customer's; the update
			// matches only while the message still belongs to it.
			tag, err := tx.Exec(ctx, `
				UPDATE messages SET status = $3, error_code = nullif($4, '')
				WHERE workspace_id = $1 AND id = $2 AND customer_id = $5`, ws, m.ID, m.Status, m.ErrorCode, cust.id)
			if err != nil {
				return nil, nil, true, interpretError(fmt.Errorf("update message status: %w", err))
			}
			if tag.RowsAffected() == 1 {
				return m, cust, true, nil
			}
		}
		if err := tx.QueryRow(ctx, `
			SELECT coalesce(c.merged_into, c.id)
			FROM messages m JOIN customers c ON c.workspace_id = m.workspace_id AND c.id = m.customer_id
			WHERE m.workspace_id = $1 AND m.id = $2`, ws, m.ID).Scan(&m.CustomerID); err != nil {
			return nil, nil, true, interpretError(fmt.Errorf("find message's customer: %w", err))
		}
	}
	return nil, nil, true, c360.Errorf(c360.EUNAVAILABLE, "message %d kept moving between customers; retry", m.ID)
}

func setMessageStatus(ctx context.Context, tx pgx.Tx, ws int64, m *c360.Message) error {
	if _, err := tx.Exec(ctx, `UPDATE messages SET status = $3, error_code = nullif($4, '') WHERE workspace_id = $1 AND id = $2`,
		ws, m.ID, m.Status, m.ErrorCode); err != nil {
		return interpretError(fmt.Errorf("update message status: %w", err))
	}
	return nil
}

// lockedQueryRow runs one statement that returns a row into dest under
// the lock of a provider message id, in one round trip with it.
//
// The lock serializes, per provider message id, the transaction that
// records an outbound message and those that apply its status callbacks.
// Without it a callback running while the record is uncommitted finds no
// message, and the record's catch-up (catchUpStatus), run before the
// callback committed, finds no callback: the status would be stored and
// never applied. Whichever takes the lock second now sees the other's
// committed work (each statement after the wait reads a new snapshot).
func lockedQueryRow(ctx context.Context, tx pgx.Tx, ws int64, providerID, sql string, args []any, dest ...any) error {
	b := &pgx.Batch{}
	b.Queue(`SELECT pg_advisory_xact_lock($1)`, identity.Key(ws, identity.Identity{Type: "provider message", Value: providerID}))
	b.Queue(sql, args...)
	br := tx.SendBatch(ctx, b)
	if _, err := br.Exec(); err != nil {
		br.Close()
		return interpretError(fmt.Errorf("lock provider message: %w", err))
	}
	if err := br.QueryRow().Scan(dest...); err != nil {
		br.Close()
		return err
	}
	return br.Close()
}

// knownStatuses are the statuses a stored status event may carry; catching
// up looks each one up by its exact dedupe key.
var knownStatuses = []string{"accepted", "scheduled", "queued", "sending", "sent", "delivered", "read",
	c360.MessageFailed, c360.MessageUndelivered, "canceled"}

// catchUpStatus applies status events that arrived before their message was
// stored. Twilio may call the status callback for an outbound message before
// sendMessage has recorded it; that callback was stored as an event (dedupe
// key "<sid>:<status>") and matched nothing, so the message starts from the
// furthest status already received.
func catchUpStatus(ctx context.Context, tx pgx.Tx, ws int64, source string, m *c360.Message) error {
	if m.ProviderID == "" || m.Direction != c360.DirectionOutbound {
		return nil
	}
	keys := make([]string, len(knownStatuses))
	for i, s := range knownStatuses {
		keys[i] = m.ProviderID + ":" + s
	}
	rows, err := tx.Query(ctx, `
		SELECT coalesce(properties->>'status', ''), coalesce(properties->>'errorCode', '') FROM events
		WHERE workspace_id = $1 AND source = $2 AND type = $3 AND dedupe_key = ANY($4)`,
		ws, source, c360.EventMessageStatus, keys)
	if err != nil {
		return interpretError(fmt.Errorf("find earlier statuses: %w", err))
	}
	defer rows.Close()
	status, code := m.Status, m.ErrorCode
	for rows.Next() {
		var s, c string
		if err := rows.Scan(&s, &c); err != nil {
			return fmt.Errorf("scan earlier status: %w", err)
		}
		if c360.MessageStatusAdvances(status, s) {
			status, code = s, c
		}
	}
	if err := rows.Err(); err != nil {
		return interpretError(fmt.Errorf("find earlier statuses: %w", err))
	}
	if status == m.Status {
		return nil
	}
	m.Status = status
	if c360.MessageStatusFinal(status) {
		m.ErrorCode = code
	}
	return setMessageStatus(ctx, tx, ws, m)
}

// messageColumns are a message's columns as scanMessage reads them, for a
// table aliased m.
const messageColumns = `m.id, m.conversation_id, m.customer_id, m.channel, m.direction, coalesce(m.body, ''),
	m.media_urls, m.status, coalesce(m.provider_id, ''), coalesce(m.error_code, ''), m.created_at`

// scanMessage scans messageColumns, after any leading columns in prefix.
func scanMessage(row pgx.Row, ws int64, prefix ...any) (*c360.Message, error) {
	m := &c360.Message{WorkspaceID: ws}
	dest := append(prefix, &m.ID, &m.ConversationID, &m.CustomerID, &m.Channel, &m.Direction, &m.Body,
		&m.MediaURLs, &m.Status, &m.ProviderID, &m.ErrorCode, &m.CreatedAt)
	if err := row.Scan(dest...); err != nil {
		return nil, err
	}
	return m, nil
}

// FindMessageByProviderID returns the message with the provider's id.
func (db *DB) FindMessageByProviderID(ctx context.Context, ws int64, providerID string) (*c360.Message, error) {
	m, err := scanMessage(db.as(ws).QueryRow(ctx, `
		SELECT `+messageColumns+` FROM messages m WHERE m.workspace_id = $1 AND m.provider_id = $2`, ws, providerID), ws)
	if err == pgx.ErrNoRows {
		return nil, c360.Errorf(c360.ENOTFOUND, "no message has provider id %q", providerID)
	} else if err != nil {
		return nil, interpretError(fmt.Errorf("find message: %w", err))
	}
	return m, nil
}

// outreachInbound bounds the customer's latest inbound messages on the
// channel that FindOutreach reads for the number they came from: the
// newest whose number is still the customer's and not blocked wins, and
// more than a few unusable ones in a row is not worth reading on.
const outreachInbound = 10

// FindOutreach returns what deciding whether customerID may be messaged on
// channel needs, in one query: the surviving customer, its phones, its
// consent on the channel and the numbers its latest inbound messages there
// came from (each inbound message's event names it).
//
// The recipient is the number the customer last wrote from on the channel,
// so that a WhatsApp reply goes to the number whose session is open (and an
// SMS reply to the number the customer texts from); without an inbound
// message there, the most recently seen phone. A number the workspace's
// identity rules block is never chosen, nor one that has since moved to
// another customer (a split): a customer left without a usable number
// gets Phone "".
func (db *DB) FindOutreach(ctx context.Context, ws, customerID int64, channel string) (*c360.Outreach, error) {
	rules, err := db.identityRules(ctx, ws)
	if err != nil {
		return nil, err
	}
	o := &c360.Outreach{Channel: channel}
	var (
		slug                      string
		phones, inboundPhones     []string
		inboundAts                []time.Time
		consentStatus, consentSrc *string
		consentAt                 *time.Time
	)
	err = db.as(ws).QueryRow(ctx, `
		SELECT c.id, w.slug,
		       coalesce((SELECT array_agg(i.value ORDER BY i.last_seen DESC, i.value) FROM identities i
		                 WHERE i.workspace_id = $1 AND i.customer_id = c.id AND i.type = 'phone'), '{}'),
		       k.status, k.source, k.updated_at,
		       coalesce(r.phones, '{}'), coalesce(r.ats, '{}')
		FROM customers c
		JOIN workspaces w ON w.id = c.workspace_id
		LEFT JOIN consents k ON k.workspace_id = c.workspace_id AND k.customer_id = c.id AND k.channel = $3
		LEFT JOIN LATERAL (
			SELECT array_agg(x.phone ORDER BY x.created_at DESC, x.id DESC) AS phones,
			       array_agg(x.created_at ORDER BY x.created_at DESC, x.id DESC) AS ats
			FROM (
				SELECT m.id, m.created_at, p->>'value' AS phone
				FROM conversations v
				CROSS JOIN LATERAL (
					SELECT m.id, m.created_at, m.event_id FROM messages m
					WHERE m.workspace_id = $1 AND m.conversation_id = v.id AND m.direction = 'inbound'
					ORDER BY m.created_at DESC, m.id DESC LIMIT $4) m
				JOIN events e ON e.workspace_id = $1 AND e.id = m.event_id
				CROSS JOIN LATERAL jsonb_array_elements(e.identities) p
				WHERE v.workspace_id = $1 AND v.customer_id = c.id AND v.channel = $3 AND p->>'type' = 'phone'
				ORDER BY m.created_at DESC, m.id DESC LIMIT $4) x
		) r ON true
		WHERE c.workspace_id = $1
		  AND c.id = (SELECT coalesce(m.merged_into, m.id) FROM customers m WHERE m.workspace_id = $1 AND m.id = $2)`,
		ws, customerID, channel, outreachInbound).Scan(
		&o.CustomerID, &slug, &phones, &consentStatus, &consentSrc, &consentAt, &inboundPhones, &inboundAts)
	if err == pgx.ErrNoRows {
		return nil, c360.Errorf(c360.ENOTFOUND, "customer %d not found", customerID)
	} else if err != nil {
		return nil, interpretError(fmt.Errorf("find outreach: %w", err))
	}
	usable := func(phone string) bool { return slices.Contains(phones, phone) && !rules.IsBlocked(phone) }
	for i, phone := range inboundPhones {
		if usable(phone) {
			o.Phone, o.LastInboundAt = phone, &inboundAts[i]
			break
		}
	}
	if o.Phone == "" {
		if i := slices.IndexFunc(phones, usable); i >= 0 {
			o.Phone = phones[i]
		}
	}
	if consentStatus != nil {
		o.Consent = &c360.Consent{CustomerID: o.CustomerID, Channel: channel, Status: *consentStatus, UpdatedAt: *consentAt}
		if consentSrc != nil {
			o.Consent.Source = *consentSrc
		}
	}
	if o.Workspace, err = db.FindWorkspaceBySlug(ctx, slug); err != nil {
		return nil, err
	}
	return o, nil
}

// withAbsentTraits returns traits plus each of ifAbsent that the customer
// has no value for (missing, null or empty string), without modifying either.
func withAbsentTraits(current, traits, ifAbsent map[string]any) map[string]any {
	if len(ifAbsent) == 0 {
		return traits
	}
	out := make(map[string]any, len(traits)+len(ifAbsent))
	for k, v := range traits {
		out[k] = v
	}
	for k, v := range ifAbsent {
		if _, given := out[k]; given {
			continue
		}
		if cur, ok := current[k]; ok && cur != nil {
			if s, isString := cur.(string); !isString || strings.TrimSpace(s) != "" {
				continue
			}
		}
		out[k] = v
	}
	return out
}
