package postgres

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/c360dev/c360"
	"github.com/c360dev/c360/identity"
	"github.com/c360dev/c360/pii"
)

var _ c360.ErasureService = (*DB)(nil)

// errEraseRaced reports that the customer was merged away between the read
// of its survivor and the lock of its row, as errMergeRaced does for a
// merge: the transaction is tried again and reads the survivor anew.
var errEraseRaced = &c360.Error{Code: c360.ECONFLICT, Message: "the customer changed during the erasure; retry"}

// EraseCustomer erases a person: the customer with the id, or the survivor
// it was merged into, and every customer merged into that one (their rows
// are the same person's), and her customers from before a wrong merge that
// splits undid (formerRows). In one transaction, which locks the survivor's
// row first, as a merge does, it deletes their identities, conversations
// and messages (theirs in a conversation shared with a customer one was
// split from too), consents, observations, change feeds, the ledger's
// merges and splits and the separations that name them, and their rows; it
// scrubs their events down to the exactly-once key and one-way markers of
// their identities, so that a provider's redelivery of one is a duplicate
// and creates nobody, and a chatbot key reused by another person is still
// refused; it takes their identifiers out of other customers' events and
// changes (and what merges and splits of hers recorded in those changes,
// eraseFromOthersChanges), removes identity values, free text and provider ids from the
// audit entries about them, and deletes the dead letters that name one of
// their identifiers. Each customer's feed
// keeps one change, of kind erased, with an empty diff: subscribers on
// every replica, of the survivor or of an id merged into it, learn of the
// erasure through it. See docs/erasure.md.
//
// The transaction first takes the workspace's erasure lock, exclusive
// (erasureLockKey): a dead-letter replay under way ends first, and one
// that starts later waits, then finds the person's dead letters gone.
//
// An ingest that waits for the survivor's lock meanwhile finds it gone once
// the erasure commits, reads the owners of its identities again and finds
// none: a new event of the person makes a new customer.
//
// The transaction's statements are bounded by eraseStatementTimeout, not
// by the pool's statement_timeout: the erasure of a customer of a million
// events takes longer than the pool's 10 s, and would otherwise never
// succeed. Its lock waits keep the pool's lock_timeout.
func (db *DB) EraseCustomer(ctx context.Context, ws, customerID int64, actor, reason string) (*c360.CustomerErasure, error) {
	var out *c360.CustomerErasure
	var moved []int64
	err := db.retryTx(ctx, func() (pgx.Tx, error) {
		return db.app.BeginTx(ctx, pgx.TxOptions{BeginQuery: eraseBeginSQL(ws)})
	}, func(tx pgx.Tx) error {
		moved = nil
		// First, holding nothing else: the workspace's erasure lock,
		// which keeps out dead-letter replays (ReplayDeadLetter), whose
		// ingest would otherwise store the person again after her letter
		// was read and before it was erased.
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, erasureLockKey(ws)); err != nil {
			return eraseError(ctx, "wait for dead-letter replays", err)
		}
		ids, err := survivorsOf(ctx, tx, ws, customerID)
		if c360.ErrorCode(err) == c360.ENOTFOUND {
			return erasedBefore(ctx, tx, ws, customerID, err)
		} else if err != nil {
			return eraseBound(ctx, "find the customer", err)
		}
		s := ids[0]
		if db.beforeCustomerLock != nil {
			db.beforeCustomerLock()
		}
		locked, stale, err := lockCustomers(ctx, tx, ws, []int64{s})
		if err != nil {
			return eraseBound(ctx, "lock the customer", err)
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
			SELECT c.id, c.version, c.traits FROM customers c JOIN m ON c.workspace_id = $1 AND c.id = m.id
			ORDER BY c.id FOR UPDATE OF c`, ws, s)
		if err != nil {
			return eraseError(ctx, "find merged customers", err)
		}
		all, versions, traits := []int64{s}, []int64{locked[s].version}, []map[string]any{locked[s].traits}
		var (
			id, version int64
			t           map[string]any
		)
		if _, err := pgx.ForEachRow(rows, []any{&id, &version, &t}, func() error {
			all, versions, traits = append(all, id), append(versions, version), append(traits, t)
			t = nil
			return nil
		}); err != nil {
			return eraseError(ctx, "find merged customers", err)
		}
		// Her rows from before a wrong merge: customers merged into
		// someone else whose identities all came back to her by splits.
		formers, err := formerRows(ctx, tx, ws, all)
		if err != nil {
			return err
		}
		erased, err := erasedIdentities(ctx, tx, ws, all)
		if err != nil {
			return err
		}
		var formerIDs []int64
		for _, f := range formers {
			formerIDs = append(formerIDs, f.id)
			versions, traits = append(versions, f.version), append(traits, f.traits)
		}
		mergedIDs := slices.Clone(all[1:])
		all = append(all, formerIDs...)
		// The reason is kept in the audit log: it may not name the
		// person (the resolver refused what looks like anyone's email
		// address or phone number already).
		if what := reasonNames(reason, erased, traits); what != "" {
			return c360.Errorf(c360.EINVALID, "reason holds the customer's %s: it is kept in the audit log after the erasure; "+
				"name the request instead (a ticket number, say)", what)
		}
		e := &c360.CustomerErasure{CustomerID: s, MergedCustomerIDs: mergedIDs, FormerCustomerIDs: formerIDs, ErasedAt: db.Now()}
		// Other people's messages in their conversations (a person split
		// off from them left hers in the conversations the two shared)
		// are hers: they move to conversations of her own before theirs
		// are deleted. Her row is locked after theirs; a merge that
		// took her since the read is a race, and the erasure is retried.
		owners, err := othersInConversations(ctx, tx, ws, all)
		if err != nil {
			return err
		}
		if len(owners) > 0 {
			if db.beforeCustomerLock != nil {
				db.beforeCustomerLock()
			}
			if _, stale, err := lockCustomers(ctx, tx, ws, owners); err != nil {
				return eraseBound(ctx, "lock the owners of others' messages", err)
			} else if stale {
				return errEraseRaced
			}
			// A split of one of them that committed before her lock
			// moved her events, and her messages with them, to someone
			// not locked. With them all locked, the owners read again
			// are final: a difference is a race, and the erasure is
			// tried again.
			again, err := othersInConversations(ctx, tx, ws, all)
			if err != nil {
				return err
			}
			if !slices.Equal(again, owners) {
				return errEraseRaced
			}
			if e.MessagesMoved, err = moveOthersMessages(ctx, tx, ws, all, owners, e.ErasedAt); err != nil {
				return err
			}
			moved = owners
		}
		// Dead letters are found through the customers' events and
		// identities, before either is scrubbed.
		if e.DeadLetters, err = db.eraseDeadLetters(ctx, tx, ws, all, erased); err != nil {
			return err
		}
		if err := db.eraseFromOthersChanges(ctx, tx, ws, all, erased); err != nil {
			return err
		}
		if err := eraseRows(ctx, tx, ws, all, versions, erased, e); err != nil {
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
	db.committed(ws, slices.Concat([]int64{out.CustomerID}, out.MergedCustomerIDs, out.FormerCustomerIDs, moved))
	return out, nil
}

// erasedBefore is the answer to the erasure of customerID, which has no
// row (notFound, survivorsOf's answer): NOT_FOUND either way, but for an
// id erased before, one that says when, from the erased change its feed
// kept, so that a client that repeats an erasure whose answer it did not
// receive (a timeout) can tell it from a mistyped id.
func erasedBefore(ctx context.Context, tx pgx.Tx, ws, customerID int64, notFound error) error {
	var at time.Time
	err := tx.QueryRow(ctx, `SELECT created_at FROM customer_changes
		WHERE workspace_id = $1 AND customer_id = $2 AND kind = $3
		ORDER BY version DESC LIMIT 1`, ws, customerID, c360.ChangeErased).Scan(&at)
	switch {
	case err == pgx.ErrNoRows:
		return notFound
	case err != nil:
		return eraseError(ctx, "find the customer", err)
	}
	return c360.Errorf(c360.ENOTFOUND, "customer %d was erased at %s", customerID, at.UTC().Format(time.RFC3339))
}

// formerRow is a customer that was the person before a wrong merge
// (formerRows), locked, with its version and traits.
type formerRow struct {
	id, version int64
	traits      map[string]any
}

// formerRows returns, locked, the customers that were the person before a
// wrong merge: merged into someone else (not one of ids, the person's
// customers, locked), whose identities have all come back to ids by
// splits since. After Ann's customer A was merged into Zed's Q by
// mistake, and her email split off Q into N, erasing N erases A too: A's
// feed replays her profile (created, with her traits and identities), its
// audit entries name her, and a row merged before merges cleared their
// traits keeps them (mergeSQL).
//
// They are found through the ledger: the customers merged into the
// survivor of a customer that one of ids was split from. A customer's
// identities when it was merged away are those its own feed added
// (identitiesAdded: ingest, merges into it, and a split that made it)
// after any split of it took them away last (a split change's identity);
// a merged customer's feed ends with its merged_into change, and feeds are
// never pruned. A customer qualifies when it had at least one, and every
// one of them is held by one of ids now: one that went elsewhere (another
// person split off, or an identifier left with Zed) keeps it out, and the
// person's identifiers are then taken out of its feed as out of any other
// customer's (eraseFromOthersChanges). The candidates are locked, and
// those that do not qualify lose the traits a merge before mergeSQL
// cleared them left on their rows.
func formerRows(ctx context.Context, tx pgx.Tx, ws int64, ids []int64) ([]formerRow, error) {
	rows, err := tx.Query(ctx, `
		WITH cand AS MATERIALIZED (
			SELECT DISTINCT x.id FROM merges l
			JOIN customers o ON o.workspace_id = $1 AND o.id = l.survivor_id
			JOIN customers x ON x.workspace_id = $1 AND x.merged_into = coalesce(o.merged_into, o.id)
			WHERE l.workspace_id = $1 AND l.kind = 'split' AND l.merged_id = ANY($2) AND x.id <> ALL($2)),
		held AS (
			SELECT c.customer_id AS id, a.type, a.value,
				max(c.version) FILTER (WHERE a.added) AS added, max(c.version) FILTER (WHERE NOT a.added) AS lost
			FROM cand
			JOIN customer_changes c ON c.workspace_id = $1 AND c.customer_id = cand.id
			CROSS JOIN LATERAL (
				SELECT x.type, x.value, true AS added
				FROM jsonb_to_recordset(CASE WHEN jsonb_typeof(c.diff->'identitiesAdded') = 'array' THEN c.diff->'identitiesAdded' END) AS x(type text, value text)
				UNION ALL
				SELECT c.diff->'identity'->>'type', c.diff->'identity'->>'value', false
				WHERE c.kind = 'split' AND jsonb_typeof(c.diff->'identity') = 'object') a
			GROUP BY c.customer_id, a.type, a.value),
		former AS (
			SELECT h.id FROM held h
			LEFT JOIN identities i ON i.workspace_id = $1 AND i.type = h.type AND i.value = h.value
			WHERE h.added > coalesce(h.lost, -1)
			GROUP BY h.id
			HAVING bool_and(coalesce(i.customer_id = ANY($2), false)))
		SELECT c.id, c.version, c.traits, c.id IN (SELECT id FROM former) FROM customers c
		WHERE c.workspace_id = $1 AND c.id IN (SELECT id FROM cand) AND c.merged_into IS NOT NULL
		ORDER BY c.id FOR UPDATE OF c`, ws, ids)
	if err != nil {
		return nil, eraseError(ctx, "find her customers merged into others", err)
	}
	var (
		out    []formerRow
		others []int64
		f      formerRow
		former bool
	)
	if _, err := pgx.ForEachRow(rows, []any{&f.id, &f.version, &f.traits, &former}, func() error {
		if former {
			out = append(out, f)
		} else {
			others = append(others, f.id)
		}
		f = formerRow{}
		return nil
	}); err != nil {
		return nil, eraseError(ctx, "find her customers merged into others", err)
	}
	// The other candidates, merged before merges cleared the merged row's
	// traits (mergeSQL), may keep hers too (merged with an identifier of
	// hers that came back to her, and one that did not): nothing reads
	// them, and they go.
	if len(others) > 0 {
		if _, err := tx.Exec(ctx, `UPDATE customers SET traits = '{}', trait_meta = '{}', search_text = ''
			WHERE workspace_id = $1 AND id = ANY($2) AND merged_into IS NOT NULL
			  AND (traits <> '{}' OR trait_meta <> '{}' OR search_text <> '')`, ws, others); err != nil {
			return nil, eraseError(ctx, "clear the traits of customers merged into others", err)
		}
	}
	return out, nil
}

// eraseFromOthersChanges takes the person out of the changes of customers
// other than ids (hers): her identities out of their identitiesAdded and
// a split's identity, the traits whose name says they hold an email
// address or a phone number (pii.KeyKind: email, work_email, mobile...)
// and whose value, normalized as ingest would an identifier of that type,
// is her email address or phone number (a trait of another name, or one
// equal to her user_id or another identifier of hers, is his: a zip
// "10001" stays when her user_id is "10001"), the traits and
// the operator's reason of the change of a merge of one of ids into them
// (the traits it took were hers), and the reason of the change of a split
// into one of ids (it is about her). The rest of each change stays; a key
// left empty goes. Their dropped reasons are eraseRows'.
//
// The changes that may name her are read as dead letters are
// (deadLetterNeedles, over the diff's identities and traits as JSON
// text), then compared exactly here. There is no index on diffs: this
// reads the workspace's changes once per erasure (eraseStatementTimeout).
func (db *DB) eraseFromOthersChanges(ctx context.Context, tx pgx.Tx, ws int64, ids []int64, erased map[identity.Identity]bool) error {
	strIDs := make([]string, len(ids))
	for i, id := range ids {
		strIDs[i] = strconv.FormatInt(id, 10)
	}
	digits, texts := deadLetterNeedles(erased)
	rows, err := tx.Query(ctx, `
		SELECT c.customer_id, c.version, c.diff FROM customer_changes c,
		LATERAL (SELECT concat_ws(' ', c.diff->'identitiesAdded', c.diff->'identity', c.diff->'traits') AS v) x
		WHERE c.workspace_id = $1 AND c.customer_id <> ALL($2)
		  AND (c.diff->'merged' ?| $3::text[] OR c.diff->>'splitInto' = ANY($3)
			OR x.v IS NOT NULL AND (translate(x.v, '`+phoneSeparators+`', '0123456789') LIKE ANY($4) OR lower(x.v) LIKE ANY($5)))`,
		ws, ids, strIDs, digits, texts)
	if err != nil {
		return eraseError(ctx, "read others' changes", err)
	}
	var (
		who, versions []int64
		diffs         []string
		customer, ver int64
		diff          map[string]any
	)
	if _, err := pgx.ForEachRow(rows, []any{&customer, &ver, &diff}, func() error {
		if db.scrubChange(diff, strIDs, erased) {
			b, err := json.Marshal(diff)
			if err != nil {
				return err
			}
			who, versions, diffs = append(who, customer), append(versions, ver), append(diffs, string(b))
		}
		diff = nil
		return nil
	}); err != nil {
		return eraseError(ctx, "read others' changes", err)
	}
	if len(who) == 0 {
		return nil
	}
	if _, err := tx.Exec(ctx, `UPDATE customer_changes c SET diff = x.d::jsonb
		FROM unnest($2::bigint[], $3::bigint[], $4::text[]) AS x(id, version, d)
		WHERE c.workspace_id = $1 AND c.customer_id = x.id AND c.version = x.version`, ws, who, versions, diffs); err != nil {
		return eraseError(ctx, "erase her from others' changes", err)
	}
	return nil
}

// scrubChange takes the person out of another customer's change diff, as
// eraseFromOthersChanges says, and reports whether it changed it. ids are
// the erased customers' ids as a diff writes them.
func (db *DB) scrubChange(diff map[string]any, ids []string, erased map[identity.Identity]bool) bool {
	changed := false
	hers := func(v any) bool {
		m, ok := v.(map[string]any)
		if !ok {
			return false
		}
		t, _ := m["type"].(string)
		val, _ := m["value"].(string)
		return erased[identity.Identity{Type: t, Value: val}]
	}
	// A merge of one of hers: the traits it took were hers, and the
	// reason is about her. A split into one of hers: the reason is (its
	// traits are the original's, rebuilt without hers).
	var about []string
	if merged, ok := diff["merged"].([]any); ok && slices.ContainsFunc(merged, func(v any) bool {
		s, _ := v.(string)
		return slices.Contains(ids, s)
	}) {
		about = []string{"traits", "reason"}
	}
	if into, ok := diff["splitInto"].(string); ok && slices.Contains(ids, into) {
		about = append(about, "reason")
	}
	for _, k := range about {
		if _, ok := diff[k]; ok {
			delete(diff, k)
			changed = true
		}
	}
	if added, ok := diff["identitiesAdded"].([]any); ok {
		kept := slices.DeleteFunc(slices.Clone(added), hers)
		if len(kept) < len(added) {
			changed = true
			if len(kept) == 0 {
				delete(diff, "identitiesAdded")
			} else {
				diff["identitiesAdded"] = kept
			}
		}
	}
	if hers(diff["identity"]) {
		delete(diff, "identity")
		changed = true
	}
	if traits, ok := diff["traits"].(map[string]any); ok {
		for k, v := range traits {
			s, ok := v.(string)
			if !ok {
				continue
			}
			// Only a trait whose name says it holds an email address or a
			// phone number, read as an identifier of that type: another
			// customer's zip "10001" is not her user_id "10001".
			var t string
			switch pii.KeyKind(k) {
			case pii.KindEmail:
				t = identity.TypeEmail
			case pii.KindPhone:
				t = identity.TypePhone
			default:
				continue
			}
			if n, err := db.Normalizer.Normalize(identity.Identity{Type: t, Value: s}); err == nil && erased[n] {
				delete(traits, k)
				changed = true
			}
		}
		if len(traits) == 0 {
			delete(diff, "traits")
		}
	}
	return changed
}

// othersInConversations returns the customers other than ids whose events
// brought messages into the conversations of ids, sorted: a person split
// off from one of them (a split moves only the conversations with no
// message of the original's left behind, so the conversations they shared
// stay with the original), or the customer she was merged into since.
func othersInConversations(ctx context.Context, tx pgx.Tx, ws int64, ids []int64) ([]int64, error) {
	rows, err := tx.Query(ctx, `SELECT DISTINCT coalesce(c.merged_into, c.id) AS owner
		FROM conversations v
		JOIN messages m ON m.workspace_id = $1 AND m.conversation_id = v.id
		JOIN events e ON e.workspace_id = $1 AND e.id = m.event_id
		JOIN customers c ON c.workspace_id = $1 AND c.id = e.customer_id
		WHERE v.workspace_id = $1 AND v.customer_id = ANY($2) AND NOT coalesce(c.merged_into, c.id) = ANY($2)
		ORDER BY owner`, ws, ids)
	if err != nil {
		return nil, eraseError(ctx, "find others' messages", err)
	}
	owners, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	if err != nil {
		return nil, eraseError(ctx, "find others' messages", err)
	}
	return owners, nil
}

// moveOthersMessages moves the messages in the conversations of ids whose
// event is one of owners' (othersInConversations, locked) into
// conversations of the owner's own, one per conversation they came from,
// with its channel, thread and start, closed (they are history; a new
// message of the owner opens a conversation as ingest does), and gives
// each owner a change of kind message whose diff lists the conversations
// it was given: {"conversationsMoved": [{"id", "channel", "messages"}]}.
// It returns the number of messages moved. Messages with no event (sent
// by an agent) stay and are erased: nothing says whose they are.
func moveOthersMessages(ctx context.Context, tx pgx.Tx, ws int64, ids, owners []int64, now time.Time) (int, error) {
	rows, err := tx.Query(ctx, `WITH moved AS MATERIALIZED (
			SELECT m.id, m.conversation_id AS conv, coalesce(c.merged_into, c.id) AS owner, m.created_at, m.direction
			FROM conversations v
			JOIN messages m ON m.workspace_id = $1 AND m.conversation_id = v.id
			JOIN events e ON e.workspace_id = $1 AND e.id = m.event_id
			JOIN customers c ON c.workspace_id = $1 AND c.id = e.customer_id
			WHERE v.workspace_id = $1 AND v.customer_id = ANY($2) AND coalesce(c.merged_into, c.id) = ANY($3)),
		pairs AS MATERIALIZED (
			SELECT conv, owner, count(*) AS n, max(created_at) AS last,
				max(created_at) FILTER (WHERE direction = 'inbound') AS last_in,
				nextval('conversations_id_seq') AS id
			FROM moved GROUP BY conv, owner),
		made AS (
			INSERT INTO conversations (workspace_id, id, customer_id, channel, status, thread_key, last_message_at, last_inbound_at, created_at)
			OVERRIDING SYSTEM VALUE
			SELECT $1, p.id, p.owner, v.channel, 'closed', v.thread_key, p.last, p.last_in, v.created_at
			FROM pairs p JOIN conversations v ON v.workspace_id = $1 AND v.id = p.conv),
		moves AS (
			UPDATE messages m SET conversation_id = p.id, customer_id = p.owner
			FROM moved x JOIN pairs p ON p.conv = x.conv AND p.owner = x.owner
			WHERE m.workspace_id = $1 AND m.id = x.id)
		SELECT p.owner, p.id, v.channel, p.n FROM pairs p JOIN conversations v ON v.workspace_id = $1 AND v.id = p.conv
		ORDER BY p.owner, p.id`, ws, ids, owners)
	if err != nil {
		return 0, eraseError(ctx, "move others' messages", err)
	}
	type conversation struct {
		ID       string `json:"id"`
		Channel  string `json:"channel"`
		Messages int    `json:"messages"`
	}
	given := map[int64][]conversation{}
	total := 0
	var (
		owner, id int64
		channel   string
		n         int
	)
	if _, err := pgx.ForEachRow(rows, []any{&owner, &id, &channel, &n}, func() error {
		given[owner] = append(given[owner], conversation{strconv.FormatInt(id, 10), channel, n})
		total += n
		return nil
	}); err != nil {
		return 0, eraseError(ctx, "move others' messages", err)
	}
	who := make([]int64, 0, len(given))
	diffs := make([]string, 0, len(given))
	for _, o := range owners {
		if cs, ok := given[o]; ok {
			b, err := json.Marshal(map[string]any{"conversationsMoved": cs})
			if err != nil {
				return 0, err
			}
			who, diffs = append(who, o), append(diffs, string(b))
		}
	}
	if _, err := tx.Exec(ctx, `WITH v AS (
			UPDATE customers c SET version = c.version + 1, updated_at = $4
			FROM unnest($2::bigint[], $3::text[]) AS x(id, d)
			WHERE c.workspace_id = $1 AND c.id = x.id
			RETURNING c.id, c.version, x.d)
		INSERT INTO customer_changes (workspace_id, customer_id, version, kind, diff, created_at)
		SELECT $1, v.id, v.version, $5, v.d::jsonb, $4 FROM v`, ws, who, diffs, now, c360.ChangeMessage); err != nil {
		return 0, eraseError(ctx, "record others' moved messages", err)
	}
	return total, nil
}

// eraseStatementTimeout bounds the erasure's statements, in place of the
// pool's statement_timeout (10 s by default). It is set in the erasure's
// own transaction only (set_config(..., true), sent with its BEGIN), as a
// group commit sets its lock_timeout: an erasure is rare and admin-only,
// and the rows of a person imported in bulk (a million events) take
// minutes at worst, while a bound still keeps a runaway statement from
// holding the customer's lock for ever. A variable only so that a test can
// provoke the bound (SetEraseStatementTimeout).
var eraseStatementTimeout = 5 * time.Minute

// eraseBeginSQL is beginSQL with the transaction's statement_timeout set
// to eraseStatementTimeout, in the same round trip, and JIT compilation
// off: the erasure's statements over many rows cost enough for PostgreSQL
// to compile them, which takes longer (a quarter of a second each) than
// they run.
func eraseBeginSQL(ws int64) string {
	return beginSQL(ws) + ", set_config('statement_timeout', '" + strconv.FormatInt(eraseStatementTimeout.Milliseconds(), 10) + "', true)" +
		", set_config('jit', 'off', true)"
}

// eraseError maps err, which step of the erasure met, as interpretError
// does, but for a statement cut off by eraseStatementTimeout (57014 while
// ctx still runs): its answer says so and names the step, instead of "the
// database is busy; retry", since trying again at once would meet the same
// bound.
func eraseError(ctx context.Context, step string, err error) error {
	if bound := eraseBound(ctx, step, err); bound != err {
		return bound
	}
	return interpretError(fmt.Errorf("%s: %w", step, err))
}

// eraseBound is err, which step met, unless it is a statement cut off by
// eraseStatementTimeout (57014 while ctx still runs), which it answers as
// eraseError does. The erasure calls it on what the reads it shares with
// merges (the survivor, the locks) return, mapped already as a busy
// database: within the erasure the bound is what to say.
func eraseBound(ctx context.Context, step string, err error) error {
	var pgErr *pgconn.PgError
	if ctx.Err() == nil && errors.As(err, &pgErr) && pgErr.Code == "57014" {
		return &wrapped{c360.Errorf(c360.EUNAVAILABLE, "the erasure did not finish within %v (at: %s); "+
			"the database may be overloaded, or the customer too large to erase at once", eraseStatementTimeout, step),
			fmt.Errorf("%s: %w", step, err)}
	}
	return err
}

// scrubEventSQL is the SET list that clears an event down to its
// exactly-once key (workspace, source, dedupe_key), its type and times
// (occurred_at, received_at, and traits_at of migration 00018, which
// dates traits that are cleared), and a one-way marker of each of its
// identities (erasedMarker). Every other column of events (migrations
// 00001, 00003, 00009) may name or describe the person. properties, NOT NULL, takes its default '{}'.
const scrubEventSQL = `customer_id = NULL, name = NULL, properties = '{}', traits = NULL, context = NULL,
	identities = ` + erasedMarkersSQL + `, dropped = NULL, traits_if_absent = NULL`

// erasedIdentityType is the type of the markers an erased event keeps in
// place of its identities (erasedMarker).
const erasedIdentityType = "erased"

// auditFieldNames are the names c360 itself writes in the fields of a read
// of personal data (pii.read): the GraphQL fields read (traits,
// properties, body, customerContext.text, ...), the parts of a change's
// diff and of the context's text. An erasure keeps them in the fields of
// the erased customers' reads, and the words for personal data
// (pii.KeyWords); any other segment, a key of their traits or properties
// or a custom identity type, may be personal data, and is generalised to *.
var auditFieldNames = []string{
	"traits", "properties", "traitSources", "diff", "event", "events", "name", "source", "body", "text",
	"reason", "value", "identity", "identities", "identitiesAdded", "cause", "dropped", "observation",
	"observations", "messages", "message", "merges", "customerContext", "providerId", "dedupeKey",
	"consent", "consents", "item", "from", "context", "replyTo", "reactionTo",
}

// auditFieldKind is the kind of personal data a field's segment may end
// with, found in free text or a custom identity's value: body(email),
// identity.crm_id(phone). The erasure keeps it.
const auditFieldKind = `(\((?:email|phone|name|address|birthday)\))$`

// erasedMarker is what an erased event of source and key keeps in place of
// its identity id: {"type": "erased", "value": hex SHA-256 of the source,
// the key and id}, each but the last prefixed with its length in bytes.
// A chatbot's keys are unique per person, not per workspace
// (c360.Event.RepeatSharesIdentity): a repeat of such a key is a
// redelivery only when it shares an identity with the stored event, and
// checkRepeat compares the repeat's identities, marked the same way, with
// these. The hash names nobody by itself; the source and key in it keep
// one person's markers from linking her events to one another, or to
// another workspace's. erasedMarkersSQL computes the same in SQL.
func erasedMarker(source, key string, id identity.Identity) identity.Identity {
	sum := sha256.Sum256([]byte(fmt.Sprintf("%d:%s%d:%s%d:%s%s", len(source), source, len(key), key, len(id.Type), id.Type, id.Value)))
	return identity.Identity{Type: erasedIdentityType, Value: hex.EncodeToString(sum[:])}
}

// erasedMarkersSQL is the markers (erasedMarker) of an events row's
// identities, as its new identities.
const erasedMarkersSQL = `(SELECT coalesce(jsonb_agg(jsonb_build_object('type', '` + erasedIdentityType + `', 'value',
		encode(sha256(convert_to(octet_length(source) || ':' || source || octet_length(dedupe_key) || ':' || dedupe_key ||
			octet_length(x.type) || ':' || x.type || x.value, 'UTF8')), 'hex'))), '[]')
	FROM jsonb_to_recordset(identities) AS x(type text, value text))`

// eraseRows deletes and scrubs the rows of the customers ids (ids[0] the
// survivor; versions[i] the version of ids[i]) in one round trip, counting
// them in e. The statements run
// in order: those that find rows through the customers' identities before
// the identities go, and rows before the rows their foreign keys name.
func eraseRows(ctx context.Context, tx pgx.Tx, ws int64, ids, versions []int64, erased map[identity.Identity]bool, e *c360.CustomerErasure) error {
	strIDs := make([]string, len(ids))
	for i, id := range ids {
		strIDs[i] = strconv.FormatInt(id, 10)
	}
	// The identities, and each as a dropped identifier's reason starts
	// (prepare, resolve: `%s %q: reason`): type and value, so that another
	// customer's reason about the same value of another type stays.
	var types, values, quoted []string
	for id := range erased {
		types, values = append(types, id.Type), append(values, id.Value)
		quoted = append(quoted, id.Type+" "+strconv.Quote(id.Value)+":")
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
		WHERE workspace_id = $1 AND customer_id IS NULL AND identities <> '[]' AND identities @> ANY(`+asLists+`)`, ws, ids)
	// Events of other customers that name one of the identities: an
	// event the identity rules kept from merging her customer (two
	// user_ids are two people) went to another customer with her
	// identifier in its identities and its dropped reasons, and in that
	// customer's change. They lose it; the rest of them stays. There is
	// no index on identities or dropped: these read the workspace's
	// events and changes, once per erasure (eraseStatementTimeout).
	b.Queue(`UPDATE events e SET
			identities = (SELECT coalesce(jsonb_agg(x.v ORDER BY x.n), '[]')
				FROM jsonb_array_elements(e.identities) WITH ORDINALITY AS x(v, n)
				WHERE x.v NOT IN (SELECT jsonb_build_object('type', u.t, 'value', u.v) FROM unnest($3::text[], $4::text[]) AS u(t, v))),
			dropped = (SELECT jsonb_agg(x.d ORDER BY x.n)
				FROM jsonb_array_elements_text(e.dropped) WITH ORDINALITY AS x(d, n)
				WHERE NOT EXISTS (SELECT 1 FROM unnest($5::text[]) q WHERE starts_with(x.d, q)))
		WHERE e.workspace_id = $1 AND e.customer_id <> ALL($2)
		  AND (e.identities @> ANY(ARRAY(SELECT jsonb_build_array(jsonb_build_object('type', u.t, 'value', u.v))
				FROM unnest($3::text[], $4::text[]) AS u(t, v)))
			OR jsonb_typeof(e.dropped) = 'array' AND EXISTS (SELECT 1 FROM jsonb_array_elements_text(e.dropped) d, unnest($5::text[]) q
				WHERE starts_with(d, q)))`, ws, ids, types, values, quoted)
	b.Queue(`WITH k AS (
			SELECT c.customer_id, c.version, (SELECT jsonb_agg(x.d ORDER BY x.n)
				FROM jsonb_array_elements_text(c.diff->'dropped') WITH ORDINALITY AS x(d, n)
				WHERE NOT EXISTS (SELECT 1 FROM unnest($3::text[]) q WHERE starts_with(x.d, q))) AS rest
			FROM customer_changes c
			WHERE c.workspace_id = $1 AND c.customer_id <> ALL($2) AND jsonb_typeof(c.diff->'dropped') = 'array'
			  AND EXISTS (SELECT 1 FROM jsonb_array_elements_text(c.diff->'dropped') d, unnest($3::text[]) q WHERE starts_with(d, q)))
		UPDATE customer_changes c SET diff = CASE WHEN k.rest IS NULL THEN c.diff - 'dropped' ELSE jsonb_set(c.diff, '{dropped}', k.rest) END
		FROM k WHERE c.workspace_id = $1 AND c.customer_id = k.customer_id AND c.version = k.version`, ws, ids, quoted)
	// Ledger entries of other customers that name one of the identities:
	// a merge of two customers the identity linked, both since merged or
	// split elsewhere. The reason of an automatic merge quotes it.
	b.Queue(`UPDATE merges SET identity_type = NULL, identity_value = NULL, reason = ''
		WHERE workspace_id = $1 AND (identity_type, identity_value) IN (
			SELECT i.type, i.value FROM identities i WHERE i.workspace_id = $1 AND i.customer_id = ANY($2))`, ws, ids)
	b.Queue(`DELETE FROM identities WHERE workspace_id = $1 AND customer_id = ANY($2)`, ws, ids)
	// Their messages in another customer's conversation: a split leaves
	// a conversation the two shared with the original customer (or the
	// one it was merged into since), with every message, hers included;
	// her events moved to her. Found through the ledger's splits of the
	// customers, by conversation, then by event, before the events are
	// scrubbed.
	b.Queue(`DELETE FROM messages m USING events e
		WHERE m.workspace_id = $1 AND m.conversation_id IN (
			SELECT v.id FROM merges l
			JOIN customers c ON c.workspace_id = $1 AND c.id = l.survivor_id
			JOIN conversations v ON v.workspace_id = $1 AND v.customer_id = coalesce(c.merged_into, c.id)
			WHERE l.workspace_id = $1 AND l.kind = 'split' AND l.merged_id = ANY($2) AND NOT c.id = ANY($2))
		  AND e.workspace_id = $1 AND e.id = m.event_id AND e.customer_id = ANY($2)`, ws, ids)
	b.Queue(`UPDATE events SET `+scrubEventSQL+`
		WHERE workspace_id = $1 AND customer_id = ANY($2)`, ws, ids)
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
	// lose what may be personal: a split's identity, the free-text
	// reasons of merges and splits, and a sent message's provider id (a
	// WhatsApp Cloud API id, wamid., encodes the recipient's number). A
	// split's entry is the original customer's, and names the new one
	// (splitId); a merge's is the survivor's, and names the merged one
	// (mergedId: one of her former rows, merged into someone else).
	b.Queue(`UPDATE audit_log SET detail = detail - 'identity' - 'reason' - 'providerId'
		WHERE workspace_id = $1 AND (detail ? 'identity' OR detail ? 'reason' OR detail ? 'providerId')
		  AND (customer_id = ANY($2) OR action = 'customer.split' AND detail->>'splitId' = ANY($3::text[])
			OR action = 'customer.merge' AND detail->>'mergedId' = ANY($3::text[]))`, ws, ids, strIDs)
	// Their reads of personal data name what was read by its path, and a
	// path holds the keys of their traits and properties as written: a
	// contact's name ({"contacts": {"Emma Doe": {"phone": ...}}}), an
	// invitee's address masked (b***@example.com). Each segment that is
	// not a name c360 writes (auditFieldNames) or a word for personal data
	// (pii.KeyWords: email, phone, first_name, ..., with at most two digits
	// after it, as phone2 or email_12) is generalised to *,
	// a kind found in it kept: traits.contacts.Emma Doe.phone reads
	// traits.*.*.phone, identity.crm_id(phone) identity.*(phone).
	b.Queue(`WITH g AS (
			SELECT a.id, ARRAY(
				SELECT x.f FROM (
					SELECT (SELECT string_agg(
							CASE WHEN p.base = '' OR p.base = ANY($3::text[])
								OR lower(regexp_replace(translate(p.base, '_- ', ''), '[0-9]{1,2}$', '')) = ANY($4::text[])
							THEN p.base ELSE '*' END || coalesce(p.kind, ''), '.' ORDER BY s.n)
						FROM regexp_split_to_table(u.f, '\.') WITH ORDINALITY AS s(seg, n),
						LATERAL (SELECT regexp_replace(s.seg, $5, '') AS base, substring(s.seg FROM $5) AS kind) p) AS f, u.n
					FROM unnest(a.fields) WITH ORDINALITY AS u(f, n)) x
				GROUP BY x.f ORDER BY min(x.n)) AS fields
			FROM audit_log a
			WHERE a.workspace_id = $1 AND a.customer_id = ANY($2) AND a.action = $6)
		UPDATE audit_log a SET fields = g.fields FROM g
		WHERE a.workspace_id = $1 AND a.id = g.id AND a.fields <> g.fields`,
		ws, ids, auditFieldNames, pii.KeyWords(), auditFieldKind, c360.AuditPIIRead)
	b.Queue(`DELETE FROM customers WHERE workspace_id = $1 AND id = ANY($2)`, ws, ids)
	// One erased change per customer, at its next version: the feeds'
	// only rows left.
	b.Queue(`INSERT INTO customer_changes (workspace_id, customer_id, version, kind, diff, created_at)
		SELECT $1, c.id, c.version + 1, $4, '{}', $5 FROM unnest($2::bigint[], $3::bigint[]) AS c(id, version)`,
		ws, ids, versions, c360.ChangeErased, e.ErasedAt)
	br := tx.SendBatch(ctx, b)
	defer br.Close()

	exec := func(what string) (int, error) {
		tag, err := br.Exec()
		if err != nil {
			return 0, eraseError(ctx, what, err)
		}
		return int(tag.RowsAffected()), nil
	}
	unlinked, err := exec("scrub events without a customer")
	if err != nil {
		return err
	}
	if _, err := exec("erase identifiers from others' events"); err != nil {
		return err
	}
	if _, err := exec("erase identifiers from others' changes"); err != nil {
		return err
	}
	if _, err := exec("erase ledger identities"); err != nil {
		return err
	}
	if e.Identities, err = exec("erase identities"); err != nil {
		return err
	}
	shared, err := exec("erase messages in shared conversations")
	if err != nil {
		return err
	}
	linked, err := exec("scrub events")
	if err != nil {
		return err
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
		if *c.n, err = exec("erase " + c.what); err != nil {
			return err
		}
	}
	// Reads of personal data hold no detail the statement before scrubs:
	// the two count different entries.
	reads, err := exec("generalise audited reads")
	if err != nil {
		return err
	}
	e.AuditEntriesScrubbed += reads
	e.Messages += shared
	if n, err := exec("erase customers"); err != nil {
		return err
	} else if n != len(ids) {
		// The rows were locked: nothing else can have removed one.
		return fmt.Errorf("erase customers: deleted %d of %d", n, len(ids))
	}
	if _, err := exec("erase change feed"); err != nil {
		return err
	}
	return nil
}

// erasedIdentities returns the identities of the customers ids.
func erasedIdentities(ctx context.Context, tx pgx.Tx, ws int64, ids []int64) (map[identity.Identity]bool, error) {
	rows, err := tx.Query(ctx, `SELECT type, value FROM identities WHERE workspace_id = $1 AND customer_id = ANY($2)`, ws, ids)
	if err != nil {
		return nil, eraseError(ctx, "read identities", err)
	}
	erased := map[identity.Identity]bool{}
	var id identity.Identity
	if _, err := pgx.ForEachRow(rows, []any{&id.Type, &id.Value}, func() error {
		erased[id] = true
		return nil
	}); err != nil {
		return nil, eraseError(ctx, "read identities", err)
	}
	return erased, nil
}

// eraseDeadLetters deletes the workspace's dead letters that are the
// person's, the customers ids': those keyed as one of their events or
// replayed into one, and those whose event names one of their identities.
// A dead letter keeps its event as received, so its identifiers (and an
// identify's email and phone traits) are normalized as ingest would before
// they are compared, in Go, where normalization lives. A workspace may
// hold many dead letters (a broken import leaves one per event), so only
// candidates are read (deadLetterCandidatesSQL). Text elsewhere in a dead
// letter (a message body) is not searched: a dead letter that names none
// of the person's identifiers is kept.
func (db *DB) eraseDeadLetters(ctx context.Context, tx pgx.Tx, ws int64, ids []int64, erased map[identity.Identity]bool) (int, error) {
	digits, texts := deadLetterNeedles(erased)
	rows, err := tx.Query(ctx, deadLetterCandidatesSQL, ws, ids, digits, texts)
	if err != nil {
		return 0, eraseError(ctx, "read dead letters", err)
	}
	var doomed []int64
	var (
		letter int64
		raw    []byte
		keyed  bool
	)
	_, err = pgx.ForEachRow(rows, []any{&letter, &raw, &keyed}, func() error {
		if keyed || db.namesAny(raw, erased) {
			doomed = append(doomed, letter)
		}
		return nil
	})
	if err != nil {
		return 0, eraseError(ctx, "read dead letters", err)
	}
	if len(doomed) == 0 {
		return 0, nil
	}
	tag, err := tx.Exec(ctx, `DELETE FROM dead_letters WHERE workspace_id = $1 AND id = ANY($2)`, ws, doomed)
	if err != nil {
		return 0, eraseError(ctx, "erase dead letters", err)
	}
	return int(tag.RowsAffected()), nil
}

// deadLetterCandidatesSQL reads the dead letters of workspace $1 that may
// be the person's, and whether each is keyed as an event of the customers
// $2 or replayed into one (keyed: the dead letter is theirs); the others
// are those whose identifier fields (the identities' values, previousId's,
// the email and phone traits), read as one text, match one of the LIKE
// patterns $3 once phoneSeparators are taken out, or one of $4 once
// lowercased (deadLetterNeedles). The identities' values are read as the
// JSON text of their array, where a backslash, a double quote and a
// control character are escaped (CORP\ann is "CORP\\ann"): $4 holds each
// text also so escaped. Reading them unescaped instead (string_agg of each
// value) makes a subplan per dead letter that keeps the scan from running
// in parallel, two to four times slower over 200,000 dead letters.
// eraseDeadLetters compares the candidates exactly,
// in Go. The events are found by the customers' ids, a short list, not by
// their own ids, of which a customer may have a million.
const deadLetterCandidatesSQL = `
	SELECT d.id, d.event, k.keyed
	FROM dead_letters d,
	LATERAL (SELECT EXISTS (SELECT 1 FROM events e WHERE e.workspace_id = $1
			AND e.source = d.source AND e.dedupe_key = d.dedupe_key AND e.customer_id = ANY($2))
		OR EXISTS (SELECT 1 FROM events e WHERE e.workspace_id = $1
			AND e.id = d.replayed_event_id AND e.customer_id = ANY($2)) AS keyed) k,
	LATERAL (SELECT concat_ws(' ', jsonb_path_query_array(d.event, '$.identities[*].value'),
		d.event #>> '{previousId,value}', d.event #>> '{traits,email}', d.event #>> '{traits,phone}') AS v) x
	WHERE d.workspace_id = $1 AND (k.keyed
		OR translate(x.v, '` + phoneSeparators + `', '0123456789') LIKE ANY($3)
		OR lower(x.v) LIKE ANY($4))`

// phoneSeparators are the full-width digits, which translate to digits,
// then what people and providers write between a phone number's digits
// (spaces, dashes, brackets, dots, slashes, "+"), which translate to
// nothing: the digits of the number are then contiguous.
const phoneSeparators = "０１２３４５６７８９" + " +()-./[]\u00a0\u2007\u2009\u202f\u3000\u2010\u2011\u2012\u2013\u2014\u2015\u2212＋（）［］．／"

// deadLetterNeedles returns, for the erased identities, LIKE patterns of
// what every spelling of each that normalizes to it contains: a phone
// number's last seven digits (a country code or national prefix written
// or not, and WhatsApp's forms of Brazilian and Mexican numbers, differ
// before them); an email address's local part, and any other identifier
// whole, lowercased (normalization trims them, and lowercases an address),
// each as written and, when it differs, as JSON text writes it (jsonbText):
// deadLetterCandidatesSQL reads the identities' values as JSON text.
func deadLetterNeedles(erased map[identity.Identity]bool) (digits, texts []string) {
	like := strings.NewReplacer(`\`, `\\`, `%`, `\%`, `_`, `\_`)
	text := func(s string) {
		texts = append(texts, "%"+like.Replace(s)+"%")
		if j := jsonbText(s); j != s {
			texts = append(texts, "%"+like.Replace(j)+"%")
		}
	}
	for id := range erased {
		switch id.Type {
		case identity.TypePhone:
			d := asciiDigits(id.Value)
			digits = append(digits, "%"+d[max(0, len(d)-7):]+"%")
		case identity.TypeEmail:
			local, _, _ := strings.Cut(id.Value, "@")
			text(local)
		default:
			text(strings.ToLower(id.Value))
		}
	}
	return digits, texts
}

// jsonbText is s as PostgreSQL writes a jsonb string's text, quotes aside
// (escape_json): a double quote and a backslash escaped with a backslash,
// and a control character as \b, \f, \n, \r, \t or \u00xx; every other
// character as it is.
func jsonbText(s string) string {
	var b strings.Builder
	for _, r := range s {
		switch r {
		case '"', '\\':
			b.WriteByte('\\')
			b.WriteRune(r)
		case '\b':
			b.WriteString(`\b`)
		case '\f':
			b.WriteString(`\f`)
		case '\n':
			b.WriteString(`\n`)
		case '\r':
			b.WriteString(`\r`)
		case '\t':
			b.WriteString(`\t`)
		default:
			if r < ' ' {
				fmt.Fprintf(&b, `\u%04x`, r)
			} else {
				b.WriteRune(r)
			}
		}
	}
	return b.String()
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

// reasonNames returns what of the person's the erasure's reason holds, ""
// when nothing: one of her identifiers (erased), named by its type, or the
// value of one of her traits whose key names personal data (pii.KeyKind:
// a name, an email address, a phone number, a postal address, a birthday),
// named by its kind. A phone number is found by its last seven digits
// (deadLetterNeedles), however the reason spells it, and a value of fewer
// digits under a phone's key is none; an email address whole, case aside,
// and a value without an @ under an email's key (direct_mail
// "subscribed", which pii.KeyKind reads as one) is none; any other value,
// and each word of a name, when it stands as a word of its own, case
// aside, and is 3 characters or longer (a shorter one would refuse
// reasons for naming nothing of hers).
func reasonNames(reason string, erased map[identity.Identity]bool, traits []map[string]any) string {
	lower := strings.ToLower(reason)
	digits := strings.Map(func(r rune) rune {
		if i := strings.IndexRune(phoneSeparators, r); i >= 0 {
			if r >= '０' && r <= '９' {
				return '0' + (r - '０')
			}
			return -1
		}
		return r
	}, reason)
	holds := func(kind pii.Kind, v string) bool {
		switch kind {
		case pii.KindPhone:
			d := asciiDigits(v)
			return len(d) >= 7 && holdsDigits(digits, d[len(d)-7:])
		case pii.KindEmail:
			// An address has an @: a value without one under a key that
			// names an email is not one (direct_mail "subscribed").
			v = strings.ToLower(strings.TrimSpace(v))
			return strings.Contains(v, "@") && strings.Contains(lower, v)
		case pii.KindName:
			for _, w := range strings.FieldsFunc(strings.ToLower(v), func(r rune) bool {
				return !unicode.IsLetter(r) && !unicode.IsMark(r) && r != '\'' && r != '-'
			}) {
				if holdsWord(lower, w) {
					return true
				}
			}
		}
		return holdsWord(lower, strings.ToLower(strings.TrimSpace(v)))
	}
	for id := range erased {
		kind := pii.Kind("")
		switch id.Type {
		case identity.TypePhone:
			kind = pii.KindPhone
		case identity.TypeEmail:
			kind = pii.KindEmail
		}
		if holds(kind, id.Value) {
			return id.Type
		}
	}
	var found pii.Kind
	var walk func(kind pii.Kind, v any)
	walk = func(kind pii.Kind, v any) {
		switch v := v.(type) {
		case string:
			if kind != "" && found == "" && holds(kind, v) {
				found = kind
			}
		case map[string]any:
			for k, x := range v {
				if kk := pii.KeyKind(k); kk != "" {
					walk(kk, x)
				} else {
					walk(kind, x)
				}
			}
		case []any:
			for _, x := range v {
				walk(kind, x)
			}
		}
	}
	for _, t := range traits {
		walk("", t)
	}
	return string(found)
}

// holdsWord reports whether s holds w, 3 characters or longer, as a word
// of its own: neither a letter nor a digit next to it on either side.
func holdsWord(s, w string) bool {
	if utf8.RuneCountInString(w) < 3 {
		return false
	}
	for i := 0; ; {
		j := strings.Index(s[i:], w)
		if j < 0 {
			return false
		}
		start, end := i+j, i+j+len(w)
		before, _ := utf8.DecodeLastRuneInString(s[:start])
		after, _ := utf8.DecodeRuneInString(s[end:])
		if !wordRune(before) && !wordRune(after) {
			return true
		}
		_, size := utf8.DecodeRuneInString(s[start:])
		i = start + size
	}
}

func wordRune(r rune) bool { return unicode.IsLetter(r) || unicode.IsDigit(r) }

// holdsDigits reports whether s holds the digits d with no digit after
// them: a number that ends with them.
func holdsDigits(s, d string) bool {
	for i := 0; ; {
		j := strings.Index(s[i:], d)
		if j < 0 {
			return false
		}
		if end := i + j + len(d); end == len(s) || s[end] < '0' || s[end] > '9' {
			return true
		}
		i += j + 1
	}
}

// asciiDigits returns the digits of s, without what stands between them:
// a phone number's last seven of them find it however it is written
// (deadLetterNeedles, reasonNames).
func asciiDigits(s string) string {
	return strings.Map(func(r rune) rune {
		if '0' <= r && r <= '9' {
			return r
		}
		return -1
	}, s)
}
