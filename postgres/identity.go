package postgres

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/c360dev/c360"
	"github.com/c360dev/c360/identity"
)

var _ c360.IdentityService = (*DB)(nil)

// separationsSQL returns the separations one of whose sides' survivors is
// in $2, as pairs of survivors. A side whose survivor is a candidate is
// the candidate itself or a customer merged into it (one hop: merges
// repoint), so m finds those sides by id and by the index of merged
// customers (migration 00012), and the separations are read by either
// side's index. Filtered by survivor after joining, it read every
// separation of the workspace and the customers of both sides: 11 to 13 ms
// at 20k customers and 850 separations, against 0.6 to 1.7
// (TestMergeAndSplitReadOnlyTheirCustomers). The last condition keeps the
// answer what it was: a candidate merged away itself is not its own
// survivor.
const separationsSQL = `
	WITH m AS (
		SELECT c.id FROM customers c
		WHERE c.workspace_id = $1 AND (c.id = ANY($2) OR c.merged_into = ANY($2))
	), s AS (
		SELECT s.customer_a, s.customer_b FROM m JOIN customer_separations s ON s.workspace_id = $1 AND s.customer_a = m.id
		UNION
		SELECT s.customer_a, s.customer_b FROM m JOIN customer_separations s ON s.workspace_id = $1 AND s.customer_b = m.id
	)
	SELECT coalesce(ca.merged_into, ca.id), coalesce(cb.merged_into, cb.id)
	FROM s
	JOIN customers ca ON ca.workspace_id = $1 AND ca.id = s.customer_a
	JOIN customers cb ON cb.workspace_id = $1 AND cb.id = s.customer_b
	WHERE coalesce(ca.merged_into, ca.id) = ANY($2) OR coalesce(cb.merged_into, cb.id) = ANY($2)`

// separations returns which of the candidate customers were split apart.
// Each recorded side is followed to its survivor, so a separation outlives
// later merges of either side.
func separations(ctx context.Context, tx pgx.Tx, ws int64, candidates []int64) (func(a, b int64) bool, error) {
	rows, err := tx.Query(ctx, separationsSQL, ws, candidates)
	if err != nil {
		return nil, interpretError(fmt.Errorf("load separations: %w", err))
	}
	return scanSeparations(rows)
}

// scanSeparations reads separationsSQL's rows, of either ingest path (the
// group path queues the statement in a batch), as separations returns them.
func scanSeparations(rows pgx.Rows) (func(a, b int64) bool, error) {
	defer rows.Close()
	pairs := map[[2]int64]bool{}
	for rows.Next() {
		var a, b int64
		if err := rows.Scan(&a, &b); err != nil {
			return nil, fmt.Errorf("scan separation: %w", err)
		}
		pairs[[2]int64{min(a, b), max(a, b)}] = true
	}
	if err := rows.Err(); err != nil {
		return nil, interpretError(fmt.Errorf("load separations: %w", err))
	}
	if len(pairs) == 0 {
		return nil, nil
	}
	return func(a, b int64) bool { return pairs[[2]int64{min(a, b), max(a, b)}] }, nil
}

// IdentityRules returns the workspace's identity resolution rules.
func (db *DB) IdentityRules(ctx context.Context, ws int64) (*c360.IdentityRules, error) {
	r, err := db.loadRules(ctx, ws)
	if err != nil {
		return nil, err
	}
	return toDomainRules(r), nil
}

func toDomainRules(r identity.Rules) *c360.IdentityRules {
	out := &c360.IdentityRules{Limits: map[string]int{}, DefaultLimit: r.DefaultLimit,
		Priority: slices.Clone(r.Priority), Blocked: slices.Clone(r.Blocked)}
	for t, n := range r.Limits {
		out.Limits[t] = n
	}
	if out.Priority == nil {
		out.Priority = []string{}
	}
	if out.Blocked == nil {
		out.Blocked = []string{}
	}
	return out
}

// UpdateIdentityRules validates and stores new rules. This replica uses
// them at once; other replicas pick them up within the rules cache's TTL.
func (db *DB) UpdateIdentityRules(ctx context.Context, ws int64, in c360.IdentityRules) (*c360.IdentityRules, error) {
	r := identity.Rules{Limits: in.Limits, DefaultLimit: in.DefaultLimit, Priority: in.Priority, Blocked: in.Blocked}
	if err := r.Validate(); err != nil {
		return nil, c360.Errorf(c360.EINVALID, "invalid identity rules: %s", err)
	}
	raw, err := json.Marshal(r)
	if err != nil {
		return nil, fmt.Errorf("encode rules: %w", err)
	}
	tag, err := db.app.Exec(ctx, `UPDATE workspaces SET identity_rules = $2 WHERE id = $1`, ws, raw)
	if err != nil {
		return nil, interpretError(fmt.Errorf("store identity rules: %w", err))
	}
	if tag.RowsAffected() == 0 {
		return nil, c360.Errorf(c360.ENOTFOUND, "workspace not found")
	}
	// Counted before the cached rules are forgotten: a read that began
	// before the update committed then caches nothing (identityRules).
	db.rules.updates.Add(1)
	db.rules.m.Delete(ws)
	return toDomainRules(r), nil
}

// MergeCustomers merges mergedID into survivorID on an operator's request.
// The identity limits and earlier splits hold unless force is set. A
// reason c360.CheckMergeReason refuses is refused before anything is read
// or written; a blank one is replaced by a default.
func (db *DB) MergeCustomers(ctx context.Context, ws, survivorID, mergedID int64, force bool, actor, reason string) (*c360.Customer, error) {
	if err := c360.CheckMergeReason(reason); err != nil {
		return nil, err
	}
	rules, err := db.identityRules(ctx, ws)
	if err != nil {
		return nil, err
	}
	var s, m *customerRow
	err = db.inTx(ctx, ws, func(tx pgx.Tx) error {
		ids, err := survivorsOf(ctx, tx, ws, survivorID, mergedID)
		if err != nil {
			return err
		}
		sid, mid := ids[0], ids[1]
		if sid == mid {
			return c360.Errorf(c360.ECONFLICT, "customers %d and %d are already one customer (%d)", survivorID, mergedID, sid)
		}
		pair := []int64{min(sid, mid), max(sid, mid)}
		if db.beforeCustomerLock != nil {
			db.beforeCustomerLock()
		}
		locked, stale, err := lockCustomers(ctx, tx, ws, pair)
		if err != nil {
			return err
		}
		if stale {
			return errMergeRaced
		}
		s, m = locked[sid], locked[mid]
		if !force {
			if err := checkMergeAllowed(ctx, tx, ws, rules, pair); err != nil {
				return err
			}
		}
		if strings.TrimSpace(reason) == "" {
			reason = "merged by an operator"
		}
		// One time for the ledger, the merged-away change and the
		// survivor's change: they are one event.
		now := db.Now()
		if err := mergeLedger(ctx, tx, ws, s, m, identity.Identity{}, 0, actor, reason, now); err != nil {
			return err
		}
		ch := &change{diff: map[string]any{"actor": actor, "reason": reason, "forced": force}}
		ch.identitiesAdded(s.identAdds)
		ch.mergedConsents(s.consentChanges)
		ch.traits(s.traitChanges)
		ch.merged(s.merged)
		return commitCustomer(ctx, tx, ws, s, ch.kind, ch.diff, now, 0, nil)
	})
	if err != nil {
		return nil, err
	}
	db.committed(ws, []int64{s.id, m.id})
	return db.FindCustomerByID(ctx, ws, s.id)
}

// errMergeRaced and errSplitRaced report that a customer was merged away
// between the read of its survivor and the lock of its row: an ingest
// merged it meanwhile. The transaction is tried again (retryable), and
// reads the survivors anew, as resolve does within its own; only a
// customer that keeps changing through every attempt reaches the caller,
// as a CONFLICT to retry.
var (
	errMergeRaced = &c360.Error{Code: c360.ECONFLICT, Message: "a customer changed during the merge; retry"}
	errSplitRaced = &c360.Error{Code: c360.ECONFLICT, Message: "the customer changed during the split; retry"}
)

// survivorsOf maps customer ids to their survivors; unknown ids are NOT_FOUND.
func survivorsOf(ctx context.Context, tx pgx.Tx, ws int64, ids ...int64) ([]int64, error) {
	out := make([]int64, len(ids))
	for i, id := range ids {
		err := tx.QueryRow(ctx, `SELECT coalesce(merged_into, id) FROM customers WHERE workspace_id = $1 AND id = $2`, ws, id).Scan(&out[i])
		if err == pgx.ErrNoRows {
			return nil, c360.Errorf(c360.ENOTFOUND, "customer %d not found", id)
		} else if err != nil {
			return nil, interpretError(fmt.Errorf("find customer: %w", err))
		}
	}
	return out, nil
}

// checkMergeAllowed refuses a merge that would break an identity limit or
// undo an operator's split.
func checkMergeAllowed(ctx context.Context, tx pgx.Tx, ws int64, rules identity.Rules, pair []int64) error {
	apart, err := separations(ctx, tx, ws, pair)
	if err != nil {
		return err
	}
	if apart != nil && apart(pair[0], pair[1]) {
		return c360.Errorf(c360.ECONFLICT, "customers %d and %d were split apart; an admin can force the merge", pair[0], pair[1])
	}
	existing, err := identitiesOf(ctx, tx, ws, pair)
	if err != nil {
		return err
	}
	values := map[string]map[string]bool{}
	held := map[string]int{} // the most of a type either customer holds
	for _, c := range pair {
		own := map[string]int{}
		for _, id := range existing[c] {
			if values[id.Type] == nil {
				values[id.Type] = map[string]bool{}
			}
			values[id.Type][id.Value] = true
			own[id.Type]++
		}
		for t, n := range own {
			held[t] = max(held[t], n)
		}
	}
	// A customer may already hold more than a limit allows (a forced merge,
	// or a limit lowered since): the merge may keep that count, as ingest's
	// planner lets it (identity.Rules.PlanApart), but not grow past it.
	for _, t := range slices.Sorted(mapsKeys(values)) {
		n, limit := len(values[t]), rules.Limit(t)
		if n <= max(limit, held[t]) {
			continue
		}
		if held[t] > limit {
			return c360.Errorf(c360.ECONFLICT, "merging would give one customer %d %s identities; the limit is %d and one customer already holds %d (an admin can force the merge)",
				n, t, limit, held[t])
		}
		return c360.Errorf(c360.ECONFLICT, "merging would give one customer %d %s identities; the limit is %d (an admin can force the merge)", n, t, limit)
	}
	return nil
}

func mapsKeys[V any](m map[string]V) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

// maxMovedConversationIDs bounds the conversation ids a split change lists
// (movedConversationIds): the change is stored in the feed and sent to
// every subscriber of the customer and of its workspace, so a customer of
// many threads must not make it unbounded.
const maxMovedConversationIDs = 100

// SplitIdentity moves an identity out of a customer into a new customer,
// with what arrived through it:
//   - the events that carried the identity and none of the identities the
//     original customer keeps (a linking event stays: it arrived through
//     both), identifiers an event dropped not counted (splitMoveSQL);
//   - the messages of those events, and each conversation all of whose
//     messages moved;
//
// Both customers' traits and consents are rebuilt from their own events,
// newest observation winning (rebuildConsents): an opt-out the identity
// sent before a wrong merge is its own again, even where the merge let a
// newer opt-in of the other person's win. The pair is recorded as separated, so ingest never
// merges them again automatically, and the ledger records the split. A
// reason c360.CheckMergeReason refuses is refused before anything is read
// or written; a blank one is replaced by a default.
func (db *DB) SplitIdentity(ctx context.Context, ws, customerID int64, raw c360.Identity, actor, reason string) (*c360.SplitResult, error) {
	if err := c360.CheckMergeReason(reason); err != nil {
		return nil, err
	}
	id, err := db.normalizeLookup(raw)
	if err != nil {
		return nil, err
	}
	var (
		orig, split int64
		res         c360.SplitResult
	)
	err = db.inTx(ctx, ws, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, identity.Key(ws, id)); err != nil {
			return interpretError(fmt.Errorf("lock identity: %w", err))
		}
		ids, err := survivorsOf(ctx, tx, ws, customerID)
		if err != nil {
			return err
		}
		orig = ids[0]
		if db.beforeCustomerLock != nil {
			db.beforeCustomerLock()
		}
		locked, stale, err := lockCustomers(ctx, tx, ws, []int64{orig})
		if err != nil {
			return err
		}
		if stale {
			return errSplitRaced
		}
		c := locked[orig]
		existing, err := identitiesOf(ctx, tx, ws, []int64{orig})
		if err != nil {
			return err
		}
		if !slices.Contains(existing[orig], id) {
			return c360.Errorf(c360.ENOTFOUND, "customer %d has no %s %q", customerID, id.Type, id.Value)
		}
		if len(existing[orig]) == 1 {
			return c360.Errorf(c360.EINVALID, "%s %q is the customer's only identity; there is nothing to split it from", id.Type, id.Value)
		}
		now := db.Now()
		if err := tx.QueryRow(ctx, `INSERT INTO customers (workspace_id, created_at, updated_at) VALUES ($1, $2, $2) RETURNING id`,
			ws, now).Scan(&split); err != nil {
			return interpretError(fmt.Errorf("insert customer: %w", err))
		}
		idJSON, _ := json.Marshal([]identity.Identity{id})
		var keptTypes, keptValues, keptDropped []string
		for _, k := range existing[orig] {
			if k != id {
				keptTypes, keptValues, keptDropped = append(keptTypes, k.Type), append(keptValues, k.Value), append(keptDropped, droppedPrefix(k))
			}
		}
		err = tx.QueryRow(ctx, splitMoveSQL,
			ws, orig, split, idJSON, id.Type, id.Value, droppedPrefix(id), keptTypes, keptValues, keptDropped).Scan(&res.MovedEvents, new([]int64))
		if err != nil {
			return interpretError(fmt.Errorf("move events: %w", err))
		}
		// A conversation moves when none of its messages stayed behind.
		rows, err := tx.Query(ctx, `
			UPDATE conversations c SET customer_id = $3
			WHERE c.workspace_id = $1 AND c.customer_id = $2
			  AND EXISTS (SELECT 1 FROM messages m WHERE m.workspace_id = $1 AND m.conversation_id = c.id AND m.customer_id = $3)
			  AND NOT EXISTS (SELECT 1 FROM messages m WHERE m.workspace_id = $1 AND m.conversation_id = c.id AND m.customer_id = $2)
			RETURNING c.id`,
			ws, orig, split)
		if err != nil {
			return interpretError(fmt.Errorf("move conversations: %w", err))
		}
		moved, err := pgx.CollectRows(rows, pgx.RowTo[int64])
		if err != nil {
			return interpretError(fmt.Errorf("move conversations: %w", err))
		}
		slices.Sort(moved)
		movedIDs := make([]string, min(len(moved), maxMovedConversationIDs))
		for i := range movedIDs {
			movedIDs[i] = fmt.Sprint(moved[i])
		}
		res.MovedConversations = len(moved)
		// A conversation that stayed (it has messages from both sides)
		// keeps all of its messages.
		if _, err := tx.Exec(ctx, `
			UPDATE messages m SET customer_id = $2 FROM conversations c
			WHERE m.workspace_id = $1 AND m.customer_id = $3
			  AND c.workspace_id = $1 AND c.id = m.conversation_id AND c.customer_id = $2`,
			ws, orig, split); err != nil {
			return interpretError(fmt.Errorf("keep messages with their conversation: %w", err))
		}
		if _, err := tx.Exec(ctx, reopenSQL, ws, orig, split); err != nil {
			return interpretError(fmt.Errorf("reopen conversations: %w", err))
		}
		consents, err := rebuildConsents(ctx, tx, ws, orig, split)
		if err != nil {
			return err
		}
		if strings.TrimSpace(reason) == "" {
			reason = "split by an operator"
		}
		if _, err := tx.Exec(ctx, `
			WITH l AS (
				INSERT INTO merges (workspace_id, kind, survivor_id, merged_id, identity_type, identity_value, reason, actor, created_at)
				VALUES ($1, 'split', $2, $3, $4, $5, $6, $7, $8)
			)
			INSERT INTO customer_separations (workspace_id, customer_a, customer_b, created_at)
			VALUES ($1, least($2::bigint, $3::bigint), greatest($2::bigint, $3::bigint), $8)
			ON CONFLICT DO NOTHING`, ws, orig, split, id.Type, id.Value, reason, actor, now); err != nil {
			return interpretError(fmt.Errorf("record split: %w", err))
		}
		// Rebuild both profiles' traits from their own events.
		nc := &customerRow{id: split, created: true}
		before := c.traits
		for _, cr := range []*customerRow{c, nc} {
			if err := rebuildTraits(ctx, tx, ws, cr); err != nil {
				return err
			}
		}
		// Each side's change names what the split changed of its consents
		// and traits, so that filters by those kinds deliver it; the new
		// customer's also names its identity.
		chOrig := &change{diff: map[string]any{"identity": id, "splitInto": fmt.Sprint(split), "actor": actor,
			"reason": reason, "movedEvents": res.MovedEvents, "movedConversations": res.MovedConversations,
			// Which ones: conversationMessages(conversationId) goes on
			// with splitInto's feed exactly when its conversation is here.
			// The lowest maxMovedConversationIDs ids, in order; past them
			// the list is marked truncated, and a stream of a conversation
			// above the last one listed looks its owner up.
			"movedConversationIds": movedIDs}}
		if len(moved) > len(movedIDs) {
			chOrig.diff["movedConversationIdsTruncated"] = true
		}
		chOrig.mergedConsents(consents[orig])
		chOrig.traits(traitChanges(before, c.traits))
		chOrig.raise(c360.ChangeSplit)
		if err := commitCustomer(ctx, tx, ws, c, chOrig.kind, chOrig.diff, now, 0, nil); err != nil {
			return err
		}
		chNew := &change{diff: map[string]any{"splitFrom": fmt.Sprint(orig), "identity": id}}
		chNew.identitiesAdded([]identity.Identity{id})
		chNew.mergedConsents(consents[split])
		chNew.traits(traitChanges(nil, nc.traits))
		chNew.created()
		return commitCustomer(ctx, tx, ws, nc, chNew.kind, chNew.diff, now, 0, nil)
	})
	if err != nil {
		return nil, err
	}
	db.committed(ws, []int64{orig, split})
	if res.Original, err = db.FindCustomerByID(ctx, ws, orig); err != nil {
		return nil, err
	}
	if res.Split, err = db.FindCustomerByID(ctx, ws, split); err != nil {
		return nil, err
	}
	return &res, nil
}

// splitMoveSQL moves identity ($5, $6) of customer $2 to the new customer
// $3, with the events that arrived through it alone and their messages
// ($4 is the identity as JSON), and returns how many events moved and the
// conversations of the moved messages. The messages are read through the
// conversations of $2: a message always belongs to its conversation's
// customer (mergeSQL), and messages are indexed by conversation; read by
// event they were every message of the workspace (10 ms at 20k customers,
// against 2.1; TestMergeAndSplitReadOnlyTheirCustomers).
//
// An event arrived through the identifiers it did not drop: its
// identities list every identifier it carried, and its dropped reasons
// (events.dropped, each starting as droppedPrefix does) name those
// resolution kept off its customer. So an event moves when it carried the
// identity, did not drop it ($7 its prefix), and carried none of the
// identities the original keeps ($8 types, $9 values, $10 prefixes) but
// those it dropped: the identify of a second account whose email the
// first owned (dropped for the user_id limit) goes with its user_id
// (TestWorkedExample).
const splitMoveSQL = `
	WITH i AS (
		UPDATE identities SET customer_id = $3 WHERE workspace_id = $1 AND type = $5 AND value = $6
	), moved AS (
		UPDATE events e SET customer_id = $3
		WHERE e.workspace_id = $1 AND e.customer_id = $2 AND e.identities @> $4
		  AND NOT EXISTS (
			SELECT 1 FROM jsonb_array_elements_text(CASE jsonb_typeof(e.dropped) WHEN 'array' THEN e.dropped END) d
			WHERE starts_with(d, $7))
		  AND NOT EXISTS (
			SELECT 1 FROM jsonb_to_recordset(e.identities) AS x(type text, value text)
			JOIN unnest($8::text[], $9::text[], $10::text[]) AS k(type, value, dropped) ON k.type = x.type AND k.value = x.value
			WHERE NOT EXISTS (
				SELECT 1 FROM jsonb_array_elements_text(CASE jsonb_typeof(e.dropped) WHEN 'array' THEN e.dropped END) d
				WHERE starts_with(d, k.dropped)))
		RETURNING e.id
	), msgs AS (
		UPDATE messages m SET customer_id = $3
		WHERE m.workspace_id = $1 AND m.customer_id = $2 AND m.event_id IN (SELECT id FROM moved)
		  AND m.conversation_id IN (SELECT v.id FROM conversations v WHERE v.workspace_id = $1 AND v.customer_id = $2)
		RETURNING m.conversation_id
	)
	SELECT (SELECT count(*) FROM moved), coalesce((SELECT array_agg(DISTINCT conversation_id) FROM msgs), '{}')`

// droppedPrefix is how an event's dropped reason for id starts (prepare,
// resolve: `%s %q: reason`). A quoted value ends at its closing quote, so
// no reason about another identifier starts so.
func droppedPrefix(id identity.Identity) string {
	return fmt.Sprintf("%s %q:", id.Type, id.Value)
}

// reopenSQL reopens, on each side of a split ($2, $3), the conversations a
// merge closed (mergeSQL) where that side has no open conversation on
// the channel and thread: the newest of them there, the one ingest would
// have appended to. A wrong merge closed the merged customer's thread
// beside the survivor's; the split that gives it back leaves each person
// their conversations as they were before the merge.
const reopenSQL = `
	UPDATE conversations c SET status = 'open', closed_by_merge = false
	WHERE c.workspace_id = $1 AND c.customer_id IN ($2, $3) AND c.status = 'closed' AND c.closed_by_merge
	  AND NOT EXISTS (SELECT 1 FROM conversations o
	                  WHERE o.workspace_id = $1 AND o.customer_id = c.customer_id
	                    AND o.channel = c.channel AND o.thread_key = c.thread_key
	                    AND (o.status = 'open' OR o.closed_by_merge AND o.id > c.id))`

// traitChanges returns the traits whose values differ between before and
// after, with their values after; a trait after lacks is null.
func traitChanges(before, after map[string]any) map[string]any {
	out := map[string]any{}
	for k, v := range after {
		if old, had := before[k]; !had || !jsonEqual(old, v) {
			out[k] = v
		}
	}
	for k := range before {
		if _, has := after[k]; !has {
			out[k] = nil
		}
	}
	return out
}

// rebuildTraits recomputes a customer's traits by replaying the traits of its
// events in the order of the times ingest dated them at (traits_at, which
// is occurred_at unless it says otherwise: a client key's traits are dated
// at receipt, c360.Event.TraitsAt), those an event fills only where the
// customer has none (traits_if_absent) as ingest applied them.
func rebuildTraits(ctx context.Context, tx pgx.Tx, ws int64, c *customerRow) error {
	rows, err := tx.Query(ctx, `
		SELECT traits, traits_if_absent, source, coalesce(traits_at, occurred_at) AS at FROM events
		WHERE workspace_id = $1 AND customer_id = $2 AND (traits IS NOT NULL OR traits_if_absent IS NOT NULL)
		ORDER BY at, id`, ws, c.id)
	if err != nil {
		return interpretError(fmt.Errorf("load traits: %w", err))
	}
	defer rows.Close()
	c.traits, c.meta = map[string]any{}, map[string]traitMeta{}
	for rows.Next() {
		var traits, ifAbsent map[string]any
		var source string
		var at time.Time
		if err := rows.Scan(&traits, &ifAbsent, &source, &at); err != nil {
			return fmt.Errorf("scan traits: %w", err)
		}
		applyTraits(c, traits, ifAbsent, source, at)
	}
	return interpretError(rows.Err())
}

// rebuildConsents sets the consents of the customers a and b to the newest
// decision per channel among each one's own events, as ingest would have
// set them had the events only ever been theirs. Consent comes only from
// events, and every decision is in the change row of its event, written
// for the customer that owned the event then: a or b, or a customer in
// their history, which the ledger names (merged into them, or split from).
// A merge's or a split's change lists the consents it changed under
// consents, which are not decisions: the rebuild reads only an event's
// own, under consent. Only an object there is a decision: changes written
// before consents had a key of its own held such a list under consent.
//
// It returns, per customer, the channels whose status the rebuild changed
// (as change.mergedConsents records them), a null status where the
// customer no longer has a decision.
func rebuildConsents(ctx context.Context, tx pgx.Tx, ws, a, b int64) (map[int64][]map[string]any, error) {
	family, seen := []int64{a, b}, map[int64]bool{a: true, b: true}
	for next := family; len(next) > 0; {
		rows, err := tx.Query(ctx, mergesByCustomersSQL, ws, next)
		if err != nil {
			return nil, interpretError(fmt.Errorf("load merges: %w", err))
		}
		next = nil
		for rows.Next() {
			var parent, survivor, merged int64
			var kind string
			if err := rows.Scan(&parent, nil, &kind, &survivor, &merged, nil, nil, nil, nil, nil, nil); err != nil {
				rows.Close()
				return nil, fmt.Errorf("scan merge: %w", err)
			}
			// Merged into the customer, or the customer split from it.
			from := merged
			if kind == "split" {
				from = survivor
			}
			if (kind == "merge" && survivor == parent || kind == "split" && merged == parent) && !seen[from] {
				seen[from] = true
				next = append(next, from)
				family = append(family, from)
			}
		}
		if err := rows.Err(); err != nil {
			return nil, interpretError(fmt.Errorf("load merges: %w", err))
		}
	}
	type decision struct {
		event           int64
		channel, status string
	}
	var decisions []decision
	rows, err := tx.Query(ctx, `
		SELECT (diff->'event'->>'id')::bigint, diff->'consent'->>'channel', diff->'consent'->>'status'
		FROM customer_changes
		WHERE workspace_id = $1 AND customer_id = ANY($2) AND jsonb_typeof(diff->'consent') = 'object'`, ws, family)
	if err != nil {
		return nil, interpretError(fmt.Errorf("load consent decisions: %w", err))
	}
	// A decision whose change names no event cannot be given to either
	// side: it is left out, and logged, rather than failing every split
	// of the customer for good. Every decision is an event's now; a
	// provider's opt-out refusal recorded by an earlier version was not
	// (SettleOutbound).
	var eventless int
	var event *int64
	var d decision
	_, err = pgx.ForEachRow(rows, []any{&event, &d.channel, &d.status}, func() error {
		if event == nil {
			eventless++
			return nil
		}
		d.event = *event
		decisions = append(decisions, d)
		return nil
	})
	if err != nil {
		return nil, interpretError(fmt.Errorf("load consent decisions: %w", err))
	}
	if eventless > 0 {
		slog.Default().Warn("consent decisions without an event are left out of a split's consent rebuild",
			"workspace", ws, "customers", family, "decisions", eventless)
	}
	ids := make([]int64, len(decisions))
	for i, d := range decisions {
		ids[i] = d.event
	}
	type owned struct {
		customer int64
		source   string
		at       time.Time
	}
	events := map[int64]owned{}
	rows, err = tx.Query(ctx, `SELECT id, customer_id, source, occurred_at FROM events
		WHERE workspace_id = $1 AND id = ANY($2) AND customer_id IN ($3, $4)`, ws, ids, a, b)
	if err != nil {
		return nil, interpretError(fmt.Errorf("load consent events: %w", err))
	}
	for rows.Next() {
		var id int64
		var o owned
		if err := rows.Scan(&id, &o.customer, &o.source, &o.at); err != nil {
			rows.Close()
			return nil, fmt.Errorf("scan consent event: %w", err)
		}
		events[id] = o
	}
	if err := rows.Err(); err != nil {
		return nil, interpretError(fmt.Errorf("load consent events: %w", err))
	}
	// The newest decision per customer and channel; of two at one instant,
	// the later event's, as ingest's upsert lets the later one win.
	type key struct {
		customer int64
		channel  string
	}
	newest := map[key]decision{}
	for _, d := range decisions {
		o, ok := events[d.event]
		if !ok {
			continue // an event now another customer's
		}
		k := key{o.customer, d.channel}
		if cur, has := newest[k]; has {
			c := events[cur.event]
			if o.at.Before(c.at) || o.at.Equal(c.at) && d.event < cur.event {
				continue
			}
		}
		newest[k] = d
	}
	b2 := &pgx.Batch{}
	b2.Queue(`DELETE FROM consents WHERE workspace_id = $1 AND customer_id IN ($2, $3) RETURNING customer_id, channel, status`, ws, a, b)
	for k, d := range newest {
		o := events[d.event]
		b2.Queue(`INSERT INTO consents (workspace_id, customer_id, channel, status, source, updated_at)
			VALUES ($1, $2, $3, $4, $5, $6)`, ws, k.customer, k.channel, d.status, o.source, o.at)
	}
	br := tx.SendBatch(ctx, b2)
	old := map[key]string{}
	var k key
	var status string
	rows, err = br.Query()
	if err == nil {
		_, err = pgx.ForEachRow(rows, []any{&k.customer, &k.channel, &status}, func() error {
			old[k] = status
			return nil
		})
	}
	if err != nil {
		br.Close()
		return nil, interpretError(fmt.Errorf("rebuild consents: %w", err))
	}
	if err := br.Close(); err != nil {
		return nil, interpretError(fmt.Errorf("rebuild consents: %w", err))
	}
	changes := map[int64][]map[string]any{}
	for k, d := range newest {
		if s, had := old[k]; !had || s != d.status {
			changes[k.customer] = append(changes[k.customer], map[string]any{"channel": k.channel, "status": d.status})
		}
	}
	for k := range old {
		if _, has := newest[k]; !has {
			changes[k.customer] = append(changes[k.customer], map[string]any{"channel": k.channel, "status": nil})
		}
	}
	for _, cs := range changes {
		slices.SortFunc(cs, func(x, y map[string]any) int { return strings.Compare(x["channel"].(string), y["channel"].(string)) })
	}
	return changes, nil
}

// mergesByCustomersSQL reads the ledger entries of each customer in $2 by
// its own two index searches (survivor, merged), ORed. Joined to the
// unnested ids instead, the generic plan (which guesses the array holds 10
// ids) read every entry of the workspace once and compared each with every
// id, a join filter of n × M pairs: 85 ms for 500 ids in a workspace of
// 2,000 merges, against 1.3 ms. OFFSET 0 keeps the subquery from being
// pulled up into that join (TestArrayReadsScaleWithTheirArrays).
//
// A customer's entries are those mergesOfSQL reads.
var mergesByCustomersSQL = `
	SELECT p.id, m.id, m.kind, m.survivor_id, m.merged_id, m.identity_type, m.identity_value, m.event_id, m.reason, m.actor, m.created_at
	FROM unnest($2::bigint[]) AS p(id)
	CROSS JOIN LATERAL (` + mergesOfSQL("$1", "p.id") + `
		OFFSET 0) m
	ORDER BY p.id, m.created_at, m.id`

// mergesOfSQL reads the ledger entries of one customer, whose id is the
// SQL expression id (in workspace ws, another expression), as a UNION of
// whole merges rows, for the caller to order and bound. Customer.merges
// (mergesByCustomersSQL) and the assistant's context (contextSQL) both
// read it, so that they name the same entries.
//
// A customer's entries include those of the customers merged into it (one
// hop always reaches the survivor, mergeSQL): after A merged into B and B
// into C, C's ledger names B into C and A into B, which tell why A's
// identities are on C. So do the splits that made a customer merged into
// it: after N was split from X and merged into Y, an event linking X and
// Y is refused for that split, and Y's ledger must say so. By each merged
// customer's own searches of the survivor and merged indexes: the partial
// index of merged customers lists them. Its aliases (g, x) are none that a
// caller's id expression names.
func mergesOfSQL(ws, id string) string {
	return `
		SELECT g.* FROM merges g
		WHERE g.workspace_id = ` + ws + ` AND (g.survivor_id = ` + id + ` OR g.merged_id = ` + id + `)
		UNION
		SELECT g.* FROM customers x
		JOIN merges g ON g.workspace_id = ` + ws + ` AND g.survivor_id = x.id
		WHERE x.workspace_id = ` + ws + ` AND x.merged_into = ` + id + `
		UNION
		SELECT g.* FROM customers x
		JOIN merges g ON g.workspace_id = ` + ws + ` AND g.merged_id = x.id AND g.kind = 'split'
		WHERE x.workspace_id = ` + ws + ` AND x.merged_into = ` + id
}

// MergesByCustomers returns the ledger entries that involve each customer,
// oldest first.
func (db *DB) MergesByCustomers(ctx context.Context, ws int64, ids []int64) (map[int64][]*c360.MergeRecord, error) {
	rows, err := db.as(ws).Query(ctx, mergesByCustomersSQL, ws, ids)
	if err != nil {
		return nil, interpretError(fmt.Errorf("load merges: %w", err))
	}
	defer rows.Close()
	out := make(map[int64][]*c360.MergeRecord, len(ids))
	for rows.Next() {
		var (
			parent int64
			r      c360.MergeRecord
			t, v   *string
		)
		if err := rows.Scan(&parent, &r.ID, &r.Kind, &r.SurvivorID, &r.MergedID, &t, &v, &r.EventID, &r.Reason, &r.Actor, &r.At); err != nil {
			return nil, fmt.Errorf("scan merge: %w", err)
		}
		if t != nil && v != nil {
			r.Identity = &c360.Identity{Type: *t, Value: *v}
		}
		out[parent] = append(out[parent], &r)
	}
	return out, interpretError(rows.Err())
}
