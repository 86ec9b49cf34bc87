package postgres

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/c360dev/c360"
	"github.com/c360dev/c360/identity"
)

// Dead letters. When a request fails on its own in the batcher (alone in
// its transaction, see runGroup) for a reason that is not the system's —
// a value PostgreSQL refuses, a broken constraint, a bug — its events are
// kept in dead_letters, in a transaction of their own, before the request
// is answered. Ingest then returns a *c360.DeadLetteredError carrying the
// cause, so a webhook can acknowledge the delivery (the provider would only
// retry in vain) without losing it, and admins replay it after a fix.
//
// Unavailability (the database down or overloaded, timeouts), cancellation
// and serialization failures are the system's: they are answered as such
// (503) and the provider's retry is the replay.

var _ c360.DeadLetterService = (*DB)(nil)

// keepDeadLetters is runGroup's hook for a request that was applied alone:
// when it failed for a reason of its own, its events become dead letters
// and r.err a *c360.DeadLetteredError. If keeping them fails too, the
// events are neither stored nor kept: r.err is then UNAVAILABLE, whatever
// the cause's code, so that every connector answers 503 and the provider
// retries (a webhook that skips invalid events would otherwise acknowledge
// and lose them).
func (db *DB) keepDeadLetters(ctx context.Context, r *ingestReq) {
	if r.err == nil || !c360.EventFault(r.err) || !c360.DeadLettersWanted(r.ctx) {
		return
	}
	ids, err := db.insertDeadLetters(ctx, r.ws, r.prepared, r.err)
	if err != nil {
		r.err = &wrapped{c360.Errorf(c360.EUNAVAILABLE, "the events could not be stored, nor kept as dead letters; retry"),
			fmt.Errorf("%v; keeping them as dead letters failed too: %w", r.err, err)}
		return
	}
	r.err = &c360.DeadLetteredError{IDs: ids, Err: r.err}
}

// keepInvalid returns what Ingest answers for events validation refused
// with err. When ctx asks for it (c360.WithInvalidAsDeadLetters), the
// events are kept as dead letters, all of them, as a request that fails
// inside ingest is, and the answer is a *c360.DeadLetteredError carrying
// err; when keeping them fails, it is UNAVAILABLE, so that the provider
// retries, as in keepDeadLetters. Events whose source or dedupe key could
// not key a dead letter, and failures that are not the events' (loading
// the workspace's rules), are answered with err.
func (db *DB) keepInvalid(ctx context.Context, ws int64, events []*c360.Event, err error) error {
	if c360.ErrorCode(err) != c360.EINVALID || !c360.InvalidAsDeadLettersWanted(ctx) {
		return err
	}
	prepared := make([]*preparedEvent, len(events))
	for i, ev := range events {
		if ev.Source == "" || ev.DedupeKey == "" || len(ev.SentKey()) > 256 || storableKey(ev) != nil {
			return err
		}
		prepared[i] = &preparedEvent{ev: ev}
	}
	ids, kerr := db.insertDeadLetters(ctx, ws, prepared, fmt.Errorf("refused as invalid before ingest: %s", c360.ErrorMessage(err)))
	if kerr != nil {
		return &wrapped{c360.Errorf(c360.EUNAVAILABLE, "the events could not be stored, nor kept as dead letters; retry"),
			fmt.Errorf("%v; keeping them as dead letters failed too: %w", err, kerr)}
	}
	return &c360.DeadLetteredError{IDs: ids, Err: err}
}

// insertDeadLetters records (or records again) each event with the failure.
func (db *DB) insertDeadLetters(ctx context.Context, ws int64, prepared []*preparedEvent, cause error) ([]int64, error) {
	type key struct{ source, dedupe string }
	seen := map[key]bool{}
	var sources, keys, types, events []string
	var raws [][]byte
	for _, p := range prepared {
		k := key{p.ev.Source, p.ev.DedupeKey}
		if seen[k] {
			continue // one row per event: a repeat within the request is the same event
		}
		seen[k] = true
		raw, err := json.Marshal(toStoredEvent(p.ev))
		if err != nil {
			return nil, fmt.Errorf("encode dead letter: %w", err)
		}
		shown := withoutNUL(raw)
		if bytes.Equal(shown, raw) {
			raw = nil
		}
		sources, keys, types = append(sources, p.ev.Source), append(keys, p.ev.DedupeKey), append(types, p.ev.Type)
		events, raws = append(events, string(shown)), append(raws, raw)
	}
	msg := errorText(cause)
	var ids []int64
	err := db.inTx(ctx, ws, func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, `
			INSERT INTO dead_letters (workspace_id, source, dedupe_key, event_type, event, event_raw, error, first_failed_at, last_failed_at)
			SELECT $1, x.s, x.k, x.t, x.e::jsonb, x.r, $7, $8, $8
			FROM unnest($2::text[], $3::text[], $4::text[], $5::text[], $6::bytea[]) AS x(s, k, t, e, r)
			ON CONFLICT (workspace_id, source, dedupe_key) DO UPDATE SET
				attempts = dead_letters.attempts + 1, last_failed_at = excluded.last_failed_at, error = excluded.error,
				event_type = excluded.event_type, event = excluded.event, event_raw = excluded.event_raw,
				replayed_at = NULL, replayed_event_id = NULL
			RETURNING id`,
			ws, sources, keys, types, events, raws, msg, db.Now())
		if err != nil {
			return interpretError(fmt.Errorf("insert dead letters: %w", err))
		}
		ids, err = pgx.CollectRows(rows, pgx.RowTo[int64])
		return interpretError(err)
	})
	if err != nil {
		return nil, err
	}
	return ids, nil
}

// errorText is err's text as a text column can hold it.
func errorText(err error) string {
	return strings.ToValidUTF8(strings.ReplaceAll(err.Error(), "\x00", "\uFFFD"), "\uFFFD")
}

// DeadLetters returns a page of the workspace's dead letters, newest first.
func (db *DB) DeadLetters(ctx context.Context, ws int64, f c360.DeadLetterFilter) (*c360.Page[*c360.DeadLetter], error) {
	n, err := pageSize(f.First)
	if err != nil {
		return nil, err
	}
	var (
		afterAt *time.Time
		afterID *int64
	)
	if f.After != "" {
		cur, err := c360.DecodeCursor(f.After, c360.ListDeadLetters)
		if err != nil {
			return nil, err
		}
		afterAt, afterID = &cur.Time, &cur.ID
	}
	rows, err := db.as(ws).Query(ctx, `
		SELECT `+deadLetterColumns+` FROM dead_letters
		WHERE workspace_id = $1
		  AND (NOT $2 OR replayed_at IS NULL)
		  AND ($3::timestamptz IS NULL OR (first_failed_at, id) < ($3, $4))
		ORDER BY first_failed_at DESC, id DESC
		LIMIT $5`, ws, f.Pending, afterAt, afterID, n+1)
	if err != nil {
		return nil, interpretError(fmt.Errorf("find dead letters: %w", err))
	}
	defer rows.Close()
	page := &c360.Page[*c360.DeadLetter]{Items: []*c360.DeadLetter{}, Cursors: []string{}}
	for rows.Next() {
		d, err := scanDeadLetter(rows)
		if err != nil {
			return nil, err
		}
		if !keep(page, c360.ListDeadLetters, n, d, d.FirstFailedAt, d.ID) {
			break
		}
	}
	return page, interpretError(rows.Err())
}

// ReplayDeadLetter ingests the dead letter's event again, exactly as it was
// first handed to ingest, through the one ingest path. An event stored
// meanwhile (the provider delivered it again) counts as replayed. replayed
// is false when the letter had been replayed already, before or by a
// replay running at the same time: it is returned as that replay left it
// (its replayedAt is the first replay's), and the caller records nothing.
//
// The replay holds the workspace's erasure lock, shared, from reading the
// letter until it is marked replayed (lockForReplay): an erasure that
// commits between the read and the ingest would delete the letter and the
// person, and the ingest would then store her again. With the lock, either
// the replay ends before the erasure reads her dead letters (the erasure
// then takes the replayed event too) or it finds the letter gone.
func (db *DB) ReplayDeadLetter(ctx context.Context, ws, id int64) (d *c360.DeadLetter, replayed bool, err error) {
	unlock, err := db.lockForReplay(ctx, ws)
	if err != nil {
		return nil, false, err
	}
	defer unlock()
	d, raw, err := db.findDeadLetter(ctx, ws, id)
	if err != nil {
		return nil, false, err
	}
	if d.ReplayedAt != nil {
		return d, false, nil
	}
	ev, err := fromStoredEvent(raw)
	if err != nil {
		return nil, false, fmt.Errorf("dead letter %d: %w", id, err)
	}
	res, err := db.Ingest(ctx, ws, []*c360.Event{ev})
	if err != nil {
		var kept *c360.DeadLetteredError
		if !errors.As(err, &kept) && c360.EventFault(err) {
			// Refused before the transaction (the workspace's rules changed,
			// say): count the attempt here, since no hook saw it.
			if uerr := db.recordReplayFailure(ctx, ws, id, err); uerr != nil {
				return nil, false, uerr
			}
		}
		return nil, false, err
	}
	// Marked once: replays of one letter at the same time all ingest its
	// event (stored once, by its key), and only the first to get here
	// marks it; the others find it marked, and say they changed nothing.
	row, err := db.as(ws).Query(ctx, `
		UPDATE dead_letters SET replayed_at = $3, replayed_event_id = $4
		WHERE workspace_id = $1 AND id = $2 AND replayed_at IS NULL
		RETURNING `+deadLetterColumns, ws, id, db.Now(), res[0].EventID)
	if err != nil {
		return nil, false, interpretError(fmt.Errorf("mark dead letter replayed: %w", err))
	}
	defer row.Close()
	if !row.Next() {
		if err := row.Err(); err != nil {
			return nil, false, interpretError(fmt.Errorf("mark dead letter replayed: %w", err))
		}
		row.Close()
		// Under the lock, a letter the UPDATE did not mark was marked by
		// a replay at the same time, or deleted.
		d, _, err := db.findDeadLetter(ctx, ws, id)
		if err == nil {
			return d, false, nil
		}
		if c360.ErrorCode(err) != c360.ENOTFOUND {
			return nil, false, err
		}
		// The event is stored: NOT_FOUND would tell the admin nothing
		// happened. Nothing but an erasure, which the lock keeps out,
		// deletes a dead letter; should one go anyway, the answer says
		// what was done.
		return nil, false, c360.Errorf(c360.ECONFLICT, "dead letter %d was deleted during its replay; its event was stored (event %d)", id, res[0].EventID)
	}
	out, err := scanDeadLetter(row)
	if err != nil {
		return nil, false, err
	}
	return out, true, interpretError(row.Err())
}

// recordReplayFailure counts a failed replay of letter id, refused before
// ingest's transaction, on the letter, with cause as its error, unless a
// replay running at the same time has marked it replayed meanwhile: the
// letter is then done, and its attempts and error stay as that replay left
// them.
func (db *DB) recordReplayFailure(ctx context.Context, ws, id int64, cause error) error {
	if _, err := db.as(ws).Exec(ctx, `
		UPDATE dead_letters SET attempts = attempts + 1, last_failed_at = $3, error = $4
		WHERE workspace_id = $1 AND id = $2 AND replayed_at IS NULL`, ws, id, db.Now(), errorText(cause)); err != nil {
		return interpretError(fmt.Errorf("record replay failure: %w", err))
	}
	return nil
}

// erasureLockKey is the key of workspace ws's erasure lock, an advisory
// lock that EraseCustomer takes exclusive for its transaction and a replay
// shared for its whole length: erasures of a workspace wait for the
// replays under way and for each other, replays for the erasures only.
func erasureLockKey(ws int64) int64 {
	return identity.Key(ws, identity.Identity{Type: "workspace erasure"}) // a space: no identity type
}

// lockForReplay takes workspace ws's erasure lock, shared, on a connection
// of its own, and returns what releases both. The lock is a session lock:
// the replay's ingest runs in transactions of the batcher, on other
// connections, which never take it, so the replay cannot wait on itself.
// The connection is the owner pool's, not the tenant pool's, which the
// replay's own reads and its ingest need: held from the tenant pool, a
// pool of one connection (C360_DB_MAX_CONNS=1) left the replay waiting on
// itself. replaySlots bounds the replays in flight so that they never
// hold the whole owner pool. A connection whose unlock failed is closed,
// never returned to the pool holding the lock.
func (db *DB) lockForReplay(ctx context.Context, ws int64) (unlock func(), err error) {
	if err := db.replaySlots.Acquire(ctx, 1); err != nil {
		return nil, interpretError(fmt.Errorf("wait for a replay slot: %w", err))
	}
	conn, err := db.Pool.Acquire(ctx)
	if err != nil {
		db.replaySlots.Release(1)
		return nil, interpretError(fmt.Errorf("lock for replay: %w", err))
	}
	release := func(ok bool) {
		if !ok {
			_ = conn.Conn().Close(context.WithoutCancel(ctx))
		}
		conn.Release()
		db.replaySlots.Release(1)
	}
	key := erasureLockKey(ws)
	if _, err := conn.Exec(ctx, `SELECT pg_advisory_lock_shared($1)`, key); err != nil {
		release(false) // the lock may have been granted as the wait was cut off
		return nil, interpretError(fmt.Errorf("lock for replay: %w", err))
	}
	return func() {
		_, err := conn.Exec(context.WithoutCancel(ctx), `SELECT pg_advisory_unlock_shared($1)`, key)
		release(err == nil)
	}, nil
}

// findDeadLetter returns the dead letter and its exact event JSON.
func (db *DB) findDeadLetter(ctx context.Context, ws, id int64) (*c360.DeadLetter, []byte, error) {
	rows, err := db.as(ws).Query(ctx, `
		SELECT `+deadLetterColumns+`, coalesce(event_raw, convert_to(event::text, 'UTF8'))
		FROM dead_letters WHERE workspace_id = $1 AND id = $2`, ws, id)
	if err != nil {
		return nil, nil, interpretError(fmt.Errorf("find dead letter: %w", err))
	}
	defer rows.Close()
	if !rows.Next() {
		if err := rows.Err(); err != nil {
			return nil, nil, interpretError(fmt.Errorf("find dead letter: %w", err))
		}
		return nil, nil, c360.Errorf(c360.ENOTFOUND, "no dead letter %d", id)
	}
	var raw []byte
	d, err := scanDeadLetter(rows, &raw)
	if err != nil {
		return nil, nil, err
	}
	return d, raw, interpretError(rows.Err())
}

const deadLetterColumns = `workspace_id, id, source, dedupe_key, event_type, event, error, attempts,
	first_failed_at, last_failed_at, replayed_at, coalesce(replayed_event_id, 0)`

func scanDeadLetter(rows pgx.Rows, extra ...any) (*c360.DeadLetter, error) {
	d := &c360.DeadLetter{}
	dest := append([]any{&d.WorkspaceID, &d.ID, &d.Source, &d.DedupeKey, &d.EventType, &d.Event, &d.Error, &d.Attempts,
		&d.FirstFailedAt, &d.LastFailedAt, &d.ReplayedAt, &d.ReplayedEventID}, extra...)
	if err := rows.Scan(dest...); err != nil {
		return nil, fmt.Errorf("scan dead letter: %w", err)
	}
	return d, nil
}

// storedEvent is the canonical event as a dead letter keeps it: a stable
// JSON shape, independent of the Go field names of c360.Event. Identities
// are kept as received; a replay normalizes them again.
type storedEvent struct {
	Type           string          `json:"type"`
	Name           string          `json:"name,omitempty"`
	Identities     []c360.Identity `json:"identities"`
	PreviousID     *c360.Identity  `json:"previousId,omitempty"`
	Traits         map[string]any  `json:"traits,omitempty"`
	TraitsIfAbsent map[string]any  `json:"traitsIfAbsent,omitempty"`
	Properties     json.RawMessage `json:"properties,omitempty"`
	Context        json.RawMessage `json:"context,omitempty"`
	Source         string          `json:"source"`
	DedupeKey      string          `json:"dedupeKey"`
	OccurredAt     time.Time       `json:"occurredAt"`
	ReceivedAt     time.Time       `json:"receivedAt"`
	Message        *storedMessage  `json:"message,omitempty"`
	Consent        *storedConsent  `json:"consent,omitempty"`

	// RepeatSharesIdentity keeps a replay from taking another person's
	// event under the same key for a redelivery.
	RepeatSharesIdentity bool `json:"repeatSharesIdentity,omitempty"`
	// FromClientKey keeps a replay from trusting what a client key sent
	// more than its first try did.
	FromClientKey bool `json:"fromClientKey,omitempty"`
	// Unreadable keeps a replay refusing an event its source could not read.
	Unreadable string `json:"unreadable,omitempty"`
}

type storedMessage struct {
	Channel    string   `json:"channel"`
	Direction  string   `json:"direction"`
	Body       string   `json:"body"`
	MediaURLs  []string `json:"mediaUrls,omitempty"`
	ProviderID string   `json:"providerId,omitempty"`
	Status     string   `json:"status"`
	ErrorCode  string   `json:"errorCode,omitempty"`
	OutboundID int64    `json:"outboundId,omitempty"`
}

type storedConsent struct {
	Channel string `json:"channel"`
	Status  string `json:"status"`
}

func toStoredEvent(ev *c360.Event) storedEvent {
	s := storedEvent{
		Type: ev.Type, Name: ev.Name, Identities: ev.Identities, PreviousID: ev.PreviousID,
		Traits: ev.Traits, TraitsIfAbsent: ev.TraitsIfAbsent,
		Properties: storedObject(ev.RawProperties, ev.Properties), Context: storedObject(ev.RawContext, ev.Context),
		Source: ev.Source, DedupeKey: ev.DedupeKey, OccurredAt: ev.OccurredAt, ReceivedAt: ev.ReceivedAt,
		RepeatSharesIdentity: ev.RepeatSharesIdentity, FromClientKey: ev.FromClientKey, Unreadable: ev.Unreadable,
	}
	if s.Identities == nil {
		s.Identities = []c360.Identity{}
	}
	if m := ev.Message; m != nil {
		s.Message = &storedMessage{Channel: m.Channel, Direction: m.Direction, Body: m.Body, MediaURLs: m.MediaURLs,
			ProviderID: m.ProviderID, Status: m.Status, ErrorCode: m.ErrorCode, OutboundID: m.OutboundID}
	}
	if c := ev.Consent; c != nil {
		s.Consent = &storedConsent{Channel: c.Channel, Status: c.Status}
	}
	return s
}

// storedObject is an event's object as a dead letter keeps it: its bytes
// when it has them, else its map encoded, else nothing.
func storedObject(raw json.RawMessage, m map[string]any) json.RawMessage {
	if raw != nil || m == nil {
		return raw
	}
	return json.RawMessage(mustJSON(m))
}

func fromStoredEvent(raw []byte) (*c360.Event, error) {
	var s storedEvent
	if err := c360.UnmarshalExact(raw, &s); err != nil { // large integers stay exact
		return nil, fmt.Errorf("decode stored event: %w", err)
	}
	ev := &c360.Event{
		Type: s.Type, Name: s.Name, Identities: s.Identities, PreviousID: s.PreviousID,
		Traits: s.Traits, TraitsIfAbsent: s.TraitsIfAbsent,
		Source: s.Source, DedupeKey: s.DedupeKey, OccurredAt: s.OccurredAt, ReceivedAt: s.ReceivedAt,
		RepeatSharesIdentity: s.RepeatSharesIdentity, FromClientKey: s.FromClientKey, Unreadable: s.Unreadable,
	}
	// Objects come back as maps, whatever form they were kept in: a
	// message's threadKey is read from its properties.
	for _, o := range []struct {
		raw json.RawMessage
		m   *map[string]any
	}{{s.Properties, &ev.Properties}, {s.Context, &ev.Context}} {
		if o.raw == nil {
			continue
		}
		if err := c360.UnmarshalExact(o.raw, o.m); err != nil {
			return nil, fmt.Errorf("decode stored event: %w", err)
		}
	}
	if m := s.Message; m != nil {
		ev.Message = &c360.MessageInput{Channel: m.Channel, Direction: m.Direction, Body: m.Body, MediaURLs: m.MediaURLs,
			ProviderID: m.ProviderID, Status: m.Status, ErrorCode: m.ErrorCode, OutboundID: m.OutboundID}
	}
	if c := s.Consent; c != nil {
		ev.Consent = &c360.ConsentInput{Channel: c.Channel, Status: c.Status}
	}
	return ev, nil
}

// withoutNUL returns JSON text with every \u0000 escape (a NUL character,
// which jsonb refuses) replaced by \ufffd. Escaped backslashes are skipped
// whole, so the text "\\u0000" (a backslash, then u0000) is left alone.
func withoutNUL(js []byte) []byte {
	if !bytes.Contains(js, []byte(`\u0000`)) {
		return js
	}
	out := make([]byte, 0, len(js))
	for i := 0; i < len(js); i++ {
		if js[i] != '\\' || i+1 == len(js) {
			out = append(out, js[i])
			continue
		}
		if bytes.HasPrefix(js[i:], []byte(`\u0000`)) {
			out = append(out, `\ufffd`...)
			i += len(`\u0000`) - 1
			continue
		}
		out = append(out, js[i], js[i+1])
		i++
	}
	return out
}
