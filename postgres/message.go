package postgres

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/c360dev/c360"
	"github.com/c360dev/c360/identity"
)

var _ c360.MessagingService = (*DB)(nil)

// statusUpdate is a status for an outbound message: a provider's status
// callback, or the outcome of c360's own send.
type statusUpdate struct {
	// ProviderID is the provider's id of the message: it finds the message,
	// or, when no message has it yet, is attached to message MessageID.
	ProviderID string
	// MessageID is c360's id of the outbound message, 0 if unknown.
	MessageID         int64
	Status, ErrorCode string
}

// applyMessageStatus moves the message the update names to its status,
// forward only (c360.MessageStatusAdvances): a late "sent" never undoes
// "delivered", and failed or undelivered are final and keep their error
// code. It attaches the provider's id to a message that has none yet (one
// recorded before it was sent). found is false when no such message is
// stored; m is nil when nothing changed, else cust is its customer, locked.
//
// It locks the customer before the message, the order of every
// transaction that moves messages (a merge or a split locks the customers,
// then updates their messages): locking the message first would deadlock
// with them. The message is read without a row lock, so the update
// matches only the state it read, and reads again if that changed: a
// merge or a split moved the message, or another update of it (one
// without a provider id, which no provider id lock serializes) committed.
func applyMessageStatus(ctx context.Context, tx pgx.Tx, ws int64, u statusUpdate) (m *c360.Message, cust *customerRow, found bool, err error) {
	for attempt := 0; attempt < 3; attempt++ {
		m = &c360.Message{WorkspaceID: ws}
		var current, currentCode, source string
		// source is the message's event's: status events of that source
		// catch up when the provider's id is attached.
		const findSQL = `
			SELECT m.id, m.conversation_id, coalesce(c.merged_into, c.id), m.channel, m.direction, m.status,
			       coalesce(m.provider_id, ''), coalesce(m.error_code, ''),
			       coalesce((SELECT e.source FROM events e WHERE e.workspace_id = m.workspace_id AND e.id = m.event_id), '')
			FROM messages m JOIN customers c ON c.workspace_id = m.workspace_id AND c.id = m.customer_id
			WHERE m.workspace_id = $1
			  AND (m.provider_id = nullif($2, '')
			       OR m.id = $3 AND m.direction = 'outbound' AND (m.provider_id IS NULL OR $2 = ''))
			ORDER BY m.provider_id = nullif($2, '') DESC NULLS LAST
			LIMIT 1`
		args := []any{ws, u.ProviderID, u.MessageID}
		dest := []any{&m.ID, &m.ConversationID, &m.CustomerID, &m.Channel, &m.Direction, &current, &m.ProviderID, &currentCode, &source}
		if attempt == 0 && u.ProviderID != "" {
			err = lockedQueryRow(ctx, tx, ws, u.ProviderID, findSQL, args, dest...)
		} else {
			err = tx.QueryRow(ctx, findSQL, args...).Scan(dest...)
		}
		if err == pgx.ErrNoRows {
			return nil, nil, false, nil
		} else if err != nil {
			return nil, nil, false, interpretError(fmt.Errorf("find message: %w", err))
		}
		attach := m.ProviderID == "" && u.ProviderID != ""
		advance := c360.MessageStatusAdvances(current, u.Status)
		if !attach && !advance {
			return nil, nil, true, nil
		}
		m.Status, m.ErrorCode = current, currentCode
		if advance {
			m.Status = u.Status
			if c360.MessageStatusFinal(m.Status) {
				m.ErrorCode = u.ErrorCode
			}
		}
		storedProvider := m.ProviderID
		if attach {
			m.ProviderID = u.ProviderID
		}
		locked, stale, err := lockCustomers(ctx, tx, ws, []int64{m.CustomerID})
		if err != nil {
			return nil, nil, true, err
		}
		if cust = locked[m.CustomerID]; stale || cust == nil {
			continue
		}
		// The message's row lock, now after its customer's; the update
		// matches only while the message is as read.
		tag, err := tx.Exec(ctx, `
			UPDATE messages SET status = $3, error_code = nullif($4, ''), provider_id = nullif($7, '')
			WHERE workspace_id = $1 AND id = $2 AND customer_id = $5 AND status = $6
			  AND provider_id IS NOT DISTINCT FROM nullif($8, '')`,
			ws, m.ID, m.Status, m.ErrorCode, cust.id, current, m.ProviderID, storedProvider)
		if err != nil {
			return nil, nil, true, interpretError(fmt.Errorf("update message status: %w", err))
		}
		if tag.RowsAffected() != 1 {
			continue
		}
		m.CustomerID = cust.id
		if attach {
			if err := catchUpStatus(ctx, tx, ws, source, m); err != nil {
				return nil, nil, true, err
			}
		}
		return m, cust, true, nil
	}
	return nil, nil, true, c360.Errorf(c360.EUNAVAILABLE, "the message kept changing; retry")
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
// furthest status already received. They are applied in the order they
// arrived (received_at, then id: the order of their commits), as they
// would have been live: two final statuses rank alike (failed,
// undelivered), and the first one stays, with its error code.
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
		WHERE workspace_id = $1 AND source = $2 AND type = $3 AND dedupe_key = ANY($4)
		ORDER BY received_at, id`,
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

// outboundKey is the dedupe key of the event that records a message
// sendMessage sends: the caller's idempotency key, or a random one (a send
// without a key is never a repeat). The prefix keeps these keys apart from
// the provider's own ids, the dedupe keys of its events of the same source.
func outboundKey(key string) string {
	if key == "" {
		b := make([]byte, 16)
		rand.Read(b)
		return "send:" + hex.EncodeToString(b) + ":auto"
	}
	return "send:" + key
}

// outboundMessageProperty is the property of a sent message's event that
// names the message, so that a repeat of its idempotency key finds it.
const outboundMessageProperty = "outboundMessageId"

// FindOutbound returns the outbound message recorded under the idempotency key.
func (db *DB) FindOutbound(ctx context.Context, ws int64, source, key string) (*c360.Message, error) {
	return findOutbound(ctx, db.as(ws), ws, source, outboundKey(key), key)
}

// findOutbound reads the message recorded by the event with dedupe key dedupe.
func findOutbound(ctx context.Context, q interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}, ws int64, source, dedupe, key string) (*c360.Message, error) {
	m, err := scanMessage(q.QueryRow(ctx, `
		SELECT `+messageColumns+` FROM events e
		JOIN messages m ON m.workspace_id = e.workspace_id AND m.id = (e.properties->>'`+outboundMessageProperty+`')::bigint
		WHERE e.workspace_id = $1 AND e.source = $2 AND e.dedupe_key = $3`, ws, source, dedupe), ws)
	if err == pgx.ErrNoRows {
		return nil, c360.Errorf(c360.ENOTFOUND, "no message was sent with messageId %q", key)
	} else if err != nil {
		return nil, interpretError(fmt.Errorf("find sent message: %w", err))
	}
	return m, nil
}

// RecordOutbound records a message about to be sent, status pending, on
// the customer sendMessage chose (its survivor, if it was merged away
// since), not on whoever the number resolves to: the number may be one the
// identity rules would not resolve, and a split may have moved it.
//
// The event that records it claims the idempotency key exactly once, on
// the events' unique (workspace, source, dedupe key), in the transaction
// that records the message: a concurrent repeat waits for it to commit,
// then finds the message, pending until the send is settled.
//
// The customer's consent on the channel is read again once the customer
// is locked: sendMessage checked the consent FindOutreach read, without a
// lock, and a STOP that committed since would be missed. Every consent is
// written under its customer's lock, so none can commit between this read
// and the record. An opt-out refuses the send as CheckSendable does, and
// nothing is recorded; a repeat of a key is answered before, as
// sendMessage answers a repeat found earlier, even after an opt-out.
func (db *DB) RecordOutbound(ctx context.Context, ws int64, in c360.OutboundRecord) (*c360.Message, bool, error) {
	now := db.Now()
	ev := &c360.Event{Type: c360.EventMessage, Source: in.Source, DedupeKey: outboundKey(in.Key),
		Identities: []c360.Identity{{Type: identity.TypePhone, Value: in.To}},
		Properties: map[string]any{"sentBy": in.SentBy}, OccurredAt: now, ReceivedAt: now,
		Message: &c360.MessageInput{Channel: in.Channel, Direction: c360.DirectionOutbound, Body: in.Body, Status: c360.MessagePending}}
	// Noted before the message can exist, so that the sweep of this
	// process's recent sends reads the workspace until it is stale.
	db.recentSends.note(ws, now)
	var (
		m      *c360.Message
		repeat bool
	)
	err := db.inTx(ctx, ws, func(tx pgx.Tx) error {
		m, repeat = nil, false
		cust, err := lockSurvivor(ctx, tx, ws, in.CustomerID)
		if err != nil {
			return err
		}
		var eventID int64
		err = tx.QueryRow(ctx, `
			INSERT INTO events (workspace_id, type, properties, identities, source, dedupe_key, occurred_at, received_at)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $7)
			ON CONFLICT (workspace_id, source, dedupe_key) DO NOTHING
			RETURNING id`,
			ws, ev.Type, ev.Properties, ev.Identities, ev.Source, ev.DedupeKey, now).Scan(&eventID)
		if err == pgx.ErrNoRows {
			repeat = true
			m, err = findOutbound(ctx, tx, ws, in.Source, ev.DedupeKey, in.Key)
			return err
		} else if err != nil {
			return interpretError(fmt.Errorf("insert event: %w", err))
		}
		var consent string
		err = tx.QueryRow(ctx, `SELECT status FROM consents WHERE workspace_id = $1 AND customer_id = $2 AND channel = $3`,
			ws, cust.id, in.Channel).Scan(&consent)
		if err != nil && err != pgx.ErrNoRows {
			return interpretError(fmt.Errorf("read consent: %w", err))
		}
		if consent == c360.ConsentOptedOut {
			return c360.OptedOutError(in.Channel) // the event's insert is rolled back with the rest
		}
		if m, err = insertMessage(ctx, tx, ws, cust.id, eventID, ev); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `
			UPDATE events SET properties = properties || jsonb_build_object($3::text, $4::text)
			WHERE workspace_id = $1 AND id = $2`, ws, eventID, outboundMessageProperty, strconv.FormatInt(m.ID, 10)); err != nil {
			return interpretError(fmt.Errorf("name the sent message: %w", err))
		}
		m.WorkspaceID = ws
		ch := newChange(eventID, ev)
		ch.message(m.ID, m.ConversationID, m.Channel, m.Direction, "")
		return commitCustomer(ctx, tx, ws, cust, ch.kind, ch.diff, now, eventID, nil)
	})
	if err != nil {
		return nil, false, err
	}
	if !repeat {
		db.committed(ws, []int64{m.CustomerID})
	}
	return m, repeat, nil
}

// SettleOutbound applies the outcome of a recorded message's send, as a
// status callback is applied (applyMessageStatus), and records an opt-out
// the provider reported, in one transaction with one change of the
// customer.
//
// An opt-out is a consent decision like a STOP keyword's, so it is stored
// as one: an event of its own (optOutEvent) whose change carries it. A
// split rebuilds each side's consents from their events' decisions
// (rebuildConsents); a decision without an event would be lost there.
func (db *DB) SettleOutbound(ctx context.Context, ws, id int64, out c360.OutboundOutcome) (*c360.Message, error) {
	now := db.Now()
	var touched int64
	err := db.inTx(ctx, ws, func(tx pgx.Tx) error {
		touched = 0
		m, cust, found, err := applyMessageStatus(ctx, tx, ws, statusUpdate{ProviderID: out.ProviderID, MessageID: id,
			Status: out.Status, ErrorCode: out.ErrorCode})
		if err != nil {
			return err
		}
		if !found {
			return c360.Errorf(c360.ENOTFOUND, "message %d not found", id)
		}
		if out.ReleaseKey {
			if err := releaseOutboundKey(ctx, tx, ws, id); err != nil {
				return err
			}
		}
		ch := &change{kind: c360.ChangeEvent, diff: map[string]any{}}
		var eventID int64
		if out.OptedOut {
			var owner int64
			var channel string
			if err := tx.QueryRow(ctx, `SELECT customer_id, channel FROM messages WHERE workspace_id = $1 AND id = $2`, ws, id).Scan(&owner, &channel); err != nil {
				return interpretError(fmt.Errorf("find message's customer: %w", err))
			}
			if cust == nil {
				if cust, err = lockSurvivor(ctx, tx, ws, owner); err != nil {
					return err
				}
			}
			ev := &c360.Event{Type: c360.EventMessageStatus}
			if eventID, err = optOutEvent(ctx, tx, ws, id, out, now); err != nil {
				return err
			}
			if eventID != 0 { // else recorded already, by an earlier settle
				ch = newChange(eventID, ev)
				if _, err := upsertConsent(ctx, tx, ws, cust.id, channel, c360.ConsentOptedOut, out.Source, now); err != nil {
					return err
				}
				ch.consent(&c360.ConsentInput{Channel: channel, Status: c360.ConsentOptedOut})
			}
		}
		if m != nil {
			ch.message(m.ID, m.ConversationID, m.Channel, m.Direction, m.Status)
		}
		if cust == nil || m == nil && eventID == 0 {
			return nil
		}
		touched = cust.id
		return commitCustomer(ctx, tx, ws, cust, ch.kind, ch.diff, now, eventID, nil)
	})
	if err != nil {
		return nil, err
	}
	if touched != 0 {
		db.committed(ws, []int64{touched})
	}
	return db.findMessage(ctx, ws, id)
}

// releaseOutboundKey frees the idempotency key message id was recorded
// under, so that a repeat of the key records and sends anew: its event's
// dedupe key moves from "send:<key>" to "refused:<id>:send:<key>", which
// neither outboundKey nor a provider's id ever is (ids make it unique).
// The message stays, failed, in the conversation.
func releaseOutboundKey(ctx context.Context, tx pgx.Tx, ws, id int64) error {
	if _, err := tx.Exec(ctx, `
		UPDATE events e SET dedupe_key = 'refused:' || m.id || ':' || e.dedupe_key
		FROM messages m
		WHERE m.workspace_id = $1 AND m.id = $2 AND e.workspace_id = $1 AND e.id = m.event_id
		  AND e.dedupe_key LIKE 'send:%'`, ws, id); err != nil {
		return interpretError(fmt.Errorf("free the message's key: %w", err))
	}
	return nil
}

// optOutEventPrefix starts the dedupe key of the event that records a
// provider's opt-out refusal of a sent message: the key of the message's
// own event (outboundKey, "send:...") after it, which no other key of the
// provider's source starts with.
const optOutEventPrefix = "optout:"

// optOutEvent stores the event that records the provider's refusal of
// message id because its recipient opted out: a message_status event
// (failed, the provider's code), from the recipient's number as the
// message's event names it, so that a split moves the decision with the
// number, as it moves an inbound STOP. Its dedupe key derives from the
// message's, so the refusal is recorded once; it returns 0 when it was
// already.
func optOutEvent(ctx context.Context, tx pgx.Tx, ws, id int64, out c360.OutboundOutcome, now time.Time) (int64, error) {
	props := map[string]any{"status": c360.MessageFailed, outboundMessageProperty: strconv.FormatInt(id, 10)}
	if out.ErrorCode != "" {
		props["errorCode"] = out.ErrorCode
	}
	var eventID int64
	err := tx.QueryRow(ctx, `
		INSERT INTO events (workspace_id, type, properties, identities, source, dedupe_key, occurred_at, received_at)
		SELECT $1, $3, $4, e.identities, $5, $6 || e.dedupe_key, $7, $7
		FROM messages m JOIN events e ON e.workspace_id = m.workspace_id AND e.id = m.event_id
		WHERE m.workspace_id = $1 AND m.id = $2
		ON CONFLICT (workspace_id, source, dedupe_key) DO NOTHING
		RETURNING id`, ws, id, c360.EventMessageStatus, props, out.Source, optOutEventPrefix, now).Scan(&eventID)
	if err == pgx.ErrNoRows {
		return 0, nil
	} else if err != nil {
		return 0, interpretError(fmt.Errorf("record the opt-out: %w", err))
	}
	return eventID, nil
}

// findMessage returns the message with c360's id.
func (db *DB) findMessage(ctx context.Context, ws, id int64) (*c360.Message, error) {
	m, err := scanMessage(db.as(ws).QueryRow(ctx, `
		SELECT `+messageColumns+` FROM messages m WHERE m.workspace_id = $1 AND m.id = $2`, ws, id), ws)
	if err == pgx.ErrNoRows {
		return nil, c360.Errorf(c360.ENOTFOUND, "message %d not found", id)
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

// twilioSource is the source of Twilio's events (connectors/twilio.Source):
// sendMessage sends through Twilio.
const twilioSource = "twilio"

// sessionSender returns which inbound WhatsApp messages open the session
// window of the sender sendMessage uses in workspace w: those of source
// received through Twilio and, when to is not "", addressed to that
// number. WhatsApp's window is per business number, so a message the
// customer sent to another one (a WhatsApp Cloud API number, another of
// the account's Twilio senders) does not open it.
//
// The sender is chosen as connectors/twilio's senderParams chooses it:
// the workspace's WhatsApp number, else its Messaging Service. c360 does
// not know a Messaging Service's senders, so then any WhatsApp message
// received through Twilio counts (to is ""). A workspace with neither
// cannot send on WhatsApp (sendMessage refuses it as having no sender):
// source is "", and every inbound WhatsApp message counts.
//
// The number is compared in E.164, as Twilio writes an inbound message's
// To and connectors/twilio stores it (splitAddress: read as WhatsApp
// writes numbers), whatever the workspace was given: UpdateWorkspace keeps
// it so (twilioSender), and one kept as typed before ("+1 415 555 0100",
// "whatsapp:+14155550100") is normalized here the same way.
func sessionSender(n identity.Normalizer, w *c360.Workspace) (source, to string) {
	from := trimWhatsAppPrefix(strings.TrimSpace(w.TwilioWhatsAppFrom))
	switch {
	case from != "":
		if id, err := n.Normalize(identity.Identity{Type: identity.TypePhone, Value: whatsAppPrefix + from}); err == nil {
			return twilioSource, id.Value
		}
		return twilioSource, identity.WhatsAppNumber(from)
	case w.TwilioMessagingServiceSID != "":
		return twilioSource, ""
	}
	return "", ""
}

// FindOutreach returns what deciding whether customerID may be messaged on
// channel needs, in one query after the workspace (cached): the surviving
// customer, its phones, its consent on the channel and the numbers its
// latest inbound messages there came from (each inbound message's event
// names it).
//
// The recipient is the number the customer last wrote from on the channel,
// so that a WhatsApp reply goes to the number whose session is open (and an
// SMS reply to the number the customer texts from); without an inbound
// message there, the most recently seen phone. On WhatsApp only the
// messages addressed to the workspace's sender count (sessionSender): a
// message to another business number neither opens its window nor
// chooses the number. A number the workspace's identity rules block is
// never chosen, nor one that has since moved to another customer (a
// split): a customer left without a usable number gets Phone "".
//
// Each conversation's inbound messages are read newest first along
// messages_conversation_idx, each one's event by its primary key, and the
// read stops at the outreachInbound-th that counts.
func (db *DB) FindOutreach(ctx context.Context, ws, customerID int64, channel string) (*c360.Outreach, error) {
	rules, err := db.identityRules(ctx, ws)
	if err != nil {
		return nil, err
	}
	o := &c360.Outreach{Channel: channel}
	if o.Workspace, err = db.findWorkspaceByID(ctx, ws); err != nil {
		return nil, err
	}
	var senderSource, senderTo string
	if channel == c360.ChannelWhatsApp {
		senderSource, senderTo = sessionSender(db.Normalizer, o.Workspace)
	}
	var (
		phones, inboundPhones     []string
		inboundAts                []time.Time
		consentStatus, consentSrc *string
		consentAt                 *time.Time
	)
	err = db.as(ws).QueryRow(ctx, `
		SELECT c.id,
		       coalesce((SELECT array_agg(i.value ORDER BY i.last_seen DESC, i.value) FROM identities i
		                 WHERE i.workspace_id = $1 AND i.customer_id = c.id AND i.type = 'phone'), '{}'),
		       k.status, k.source, k.updated_at,
		       coalesce(r.phones, '{}'), coalesce(r.ats, '{}')
		FROM customers c
		LEFT JOIN consents k ON k.workspace_id = c.workspace_id AND k.customer_id = c.id AND k.channel = $3
		LEFT JOIN LATERAL (
			SELECT array_agg(x.phone ORDER BY x.created_at DESC, x.id DESC) AS phones,
			       array_agg(x.created_at ORDER BY x.created_at DESC, x.id DESC) AS ats
			FROM (
				SELECT m.id, m.created_at, p->>'value' AS phone
				FROM conversations v
				CROSS JOIN LATERAL (
					SELECT m.id, m.created_at, e.identities FROM messages m
					JOIN events e ON e.workspace_id = $1 AND e.id = m.event_id
					WHERE m.workspace_id = $1 AND m.conversation_id = v.id AND m.direction = 'inbound'
					  AND ($5 = '' OR e.source = $5 AND ($6 = '' OR e.properties->>'to' = $6))
					ORDER BY m.created_at DESC, m.id DESC LIMIT $4) m
				CROSS JOIN LATERAL jsonb_array_elements(m.identities) p
				WHERE v.workspace_id = $1 AND v.customer_id = c.id AND v.channel = $3 AND p->>'type' = 'phone'
				ORDER BY m.created_at DESC, m.id DESC LIMIT $4) x
		) r ON true
		WHERE c.workspace_id = $1
		  AND c.id = (SELECT coalesce(m.merged_into, m.id) FROM customers m WHERE m.workspace_id = $1 AND m.id = $2)`,
		ws, customerID, channel, outreachInbound, senderSource, senderTo).Scan(
		&o.CustomerID, &phones, &consentStatus, &consentSrc, &consentAt, &inboundPhones, &inboundAts)
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
	return o, nil
}
