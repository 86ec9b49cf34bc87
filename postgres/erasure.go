package postgres

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"

	"github.com/jackc/pgx/v5"

	"github.com/c360dev/c360"
	"github.com/c360dev/c360/identity"
)

var _ c360.ErasureService = (*DB)(nil)

// errEraseRaced reports that the customer was merged away between the read
// of its survivor and the lock of its row, as errMergeRaced does for a
// merge: the transaction is tried again and reads the survivor anew.
var errEraseRaced = &c360.Error{Code: c360.ECONFLICT, Message: "the customer changed during the erasure; retry"}

// EraseCustomer erases a person: the customer with the id, or the survivor
// it was merged into, and every customer merged into that one (their rows
// are the same person's). In one transaction, which locks the survivor's
// row first, as a merge does, it deletes their identities, conversations
// and messages, consents, observations, change feeds, the ledger's merges
// and splits and the separations that name them, and their rows; it scrubs
// their events down to the exactly-once key, so that a provider's
// redelivery of one is a duplicate and creates nobody; it removes identity
// values and free text from the audit entries about them, and deletes the
// dead letters that name one of their identifiers. Each customer's feed
// keeps one change, of kind erased, with an empty diff: subscribers on
// every replica, of the survivor or of an id merged into it, learn of the
// erasure through it. See docs/erasure.md.
//
// An ingest that waits for the survivor's lock meanwhile finds it gone once
// the erasure commits, reads the owners of its identities again and finds
// none: a new event of the person makes a new customer.
func (db *DB) EraseCustomer(ctx context.Context, ws, customerID int64, actor, reason string) (*c360.CustomerErasure, error) {
	var out *c360.CustomerErasure
	err := db.inTx(ctx, ws, func(tx pgx.Tx) error {
		ids, err := survivorsOf(ctx, tx, ws, customerID)
		if err != nil {
			return err
		}
		s := ids[0]
		if db.beforeCustomerLock != nil {
			db.beforeCustomerLock()
		}
		locked, stale, err := lockCustomers(ctx, tx, ws, []int64{s})
		if err != nil {
			return err
		}
		if stale {
			return errEraseRaced
		}
		// The customers merged into s, along merged_into (merges keep
		// each one hop from its survivor; the walk does not rely on it),
		// with their versions: each one's feed ends with an erased change
		// too. Their rows are locked: a merge that would repoint them waits.
		rows, err := tx.Query(ctx, `
			WITH RECURSIVE m(id) AS (
				SELECT id FROM customers WHERE workspace_id = $1 AND merged_into = $2
				UNION
				SELECT c.id FROM customers c JOIN m ON c.workspace_id = $1 AND c.merged_into = m.id
			)
			SELECT c.id, c.version FROM customers c JOIN m ON c.workspace_id = $1 AND c.id = m.id
			ORDER BY c.id FOR UPDATE OF c`, ws, s)
		if err != nil {
			return interpretError(fmt.Errorf("find merged customers: %w", err))
		}
		all, versions := []int64{s}, []int64{locked[s].version}
		var id, version int64
		if _, err := pgx.ForEachRow(rows, []any{&id, &version}, func() error {
			all, versions = append(all, id), append(versions, version)
			return nil
		}); err != nil {
			return interpretError(fmt.Errorf("find merged customers: %w", err))
		}
		e := &c360.CustomerErasure{CustomerID: s, MergedCustomerIDs: slices.Clone(all[1:]), ErasedAt: db.Now()}
		erased, events, err := eraseRows(ctx, tx, ws, all, versions, e)
		if err != nil {
			return err
		}
		if e.DeadLetters, err = db.eraseDeadLetters(ctx, tx, ws, erased, events); err != nil {
			return err
		}
		out = e
		return nil
	})
	if err != nil {
		return nil, err
	}
	// The erased changes wake the subscribers of every erased id here and,
	// through the notifier, on every other replica: a stream of a merged
	// id that had not yet read its merged_into change (deleted with the
	// rest of its feed) ends on its own erased change.
	db.committed(ws, append([]int64{out.CustomerID}, out.MergedCustomerIDs...))
	return out, nil
}

// scrubEventSQL is the SET list that clears an event down to its
// exactly-once key (workspace, source, dedupe_key), its type and times.
// Every other column of events (migrations 00001, 00003, 00009) may name or
// describe the person. The NOT NULL ones take their defaults: properties
// '{}' and identities '[]', the value of an event with no identity, which
// the repeat check of ingest reads as nothing to compare (checkRepeat).
const scrubEventSQL = `customer_id = NULL, name = NULL, properties = '{}', traits = NULL, context = NULL,
	identities = '[]', dropped = NULL, traits_if_absent = NULL`

// eraseRows deletes and scrubs the rows of the customers ids (ids[0] the
// survivor; versions[i] the version of ids[i]) in one round trip, counting
// them in e, and returns
// the identities deleted and the events scrubbed, by id. The statements run
// in order: those that find rows through the customers' identities before
// the identities go, and rows before the rows their foreign keys name.
func eraseRows(ctx context.Context, tx pgx.Tx, ws int64, ids, versions []int64, e *c360.CustomerErasure) (map[identity.Identity]bool, map[int64]dedupeKey, error) {
	strIDs := make([]string, len(ids))
	for i, id := range ids {
		strIDs[i] = strconv.FormatInt(id, 10)
	}
	// The customers' identities, each as the one-element list an event's
	// identities contain it as.
	const asLists = `ARRAY(SELECT jsonb_build_array(jsonb_build_object('type', i.type, 'value', i.value))
		FROM identities i WHERE i.workspace_id = $1 AND i.customer_id = ANY($2))`
	b := &pgx.Batch{}
	// Events stored with no customer that name one of the identities: a
	// status callback of a message not yet recorded carries the person's
	// number. Found by the index on (workspace, customer), NULLs included.
	b.Queue(`UPDATE events SET `+scrubEventSQL+`
		WHERE workspace_id = $1 AND customer_id IS NULL AND identities <> '[]' AND identities @> ANY(`+asLists+`)
		RETURNING id, source, dedupe_key`, ws, ids)
	// Ledger entries of other customers that name one of the identities:
	// a merge of two customers the identity linked, both since merged or
	// split elsewhere. The reason of an automatic merge quotes it.
	b.Queue(`UPDATE merges SET identity_type = NULL, identity_value = NULL, reason = ''
		WHERE workspace_id = $1 AND (identity_type, identity_value) IN (
			SELECT i.type, i.value FROM identities i WHERE i.workspace_id = $1 AND i.customer_id = ANY($2))`, ws, ids)
	b.Queue(`DELETE FROM identities WHERE workspace_id = $1 AND customer_id = ANY($2) RETURNING type, value`, ws, ids)
	b.Queue(`UPDATE events SET `+scrubEventSQL+`
		WHERE workspace_id = $1 AND customer_id = ANY($2)
		RETURNING id, source, dedupe_key`, ws, ids)
	// Messages through their conversations: a message always belongs to
	// its conversation's customer (mergeSQL), and messages are indexed by
	// conversation.
	b.Queue(`DELETE FROM messages WHERE workspace_id = $1 AND conversation_id IN (
		SELECT v.id FROM conversations v WHERE v.workspace_id = $1 AND v.customer_id = ANY($2))`, ws, ids)
	b.Queue(`DELETE FROM conversations WHERE workspace_id = $1 AND customer_id = ANY($2)`, ws, ids)
	b.Queue(`DELETE FROM consents WHERE workspace_id = $1 AND customer_id = ANY($2)`, ws, ids)
	b.Queue(`DELETE FROM observations WHERE workspace_id = $1 AND customer_id = ANY($2)`, ws, ids)
	b.Queue(`DELETE FROM customer_changes WHERE workspace_id = $1 AND customer_id = ANY($2)`, ws, ids)
	b.Queue(`DELETE FROM merges WHERE workspace_id = $1 AND (survivor_id = ANY($2) OR merged_id = ANY($2))`, ws, ids)
	b.Queue(`DELETE FROM customer_separations WHERE workspace_id = $1 AND (customer_a = ANY($2) OR customer_b = ANY($2))`, ws, ids)
	// Audit entries keep naming the customers (who read what, when) but
	// lose what may be personal: a split's identity and the free-text
	// reasons of merges and splits. A split's entry is the original
	// customer's, and names the new one (splitId).
	b.Queue(`UPDATE audit_log SET detail = detail - 'identity' - 'reason'
		WHERE workspace_id = $1 AND (detail ? 'identity' OR detail ? 'reason')
		  AND (customer_id = ANY($2) OR action = 'customer.split' AND detail->>'splitId' = ANY($3::text[]))`, ws, ids, strIDs)
	b.Queue(`DELETE FROM customers WHERE workspace_id = $1 AND id = ANY($2)`, ws, ids)
	// One erased change per customer, at its next version: the feeds'
	// only rows left.
	b.Queue(`INSERT INTO customer_changes (workspace_id, customer_id, version, kind, diff, created_at)
		SELECT $1, c.id, c.version + 1, $4, '{}', $5 FROM unnest($2::bigint[], $3::bigint[]) AS c(id, version)`,
		ws, ids, versions, c360.ChangeErased, e.ErasedAt)
	br := tx.SendBatch(ctx, b)
	defer br.Close()

	events := map[int64]dedupeKey{}
	scanEvents := func(what string) (int, error) {
		rows, _ := br.Query() // its error is the rows'
		var id int64
		var k dedupeKey
		n, err := pgx.ForEachRow(rows, []any{&id, &k.source, &k.dedupe}, func() error {
			events[id] = k
			return nil
		})
		if err != nil {
			return 0, interpretError(fmt.Errorf("scrub %s: %w", what, err))
		}
		return int(n.RowsAffected()), nil
	}
	exec := func(what string) (int, error) {
		tag, err := br.Exec()
		if err != nil {
			return 0, interpretError(fmt.Errorf("erase %s: %w", what, err))
		}
		return int(tag.RowsAffected()), nil
	}
	unlinked, err := scanEvents("events without a customer")
	if err != nil {
		return nil, nil, err
	}
	if _, err := exec("ledger identities"); err != nil {
		return nil, nil, err
	}
	erased := map[identity.Identity]bool{}
	var id identity.Identity
	rows, _ := br.Query()
	if _, err := pgx.ForEachRow(rows, []any{&id.Type, &id.Value}, func() error {
		erased[id] = true
		return nil
	}); err != nil {
		return nil, nil, interpretError(fmt.Errorf("erase identities: %w", err))
	}
	e.Identities = len(erased)
	linked, err := scanEvents("events")
	if err != nil {
		return nil, nil, err
	}
	e.EventsScrubbed = unlinked + linked
	for _, c := range []struct {
		n    *int
		what string
	}{
		{&e.Messages, "messages"}, {&e.Conversations, "conversations"}, {&e.Consents, "consents"},
		{&e.Observations, "observations"}, {&e.Changes, "changes"}, {&e.MergeRecords, "merge records"},
		{&e.Separations, "separations"}, {&e.AuditEntriesScrubbed, "audit entries"},
	} {
		if *c.n, err = exec(c.what); err != nil {
			return nil, nil, err
		}
	}
	if n, err := exec("customers"); err != nil {
		return nil, nil, err
	} else if n != len(ids) {
		// The rows were locked: nothing else can have removed one.
		return nil, nil, fmt.Errorf("erase customers: deleted %d of %d", n, len(ids))
	}
	if _, err := exec("change feed"); err != nil {
		return nil, nil, err
	}
	return erased, events, nil
}

// eraseDeadLetters deletes the workspace's dead letters that are the
// person's: those keyed as one of the scrubbed events or replayed into
// one, and those whose event names one of the erased identities. A dead
// letter keeps its event as received, so its identifiers (and an
// identify's email and phone traits) are normalized as ingest would before
// they are compared. Dead letters are few (events that failed on their
// own), and they are read whole, in Go, where normalization lives. Text
// elsewhere in a dead letter (a message body) is not searched: a dead
// letter that names none of the person's identifiers is kept.
func (db *DB) eraseDeadLetters(ctx context.Context, tx pgx.Tx, ws int64, erased map[identity.Identity]bool, events map[int64]dedupeKey) (int, error) {
	keys := make(map[dedupeKey]bool, len(events))
	for _, k := range events {
		keys[k] = true
	}
	rows, err := tx.Query(ctx, `
		SELECT id, source, dedupe_key, coalesce(replayed_event_id, 0), event FROM dead_letters WHERE workspace_id = $1`, ws)
	if err != nil {
		return 0, interpretError(fmt.Errorf("read dead letters: %w", err))
	}
	var doomed []int64
	var (
		id, replayed int64
		k            dedupeKey
		raw          []byte
	)
	_, err = pgx.ForEachRow(rows, []any{&id, &k.source, &k.dedupe, &replayed, &raw}, func() error {
		_, isEvent := events[replayed]
		if keys[k] || isEvent || db.namesAny(raw, erased) {
			doomed = append(doomed, id)
		}
		return nil
	})
	if err != nil {
		return 0, interpretError(fmt.Errorf("read dead letters: %w", err))
	}
	if len(doomed) == 0 {
		return 0, nil
	}
	tag, err := tx.Exec(ctx, `DELETE FROM dead_letters WHERE workspace_id = $1 AND id = ANY($2)`, ws, doomed)
	if err != nil {
		return 0, interpretError(fmt.Errorf("erase dead letters: %w", err))
	}
	return int(tag.RowsAffected()), nil
}

// namesAny reports whether a dead letter's event (as storedEvent encodes
// it) names one of the identities: among its identities, its previousId,
// or its email and phone traits, each normalized. An event that does not
// decode is compared by nothing and kept.
func (db *DB) namesAny(raw []byte, erased map[identity.Identity]bool) bool {
	if len(erased) == 0 {
		return false
	}
	var ev struct {
		Identities []c360.Identity `json:"identities"`
		PreviousID *c360.Identity  `json:"previousId"`
		Traits     map[string]any  `json:"traits"`
	}
	if err := json.Unmarshal(raw, &ev); err != nil {
		return false
	}
	ids := ev.Identities
	if ev.PreviousID != nil {
		ids = append(ids, *ev.PreviousID)
	}
	for _, t := range []string{identity.TypeEmail, identity.TypePhone} {
		if s, ok := ev.Traits[t].(string); ok && s != "" {
			ids = append(ids, c360.Identity{Type: t, Value: s})
		}
	}
	for _, id := range ids {
		if n, err := db.Normalizer.Normalize(identity.Identity(id)); err == nil && erased[n] {
			return true
		}
	}
	return false
}
