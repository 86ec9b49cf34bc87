package postgres

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/c360dev/c360"
	"github.com/c360dev/c360/identity"
)

var _ c360.Ingester = (*DB)(nil)

// Ingest stores events exactly once and applies them to customer profiles,
// all in one transaction (shared with concurrent calls when group commit
// runs; see batcher.go). It returns only after commit, so a caller that
// acknowledges after Ingest returns never acknowledges what is not durable.
//
// Events are validated and normalized before the transaction starts: bad
// input is refused with EINVALID and nothing is written, unless ctx asks
// for such events to be kept as dead letters (keepInvalid).
func (db *DB) Ingest(ctx context.Context, workspaceID int64, events []*c360.Event) ([]c360.IngestResult, error) {
	rules, prepared, err := db.prepareAll(ctx, workspaceID, events)
	if err != nil {
		return nil, db.keepInvalid(ctx, workspaceID, events, err)
	}
	results, _, err := db.submit(ctx, workspaceID, rules, prepared)
	if err != nil {
		return nil, err
	}
	for i := range events {
		events[i].ID, events[i].CustomerID = results[i].EventID, results[i].CustomerID
	}
	return results, nil
}

// prepareAll loads the workspace's identity rules and validates, normalizes
// and encodes each event; the first bad event refuses them all.
func (db *DB) prepareAll(ctx context.Context, ws int64, events []*c360.Event) (identity.Rules, []*preparedEvent, error) {
	rules, err := db.identityRules(ctx, ws)
	if err != nil {
		return identity.Rules{}, nil, err
	}
	prepared := make([]*preparedEvent, len(events))
	for i, ev := range events {
		p, err := db.prepare(ev, rules)
		if err != nil {
			if len(events) > 1 {
				return identity.Rules{}, nil, c360.Errorf(c360.EINVALID, "events[%d]: %s", i, c360.ErrorMessage(err))
			}
			return identity.Rules{}, nil, err
		}
		p.encode()
		prepared[i] = &p
	}
	return rules, prepared, nil
}

// Validate runs Ingest's validation on each event without writing anything
// and returns one error per event: nil for an event Ingest would accept,
// EINVALID with the reason otherwise. Like Ingest, it fills an event's
// missing times and properties. Batch connectors use it to refuse only the
// bad events of a batch; the second result reports a failure to load the
// workspace's identity rules.
func (db *DB) Validate(ctx context.Context, workspaceID int64, events []*c360.Event) ([]error, error) {
	rules, err := db.identityRules(ctx, workspaceID)
	if err != nil {
		return nil, err
	}
	errs := make([]error, len(events))
	for i, ev := range events {
		_, errs[i] = db.prepare(ev, rules)
	}
	return errs, nil
}

// preparedEvent is an event whose identities are normalized and sorted.
type preparedEvent struct {
	ev         *c360.Event
	identities []identity.Identity
	dropped    []string
	// The event's JSON columns, encoded by encode on the caller's
	// goroutine, before the event joins a group: a group's transaction
	// holds its locks while it runs, and encoding there would lengthen it.
	// Both ingest paths insert these.
	properties, identitiesRaw string
	traits, context           *string
	traitsIfAbsent            *string
	// traitsAt is the time the event's traits are dated at (TraitsAt),
	// kept only when it is not occurred_at: a split's rebuild replays the
	// traits at it (rebuildTraits), so that a client key's traits stay
	// dated at receipt.
	traitsAt *time.Time
}

// encode fills the event's JSON columns.
func (p *preparedEvent) encode() {
	// prepare gave the event properties in one form or the other.
	ids := p.identities
	if ids == nil { // a status without a usable identity: an empty list, as the column's default
		ids = []identity.Identity{}
	}
	p.properties, p.identitiesRaw = *jsonText(p.ev.RawProperties, p.ev.Properties), mustJSON(ids)
	p.traits, p.context = jsonText(nil, p.ev.Traits), jsonText(p.ev.RawContext, p.ev.Context)
	p.traitsIfAbsent = jsonText(nil, p.ev.TraitsIfAbsent)
	if p.traits != nil || p.traitsIfAbsent != nil {
		if at := p.ev.TraitsAt(); !at.Equal(p.ev.OccurredAt) {
			// A copy declared here, where it is kept: the address of
			// at would move every event's time to the heap.
			kept := at
			p.traitsAt = &kept
		}
	}
}

// storableKey refuses an event whose source or dedupe key PostgreSQL's text
// columns would refuse: bytes that are not UTF-8, or a NUL. Any other
// field that the events table refuses is kept in a dead letter for an
// admin to replay; these two key the dead letter itself, whose columns
// are text too. Left to the insert, such an event failed its whole group
// and its dead letter, so a batch holding it answered 503 on every retry.
func storableKey(ev *c360.Event) error {
	if err := c360.CheckStorable("messageId", ev.DedupeKey); err != nil {
		return err
	}
	return c360.CheckStorable("source", ev.Source)
}

// maxIdentitiesPerEvent bounds the locks and rows one event can touch.
const maxIdentitiesPerEvent = 20

func (db *DB) prepare(ev *c360.Event, rules identity.Rules) (preparedEvent, error) {
	p := preparedEvent{ev: ev}
	if ev.Source == "" || ev.DedupeKey == "" {
		return p, c360.Errorf(c360.EINVALID, "event has no source or dedupe key")
	}
	if len(ev.SentKey()) > 256 {
		return p, c360.Errorf(c360.EINVALID, "messageId is longer than 256 bytes")
	}
	if err := storableKey(ev); err != nil {
		return p, err
	}
	if ev.Unreadable != "" {
		return p, c360.Errorf(c360.EINVALID, "%s", ev.Unreadable)
	}
	if ev.Type == c360.EventMessageStatus && (ev.Message == nil || ev.Message.ProviderID == "") {
		return p, c360.Errorf(c360.EINVALID, "a message status names its message by the provider's id")
	}
	raw := make([]identity.Identity, 0, len(ev.Identities)+3)
	for _, id := range ev.Identities {
		raw = append(raw, identity.Identity(id))
	}
	if ev.PreviousID != nil {
		raw = append(raw, identity.Identity(*ev.PreviousID))
	}
	if len(raw) > maxIdentitiesPerEvent {
		return p, c360.Errorf(c360.EINVALID, "too many identities: %d, at most %d", len(raw), maxIdentitiesPerEvent)
	}
	// A status names its message by the provider's id and reaches its
	// customer through the message (ingestStatus): its identities (the
	// number a provider sent the message to) resolve nothing, so one that
	// does not normalize is dropped, not a reason to refuse the status.
	status := ev.Type == c360.EventMessageStatus
	for _, id := range raw {
		n, err := db.Normalizer.Normalize(id)
		var invalid *identity.InvalidError
		switch {
		case errors.Is(err, identity.ErrBlocked):
			p.dropped = append(p.dropped, fmt.Sprintf("%s %q: blocked value", id.Type, id.Value))
			continue
		case errors.As(err, &invalid) && status:
			p.dropped = append(p.dropped, invalid.Error())
			continue
		case errors.As(err, &invalid):
			return p, c360.Errorf(c360.EINVALID, "%s", invalid.Error())
		case err != nil:
			return p, c360.Errorf(c360.EINVALID, "invalid identity: %s", err)
		}
		if rules.IsBlocked(n.Value) {
			p.dropped = append(p.dropped, blockedByRules(n))
			continue
		}
		p.identities = append(p.identities, n)
	}
	// As in Segment, identify traits email and phone are identifiers too. A
	// trait that does not normalize stays a trait and identifies nothing.
	// So does every trait of an event sent with a client key: anyone may
	// send one, and "my phone is the phone of rosa@example.com" from a
	// stranger would attach it to Rosa's profile.
	if ev.Type == c360.EventIdentify && !ev.FromClientKey {
		for _, t := range []string{identity.TypeEmail, identity.TypePhone} {
			s, ok := ev.Traits[t].(string)
			if !ok || s == "" {
				continue
			}
			n, err := db.Normalizer.Normalize(identity.Identity{Type: t, Value: s})
			switch {
			case err != nil: // it stays a trait
			case rules.IsBlocked(n.Value):
				// Recorded as the same value sent as an identity is, and
				// once when it is sent as both.
				if d := blockedByRules(n); !slices.Contains(p.dropped, d) {
					p.dropped = append(p.dropped, d)
				}
			default:
				p.identities = append(p.identities, n)
			}
		}
	}
	p.identities = identity.Sort(p.identities)
	if len(p.identities) == 0 && !status {
		return p, c360.Errorf(c360.EINVALID, "the event has no usable identity: give at least one of user_id, anonymous_id, email, phone or a custom type")
	}
	if ev.OccurredAt.IsZero() {
		ev.OccurredAt = db.Now()
	}
	if ev.ReceivedAt.IsZero() {
		ev.ReceivedAt = db.Now()
	}
	// Cut to microseconds, as PostgreSQL keeps it: a client key's traits
	// are dated by it (Event.TraitsAt), and their observedAt is then the
	// event's received_at as stored.
	ev.ReceivedAt = ev.ReceivedAt.Truncate(time.Microsecond)
	// A time far ahead is not believed, from any source: it would win
	// every later trait update.
	ev.OccurredAt = c360.OccurredAt(ev.OccurredAt, ev.ReceivedAt)
	if ev.RawProperties != nil && !c360.PlainObject(ev.RawProperties) || ev.RawContext != nil && !c360.PlainObject(ev.RawContext) {
		return p, c360.Errorf(c360.EINVALID, "properties or context kept as bytes that are not a plain JSON object")
	}
	if ev.Properties == nil && ev.RawProperties == nil {
		ev.Properties = map[string]any{}
	}
	return p, nil
}

// blockedByRules is the reason recorded for an identifier dropped because
// it is on the workspace's block list.
func blockedByRules(n identity.Identity) string {
	return fmt.Sprintf("%s %q: blocked by the workspace's rules", n.Type, n.Value)
}

// checkRepeat returns a *c360.KeyReusedError when p repeats the key of an
// event with the identities stored, p's event asks for a repeat to share
// an identity (c360.Event.RepeatSharesIdentity), and it shares none. Both
// lists are normalized: stored ones as prepare left them. An erased event
// keeps a one-way marker of each identity in their place (erasedMarker):
// p's identities are compared with those too, so that the person's
// redelivery is still a duplicate and another person's event under the key
// is still refused.
func checkRepeat(p *preparedEvent, stored []identity.Identity) error {
	ev := p.ev
	if !ev.RepeatSharesIdentity {
		return nil
	}
	erased := slices.ContainsFunc(stored, func(id identity.Identity) bool { return id.Type == erasedIdentityType })
	for _, id := range p.identities {
		if slices.Contains(stored, id) || erased && slices.Contains(stored, erasedMarker(ev.Source, ev.DedupeKey, id)) {
			return nil
		}
	}
	return &c360.KeyReusedError{Source: ev.Source, DedupeKey: ev.DedupeKey}
}

// customerRow is a locked customer's state during ingest.
type customerRow struct {
	id        int64
	traits    map[string]any
	meta      map[string]traitMeta
	version   int64
	created   bool
	merged    []int64             // merged into this one by this event
	identAdds []identity.Identity // attached, or moved to it by a merge
	// What merges into this customer changed of its consents (channel and
	// status, in channel order) and traits, for its change row.
	consentChanges []map[string]any
	traitChanges   map[string]any
	// The group path rewrites traits and trait_meta, and recomputes the
	// search text, only for customers whose events moved them.
	traitsDirty, searchDirty bool
}

// traitMeta records where and when a trait value was observed; the newest
// observation wins when values disagree.
type traitMeta struct {
	Source string    `json:"source"`
	At     time.Time `json:"at"`
	// Weak marks a value set only because the customer had none (an
	// if-absent trait: a WhatsApp display name): any ordinary observation
	// replaces it, whatever its date (applyTraits).
	Weak bool `json:"weak,omitempty"`
	// Floor is, on a weak value, the date of the ordinary observation it
	// filled over (a clear: null or ""), carried over by a weak value that
	// replaces it: an ordinary observation older than that clear does not
	// replace the weak value, as it would not have replaced the clear.
	Floor time.Time `json:"floor,omitzero"`
}

// newerThan reports whether m, the stored observation of a trait, stands
// against an ordinary observation dated at: an ordinary m dated after it,
// or a weak m over a clear dated after it.
func (m traitMeta) newerThan(at time.Time) bool {
	if m.Weak {
		return m.Floor.After(at)
	}
	return m.At.After(at)
}

// ingestOne applies one event and returns what it did and which customers'
// change feeds grew.
func (db *DB) ingestOne(ctx context.Context, tx pgx.Tx, ws int64, rules identity.Rules, p *preparedEvent) (c360.IngestResult, []int64, error) {
	ev := p.ev
	res := c360.IngestResult{Dropped: p.dropped}

	// Claim the event first: a concurrent duplicate waits here on the unique
	// index until this transaction ends, then finds the stored row.
	err := tx.QueryRow(ctx, `
		INSERT INTO events (workspace_id, type, name, properties, traits, context, identities, source, dedupe_key, occurred_at, received_at, traits_if_absent, traits_at)
		VALUES ($1, $2, nullif($3, ''), $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
		ON CONFLICT (workspace_id, source, dedupe_key) DO NOTHING
		RETURNING id`,
		ws, ev.Type, ev.Name, p.properties, p.traits, p.context, p.identitiesRaw,
		ev.Source, ev.DedupeKey, ev.OccurredAt, ev.ReceivedAt, p.traitsIfAbsent, p.traitsAt).Scan(&res.EventID)
	if err == pgx.ErrNoRows {
		var cust *int64
		var stored []identity.Identity
		err = tx.QueryRow(ctx, `
			SELECT e.id, coalesce(c.merged_into, c.id), CASE WHEN $4::bool THEN e.identities END FROM events e
			LEFT JOIN customers c ON c.workspace_id = e.workspace_id AND c.id = e.customer_id
			WHERE e.workspace_id = $1 AND e.source = $2 AND e.dedupe_key = $3`,
			ws, ev.Source, ev.DedupeKey, ev.RepeatSharesIdentity).Scan(&res.EventID, &cust, &stored)
		if err != nil {
			return res, nil, interpretError(fmt.Errorf("find duplicate event: %w", err))
		}
		if err := checkRepeat(p, stored); err != nil {
			return res, nil, err
		}
		if cust != nil {
			res.CustomerID = *cust
		}
		res.Duplicate = true
		return res, nil, nil
	} else if err != nil {
		return res, nil, interpretError(fmt.Errorf("insert event: %w", err))
	}

	if ev.Type == c360.EventMessageStatus { // prepare made sure it names its message
		return db.ingestStatus(ctx, tx, ws, ev, res)
	}
	cust, decision, err := db.resolve(ctx, tx, ws, rules, p.identities, res.EventID, ev)
	if err != nil {
		return res, nil, err
	}
	for _, d := range decision.Dropped {
		res.Dropped = append(res.Dropped, fmt.Sprintf("%s %q: %s", d.Identity.Type, d.Identity.Value, d.Reason))
	}
	res.CustomerID = cust.id

	ch := newChange(res.EventID, ev)
	if ev.Consent != nil {
		applied, err := upsertConsent(ctx, tx, ws, cust.id, ev.Consent.Channel, ev.Consent.Status, ev.Source, ev.OccurredAt)
		if err != nil {
			return res, nil, err
		}
		// consents says how each channel the merges changed stands
		// after the event: a decision that took effect replaces the
		// merge's status of its channel, so a STOP that merged an
		// opted-in number in is not followed by that opt-in. One that
		// did not (the stored decision is newer) leaves the merge's
		// status, which is the stored one.
		if applied {
			settleConsentChange(cust.consentChanges, ev.Consent.Channel, ev.Consent.Status)
		}
		ch.consent(ev.Consent)
	}
	if ev.Message != nil && ev.Type == c360.EventMessage {
		m, err := insertMessage(ctx, tx, ws, cust.id, res.EventID, ev)
		if err != nil {
			return res, nil, err
		}
		ch.message(m.ID, m.ConversationID, m.Channel, m.Direction, "")
	}
	changed, _ := applyTraits(cust, ev.Traits, ev.TraitsIfAbsent, ev.Source, ev.TraitsAt())
	ch.traits(mergeTraitChanges(cust.traitChanges, changed))
	ch.identitiesAdded(cust.identAdds)
	ch.mergedConsents(cust.consentChanges)
	ch.merged(cust.merged)
	ch.dropped(res.Dropped)
	if cust.created {
		ch.created()
	}
	if err := commitCustomer(ctx, tx, ws, cust, ch.kind, ch.diff, db.Now(), res.EventID, res.Dropped); err != nil {
		return res, nil, err
	}
	return res, append([]int64{cust.id}, cust.merged...), nil
}

// resolve finds or creates the customer the event's identities point to,
// merging customers the event links, and attaches new identities.
//
// Lock order, the same in every transaction: the identities' advisory locks
// in key order, then customer rows in id order. A customer merged away by a
// concurrent transaction after we read its owner is noticed once its row
// lock is granted, and resolution starts again.
func (db *DB) resolve(ctx context.Context, tx pgx.Tx, ws int64, rules identity.Rules, ids []identity.Identity, eventID int64, ev *c360.Event) (*customerRow, identity.Decision, error) {
	keys := make([]int64, len(ids))
	types := make([]string, len(ids))
	values := make([]string, len(ids))
	for i, id := range ids {
		keys[i] = identity.Key(ws, id)
		types[i], values[i] = id.Type, id.Value
	}
	slices.Sort(keys)
	keys = slices.Compact(keys)
	if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock(k) FROM unnest($1::bigint[]) AS k`, keys); err != nil {
		return nil, identity.Decision{}, interpretError(fmt.Errorf("lock identities: %w", err))
	}

	for attempt := 0; ; attempt++ {
		if attempt > 10 {
			return nil, identity.Decision{}, fmt.Errorf("resolve identities: customers kept changing under us")
		}
		owners := map[identity.Identity]int64{}
		rows, err := tx.Query(ctx, ownersSQL, ws, types, values)
		if err != nil {
			return nil, identity.Decision{}, interpretError(fmt.Errorf("find owners: %w", err))
		}
		var candidates []int64
		for rows.Next() {
			var id identity.Identity
			var cust int64
			if err := rows.Scan(&id.Type, &id.Value, &cust, nil); err != nil {
				rows.Close()
				return nil, identity.Decision{}, fmt.Errorf("scan owner: %w", err)
			}
			owners[id] = cust
			candidates = append(candidates, cust)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return nil, identity.Decision{}, interpretError(fmt.Errorf("find owners: %w", err))
		}
		slices.Sort(candidates)
		candidates = slices.Compact(candidates)

		locked, stale, err := lockCustomers(ctx, tx, ws, candidates)
		if err != nil {
			return nil, identity.Decision{}, err
		}
		if stale {
			continue
		}
		// A settled event resolves to its one owner whatever the limits:
		// PlanApart needs no identities for it, so none are read.
		var existing map[int64][]identity.Identity
		if rules.SettledBy(ids, owners) == 0 {
			if existing, err = identitiesOf(ctx, tx, ws, candidates); err != nil {
				return nil, identity.Decision{}, err
			}
		}
		var apart func(a, b int64) bool
		if len(candidates) > 1 {
			if apart, err = separations(ctx, tx, ws, candidates); err != nil {
				return nil, identity.Decision{}, err
			}
		}
		d := rules.PlanApart(ids, owners, existing, apart)

		var cust *customerRow
		if d.Survivor == 0 {
			cust = &customerRow{traits: map[string]any{}, meta: map[string]traitMeta{}, created: true}
			err := tx.QueryRow(ctx, `INSERT INTO customers (workspace_id, created_at, updated_at) VALUES ($1, $2, $2) RETURNING id`,
				ws, db.Now()).Scan(&cust.id)
			if err != nil {
				return nil, d, interpretError(fmt.Errorf("insert customer: %w", err))
			}
		} else {
			cust = locked[d.Survivor]
		}
		for _, m := range d.Merge {
			cause := causeOf(ids, owners, m)
			if err := mergeInto(ctx, tx, ws, cust, locked[m], cause, eventID, "ingest", db.Now()); err != nil {
				return nil, d, err
			}
		}

		// Every identity the event kept now belongs to the survivor: insert the
		// new ones, refresh last_seen on the others.
		dropped := map[identity.Identity]bool{}
		for _, x := range d.Dropped {
			dropped[x.Identity] = true
		}
		var kt, kv []string
		for _, id := range ids {
			if !dropped[id] {
				kt, kv = append(kt, id.Type), append(kv, id.Value)
			}
		}
		if _, err := tx.Exec(ctx, `
			INSERT INTO identities (workspace_id, type, value, customer_id, source, first_seen, last_seen)
			SELECT $1, x.t, x.v, $4, $5, $6, $6 FROM unnest($2::text[], $3::text[]) AS x(t, v)
			ON CONFLICT (workspace_id, type, value) DO UPDATE SET last_seen = greatest(identities.last_seen, excluded.last_seen)`,
			ws, kt, kv, cust.id, ev.Source, ev.OccurredAt); err != nil {
			return nil, d, interpretError(fmt.Errorf("attach identities: %w", err))
		}
		cust.identAdds = append(cust.identAdds, d.Attach...)
		return cust, d, nil
	}
}

// causeOf names the event identity that pointed at customer m.
func causeOf(ids []identity.Identity, owners map[identity.Identity]int64, m int64) identity.Identity {
	for _, id := range ids {
		if owners[id] == m {
			return id
		}
	}
	return identity.Identity{}
}

// lockCustomers locks the candidate rows in id order. stale reports that one

// The reads of identities both paths make: the owners of identities ($2
// types, $3 values), with when each was last seen, and the identities of
// customers ($2 ids). Each looks its keys up one at a time (LATERAL ...
// OFFSET 0, see findBatch), so a workspace the planner's statistics do not
// know yet is not read whole (TestUnknownWorkspacePlansStayKeyLookups).
const (
	ownersSQL = `
		SELECT x.t, x.v, i.customer_id, i.last_seen
		FROM unnest($2::text[], $3::text[]) AS x(t, v)
		CROSS JOIN LATERAL (SELECT customer_id, last_seen FROM identities
			WHERE workspace_id = $1 AND type = x.t AND value = x.v OFFSET 0) i`
	identitiesOfSQL = `
		SELECT k.id, i.type, i.value FROM unnest($2::bigint[]) AS k(id)
		CROSS JOIN LATERAL (SELECT type, value FROM identities
			WHERE workspace_id = $1 AND customer_id = k.id OFFSET 0) i`
)

// lockCustomersSQL is the per-event path's lock of customers ($2 ids), in
// id order.
const lockCustomersSQL = `
	SELECT id, traits, trait_meta, version, merged_into IS NOT NULL FROM customers
	WHERE workspace_id = $1 AND id = ANY($2) ORDER BY id FOR UPDATE`

// was merged away meanwhile, so the owners read before must be read again.
func lockCustomers(ctx context.Context, tx pgx.Tx, ws int64, ids []int64) (map[int64]*customerRow, bool, error) {
	out := make(map[int64]*customerRow, len(ids))
	if len(ids) == 0 {
		return out, false, nil
	}
	rows, err := tx.Query(ctx, lockCustomersSQL, ws, ids)
	if err != nil {
		return nil, false, interpretError(fmt.Errorf("lock customers: %w", err))
	}
	defer rows.Close()
	stale := false
	for rows.Next() {
		c := &customerRow{}
		var merged bool
		if err := rows.Scan(&c.id, &c.traits, &c.meta, &c.version, &merged); err != nil {
			return nil, false, fmt.Errorf("scan customer: %w", err)
		}
		stale = stale || merged
		out[c.id] = c
	}
	if err := rows.Err(); err != nil {
		return nil, false, interpretError(fmt.Errorf("lock customers: %w", err))
	}
	return out, stale || len(out) != len(ids), nil
}

func identitiesOf(ctx context.Context, tx pgx.Tx, ws int64, customers []int64) (map[int64][]identity.Identity, error) {
	out := make(map[int64][]identity.Identity, len(customers))
	if len(customers) == 0 {
		return out, nil
	}
	rows, err := tx.Query(ctx, identitiesOfSQL, ws, customers)
	if err != nil {
		return nil, interpretError(fmt.Errorf("load identities: %w", err))
	}
	defer rows.Close()
	for rows.Next() {
		var c int64
		var id identity.Identity
		if err := rows.Scan(&c, &id.Type, &id.Value); err != nil {
			return nil, fmt.Errorf("scan identity: %w", err)
		}
		out[c] = append(out[c], id)
	}
	return out, interpretError(rows.Err())
}

// applyTraits sets each trait of traits whose observation is not older
// than the one stored, or whose stored one is weak, and each of ifAbsent
// (not in traits) that the customer has no value for (missing, null or
// empty string) and no newer observation of, as a weak observation: a
// fallback that any ordinary observation replaces whatever its date, as a
// WhatsApp display name must yield to a real name from an identify dated
// earlier (a historical import, an offline queue). It returns the traits
// that changed value and how many traits were observed (trait_meta moved).
func applyTraits(c *customerRow, traits, ifAbsent map[string]any, source string, at time.Time) (map[string]any, int) {
	changed := map[string]any{}
	observed := 0
	set := func(k string, v any, weak bool) {
		observed++
		old, had := c.traits[k]
		m := traitMeta{Source: source, At: at, Weak: weak}
		if prev, ok := c.meta[k]; ok && weak {
			if m.Floor = prev.At; prev.Weak {
				m.Floor = prev.Floor
			}
		}
		c.meta[k] = m
		if had && jsonEqual(old, v) {
			return
		}
		c.traits[k] = v
		changed[k] = v
	}
	for k, v := range traits {
		if m, ok := c.meta[k]; ok && m.newerThan(at) {
			continue
		}
		set(k, v, false)
	}
	for k, v := range ifAbsent {
		if _, given := traits[k]; given {
			continue
		}
		if cur, ok := c.traits[k]; ok && cur != nil {
			if s, isString := cur.(string); !isString || strings.TrimSpace(s) != "" {
				continue
			}
		}
		if m, ok := c.meta[k]; ok && m.At.After(at) {
			continue
		}
		set(k, v, true)
	}
	return changed, observed
}

// jsonEqual reports whether two decoded JSON values are the same value:
// numbers by value, whatever their Go type and spelling (a stored trait
// is a json.Number as PostgreSQL spells it, 18.990 or 0.0000001; an
// incoming one may be a float64 or an int64, 18.99 or 1e-07), objects and
// arrays element by element. A spelling alone never records a change, and
// never overwrites the stored value.
func jsonEqual(a, b any) bool {
	// The common cases, without building keys: a value sent again as it
	// was (same Go type, same value or spelling).
	switch x := a.(type) {
	case float64:
		if y, ok := b.(float64); ok {
			return x == y
		}
	case json.Number:
		if y, ok := b.(json.Number); ok && x == y {
			return true
		}
	}
	if x, ok := numberKey(a); ok {
		y, ok := numberKey(b)
		return ok && x == y
	}
	switch x := a.(type) {
	case nil:
		return b == nil
	case string:
		y, ok := b.(string)
		return ok && x == y
	case bool:
		y, ok := b.(bool)
		return ok && x == y
	case map[string]any:
		y, ok := b.(map[string]any)
		if !ok || len(x) != len(y) {
			return false
		}
		for k, v := range x {
			if w, ok := y[k]; !ok || !jsonEqual(v, w) {
				return false
			}
		}
		return true
	case []any:
		y, ok := b.([]any)
		if !ok || len(x) != len(y) {
			return false
		}
		for i := range x {
			if !jsonEqual(x[i], y[i]) {
				return false
			}
		}
		return true
	}
	// Another Go type a source built: by its encoding.
	x, _ := json.Marshal(a)
	y, _ := json.Marshal(b)
	return string(x) == string(y)
}

// numberKey returns a number's value as "sign digits exponent", its
// digits without leading or trailing zeros: equal keys, equal numbers. It
// reads the literal as text, so no spelling (1e999999999 included) costs
// more than its length. ok is false for a value that is not a number.
func numberKey(v any) (key string, ok bool) {
	var lit string
	switch n := v.(type) {
	case json.Number:
		lit = string(n)
	case float64:
		lit = strconv.FormatFloat(n, 'e', -1, 64)
	case int64:
		lit = strconv.FormatInt(n, 10)
	case int:
		lit = strconv.Itoa(n)
	default:
		return "", false
	}
	sign := ""
	if strings.HasPrefix(lit, "-") {
		sign, lit = "-", lit[1:]
	}
	mant, exp := lit, 0
	if i := strings.IndexAny(lit, "eE"); i >= 0 {
		e, err := strconv.Atoi(strings.TrimPrefix(lit[i+1:], "+"))
		if err != nil {
			return sign + lit, true // an exponent past int: compared as spelled
		}
		mant, exp = lit[:i], e
	}
	whole, frac, _ := strings.Cut(mant, ".")
	digits := strings.TrimLeft(whole+frac, "0")
	exp += len(digits) - len(frac) // the point's place, counted from the first digit kept
	digits = strings.TrimRight(digits, "0")
	if digits == "" {
		return "0", true // -0, 0.000, 0e5
	}
	return sign + digits + "e" + strconv.Itoa(exp), true
}

// commitCustomer writes the customer's new state, bumps its version and
// appends the change row, and links the event, in one statement.
func commitCustomer(ctx context.Context, tx pgx.Tx, ws int64, c *customerRow, kind string, diff map[string]any, now time.Time, eventID int64, dropped []string) error {
	var droppedJSON any
	if len(dropped) > 0 {
		droppedJSON = dropped
	}
	_, err := tx.Exec(ctx, commitCustomerSQL, ws, c.id, c.traits, c.meta, now, kind, diff, eventID, droppedJSON)
	if err != nil {
		return interpretError(fmt.Errorf("update customer: %w", err))
	}
	c.version++
	return nil
}

// commitCustomerSQL is commitCustomer's statement, built once.
var commitCustomerSQL = `
	WITH c AS (
		UPDATE customers SET traits = $3::jsonb, trait_meta = $4, version = version + 1, updated_at = $5,
			search_text = ` + searchTextSQL("$3::jsonb", "$2") + `
		WHERE workspace_id = $1 AND id = $2
		RETURNING version
	), e AS (
		UPDATE events SET customer_id = $2, dropped = $9 WHERE workspace_id = $1 AND id = $8
	)
	INSERT INTO customer_changes (workspace_id, customer_id, version, kind, diff, created_at)
	SELECT $1, $2, c.version, $6, $7, $5 FROM c`

// upsertConsent stores the decision unless the customer's stored decision
// on the channel is newer, and reports whether it stored it: the command
// tag counts no row when the conflict's WHERE kept the stored one, so no
// statement is added to learn the channel's resulting status.
func upsertConsent(ctx context.Context, tx pgx.Tx, ws, customer int64, channel, status, source string, at time.Time) (bool, error) {
	tag, err := tx.Exec(ctx, `
		INSERT INTO consents (workspace_id, customer_id, channel, status, source, updated_at)
		VALUES ($1, $2, $3, $4, $5, $6)
		ON CONFLICT (workspace_id, customer_id, channel) DO UPDATE
		SET status = excluded.status, source = excluded.source, updated_at = excluded.updated_at
		WHERE consents.updated_at <= excluded.updated_at`,
		ws, customer, channel, status, source, at)
	if err != nil {
		return false, interpretError(err)
	}
	return tag.RowsAffected() == 1, nil
}

// insertMessage appends the message to the customer's open conversation on
// its channel, opening one if there is none. The customer row is locked, so
// two messages of one customer never open two conversations.
func insertMessage(ctx context.Context, tx pgx.Tx, ws, customer, eventID int64, ev *c360.Event) (*c360.Message, error) {
	m := ev.Message
	thread, _ := ev.Properties["threadKey"].(string)
	var conv int64
	err := tx.QueryRow(ctx, `
		SELECT id FROM conversations
		WHERE workspace_id = $1 AND customer_id = $2 AND channel = $3 AND thread_key = $4 AND status = 'open'
		ORDER BY id DESC LIMIT 1`, ws, customer, m.Channel, thread).Scan(&conv)
	if err == pgx.ErrNoRows {
		err = tx.QueryRow(ctx, `
			INSERT INTO conversations (workspace_id, customer_id, channel, thread_key, created_at)
			VALUES ($1, $2, $3, $4, $5) RETURNING id`, ws, customer, m.Channel, thread, ev.OccurredAt).Scan(&conv)
	}
	if err != nil {
		return nil, interpretError(fmt.Errorf("open conversation: %w", err))
	}
	out := &c360.Message{ConversationID: conv, CustomerID: customer, Channel: m.Channel, Direction: m.Direction,
		Body: m.Body, MediaURLs: m.MediaURLs, Status: m.Status, ProviderID: m.ProviderID, CreatedAt: ev.OccurredAt}
	if out.MediaURLs == nil {
		out.MediaURLs = []string{}
	}
	const insertSQL = `
		WITH m AS (
			INSERT INTO messages (workspace_id, conversation_id, customer_id, event_id, channel, direction, body, media_urls, status, provider_id, created_at)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, nullif($10, ''), $11)
			RETURNING id
		), c AS (
			UPDATE conversations SET
				last_message_at = greatest(last_message_at, $11),
				last_inbound_at = CASE WHEN $6 = 'inbound' THEN greatest(last_inbound_at, $11) ELSE last_inbound_at END
			WHERE workspace_id = $1 AND id = $2
		)
		SELECT id FROM m`
	args := []any{ws, conv, customer, eventID, m.Channel, m.Direction, m.Body, out.MediaURLs, m.Status, m.ProviderID, ev.OccurredAt}
	if m.Direction == c360.DirectionOutbound && m.ProviderID != "" {
		err = lockedQueryRow(ctx, tx, ws, m.ProviderID, insertSQL, args, &out.ID)
	} else {
		err = tx.QueryRow(ctx, insertSQL, args...).Scan(&out.ID)
	}
	if err != nil {
		return nil, interpretError(fmt.Errorf("insert message: %w", err))
	}
	if err := catchUpStatus(ctx, tx, ws, ev.Source, out); err != nil {
		return nil, err
	}
	return out, nil
}

func idStrings(ids []int64) []string {
	out := make([]string, len(ids))
	for i, id := range ids {
		out[i] = fmt.Sprint(id)
	}
	return out
}

// normalizeLookup normalizes an identity given in a query.
func (db *DB) normalizeLookup(id c360.Identity) (identity.Identity, error) {
	n, err := db.Normalizer.Normalize(identity.Identity(id))
	var invalid *identity.InvalidError
	switch {
	case errors.Is(err, identity.ErrBlocked):
		return n, c360.Errorf(c360.ENOTFOUND, "no customer has %s %q", id.Type, strings.TrimSpace(id.Value))
	case errors.As(err, &invalid):
		return n, c360.Errorf(c360.EINVALID, "%s", invalid.Error())
	case err != nil:
		return n, c360.Errorf(c360.EINVALID, "invalid identity")
	}
	return n, nil
}

// committed tells the OnCommit hook which change feeds grew.
func (db *DB) committed(ws int64, customers []int64) {
	if db.OnCommit == nil || len(customers) == 0 {
		return
	}
	slices.Sort(customers)
	db.OnCommit(ws, slices.Compact(customers))
}

// ingestStatus applies a delivery status callback. It belongs to the
// message's customer, whoever the callback's phone numbers resolve to, so
// it resolves no identities: an unknown message creates no customer (the
// event is kept, and the message catches up when it is recorded), and a
// status that does not move the message forward changes nothing else.
func (db *DB) ingestStatus(ctx context.Context, tx pgx.Tx, ws int64, ev *c360.Event, res c360.IngestResult) (c360.IngestResult, []int64, error) {
	m, cust, found, err := applyMessageStatus(ctx, tx, ws, statusUpdate{ProviderID: ev.Message.ProviderID,
		MessageID: ev.Message.OutboundID, Status: ev.Message.Status, ErrorCode: ev.Message.ErrorCode})
	if err != nil {
		return res, nil, err
	}
	res.NoMessage = !found
	if m == nil {
		return res, nil, nil
	}
	res.CustomerID = cust.id
	ch := newChange(res.EventID, ev)
	ch.message(m.ID, m.ConversationID, m.Channel, m.Direction, m.Status)
	if err := commitCustomer(ctx, tx, ws, cust, ch.kind, ch.diff, db.Now(), res.EventID, nil); err != nil {
		return res, nil, err
	}
	return res, []int64{cust.id}, nil
}
