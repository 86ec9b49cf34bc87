package postgres

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/c360dev/c360"
	"github.com/c360dev/c360/identity"
)

// mergeInto merges customer m into survivor s: identities, events,
// conversations, messages and consents move; traits combine by recency; m
// records where it went, so its id keeps resolving; the ledger says why.
// Both rows are locked by the caller.
func mergeInto(ctx context.Context, tx pgx.Tx, ws int64, s, m *customerRow, cause identity.Identity, eventID int64, actor string, now time.Time) error {
	return mergeLedger(ctx, tx, ws, s, m, cause, eventID, actor, fmt.Sprintf("%s %q links both customers", cause.Type, cause.Value), now)
}

// mergeSQL moves what customer $3 owns to $2 and records the merge. Each
// statement reads only the rows it moves, by an index:
//   - messages through the conversations of $3 (messages are indexed by
//     conversation, not by customer, which would cost every message write
//     an index entry). A message always belongs to its conversation's
//     customer: ingest appends a customer's message to one of its own
//     conversations, a merge moves both, and a split moves a conversation
//     with its messages or leaves the messages with it
//     (TestMergeMovesEveryMessage). The snapshot the statement reads is
//     the same for all its parts, so the conversations it reads are those
//     of $3 before c moves them.
//   - the customers merged into $3 by the partial index of merged customers
//     (migration 00012).
//   - the open conversations of $3 that close (shut): a customer has one
//     open conversation per channel and thread, which ingest appends to.
//     Where $2 has one open, $3's open ones there close, so that the
//     survivor's next message goes on in its own thread rather than the
//     merged customer's, which a split would then keep from its owner (a
//     conversation with messages of both sides stays with the original).
//     Where $2 has none, $3's newest open one (the one ingest appended
//     to) stays open. A conversation closed so is marked closed_by_merge
//     (migration 00020), and a split that gives it back to a side
//     without an open one there reopens it (reopenSQL). Read by $2's and
//     $3's conversations only.
//
// Both read every row of the workspace before (17 to 20 ms per merge at
// 20k customers, against 3.4; TestMergeAndSplitReadOnlyTheirCustomers).
//
// The merged row keeps its id, version and times, and loses its traits,
// their metadata and its search text: the survivor holds them now (the
// caller combines them from the row read before), nothing reads a merged
// row's (lookups follow merged_into, search reads live rows, a split
// rebuilds traits from events), and a person's data must not outlive its
// use in a row the erasure may not reach (a wrong merge undone by a
// split, docs/erasure.md).
//
// It returns the identities that moved (types and values in step), which
// the survivor's change names as identitiesAdded.
const mergeSQL = `
	WITH i AS (UPDATE identities SET customer_id = $2 WHERE workspace_id = $1 AND customer_id = $3 RETURNING type, value),
	     e AS (UPDATE events SET customer_id = $2 WHERE workspace_id = $1 AND customer_id = $3),
	     shut AS (SELECT v.id FROM conversations v
	              WHERE v.workspace_id = $1 AND v.customer_id = $3 AND v.status = 'open'
	                AND EXISTS (SELECT 1 FROM conversations o
	                            WHERE o.workspace_id = $1 AND o.customer_id IN ($2, $3) AND o.status = 'open'
	                              AND o.channel = v.channel AND o.thread_key = v.thread_key
	                              AND (o.customer_id = $2 OR o.id > v.id))),
	     c AS (UPDATE conversations v SET customer_id = $2,
	                  status = CASE WHEN v.id IN (SELECT id FROM shut) THEN 'closed' ELSE v.status END,
	                  closed_by_merge = v.closed_by_merge OR v.id IN (SELECT id FROM shut)
	           WHERE v.workspace_id = $1 AND v.customer_id = $3),
	     g AS (UPDATE messages SET customer_id = $2 WHERE workspace_id = $1 AND customer_id = $3
	           AND conversation_id IN (SELECT v.id FROM conversations v WHERE v.workspace_id = $1 AND v.customer_id = $3)),
	     o AS (UPDATE observations SET customer_id = $2 WHERE workspace_id = $1 AND customer_id = $3),
	     -- Merged customers that pointed at m now point at s: one hop always reaches the survivor.
	     r AS (UPDATE customers SET merged_into = $2 WHERE workspace_id = $1 AND merged_into = $3),
	     l AS (INSERT INTO merges (workspace_id, kind, survivor_id, merged_id, identity_type, identity_value, event_id, reason, actor, created_at)
	           VALUES ($1, 'merge', $2, $3, nullif($4, ''), nullif($5, ''), $6, $7, $8, $9))
	UPDATE customers SET merged_into = $2, version = version + 1, updated_at = $9,
		traits = '{}', trait_meta = '{}', search_text = ''
	WHERE workspace_id = $1 AND id = $3
	RETURNING (SELECT coalesce(array_agg(type ORDER BY type, value), '{}') FROM i),
		(SELECT coalesce(array_agg(value ORDER BY type, value), '{}') FROM i)`

// mergeConsentsSQL moves the consents of customer $3 to $2, the newer
// decision per channel winning, and returns the channels whose status on
// $2 changed: those $2 had no decision on, and those where $3's newer
// decision differs. old reads $2's consents as they were before the
// statement: every part of it sees the same snapshot.
const mergeConsentsSQL = `
	WITH old AS (SELECT channel, status FROM consents WHERE workspace_id = $1 AND customer_id = $2),
	moved AS (DELETE FROM consents WHERE workspace_id = $1 AND customer_id = $3 RETURNING channel, status, source, updated_at),
	up AS (
		INSERT INTO consents (workspace_id, customer_id, channel, status, source, updated_at)
		SELECT $1, $2, channel, status, source, updated_at FROM moved
		ON CONFLICT (workspace_id, customer_id, channel) DO UPDATE
		SET status = excluded.status, source = excluded.source, updated_at = excluded.updated_at
		WHERE consents.updated_at < excluded.updated_at
		RETURNING channel, status)
	SELECT up.channel, up.status FROM up LEFT JOIN old ON old.channel = up.channel
	WHERE old.status IS DISTINCT FROM up.status
	ORDER BY up.channel`

// mergeLedger is mergeInto with the ledger's reason given.
func mergeLedger(ctx context.Context, tx pgx.Tx, ws int64, s, m *customerRow, cause identity.Identity, eventID int64, actor, reason string, now time.Time) error {
	var evID *int64
	if eventID != 0 {
		evID = &eventID
	}
	var types, values []string
	err := tx.QueryRow(ctx, mergeSQL, ws, s.id, m.id, cause.Type, cause.Value, evID, reason, actor, now).Scan(&types, &values)
	if err != nil {
		return interpretError(fmt.Errorf("merge customer %d into %d: %w", m.id, s.id, err))
	}
	for i := range types {
		s.identAdds = append(s.identAdds, identity.Identity{Type: types[i], Value: values[i]})
	}
	// Consents: the newer decision per channel wins.
	rows, err := tx.Query(ctx, mergeConsentsSQL, ws, s.id, m.id)
	if err != nil {
		return interpretError(fmt.Errorf("merge consents: %w", err))
	}
	var channel, status string
	_, err = pgx.ForEachRow(rows, []any{&channel, &status}, func() error {
		s.consentChanges = setConsentChange(s.consentChanges, channel, status)
		return nil
	})
	if err != nil {
		return interpretError(fmt.Errorf("merge consents: %w", err))
	}
	diff, _ := json.Marshal(map[string]any{"survivorId": fmt.Sprint(s.id), "cause": cause})
	if _, err := tx.Exec(ctx, `
		INSERT INTO customer_changes (workspace_id, customer_id, version, kind, diff, created_at)
		VALUES ($1, $2, $3, $4, $5, $6)`, ws, m.id, m.version+1, c360.ChangeMergedInto, diff, now); err != nil {
		return interpretError(fmt.Errorf("record merge change: %w", err))
	}
	m.version++
	// Traits: per trait, the newer observation wins; an ordinary one
	// beats a weak one unless the weak one filled over a newer clear
	// (traitMeta.Weak, Floor).
	for k, v := range m.traits {
		mm, ok := m.meta[k]
		if sm, has := s.meta[k]; has && ok && survivorKeeps(sm, mm) {
			continue
		} else if has && !ok {
			continue
		}
		if old, had := s.traits[k]; !had || !jsonEqual(old, v) {
			if s.traitChanges == nil {
				s.traitChanges = map[string]any{}
			}
			s.traitChanges[k] = v
		}
		s.traits[k] = v
		if ok {
			s.meta[k] = mm
		}
	}
	s.merged = append(s.merged, m.id)
	return nil
}

// rulesCache keeps each workspace's identity rules for a few seconds, so
// ingest does not read them on every event.
type rulesCache struct {
	m sync.Map // workspace id -> *rulesEntry
	// updates counts UpdateIdentityRules's updates, as db.revocations
	// counts revocations for the key cache: a read of the rules that began
	// before an update committed caches its rules only if no update came
	// since.
	updates atomic.Uint64
}

type rulesEntry struct {
	rules   identity.Rules
	expires time.Time
	// gen is updates when the rules were read: an entry of an earlier
	// generation is never served, so rules read before an update are not
	// either, even in the moment before the reader that cached them
	// takes them back.
	gen uint64
}

const rulesTTL = 5 * time.Second

func (db *DB) identityRules(ctx context.Context, ws int64) (identity.Rules, error) {
	gen := db.rules.updates.Load()
	if v, ok := db.rules.m.Load(ws); ok && v.(*rulesEntry).gen == gen && time.Now().Before(v.(*rulesEntry).expires) {
		return v.(*rulesEntry).rules, nil
	}
	rules, err := db.loadRules(ctx, ws)
	if err != nil {
		return identity.Rules{}, err
	}
	rules = rules.WithNormalizedBlocked(db.Normalizer)
	// The rules read may predate an update that committed since: they are
	// cached under the count read before them, which such an update has
	// moved on, so the next read does not serve them.
	db.rules.m.Store(ws, &rulesEntry{rules: rules, expires: time.Now().Add(rulesTTL), gen: gen})
	return rules, nil
}

// loadRules reads the workspace's rules, or the defaults when it has none.
func (db *DB) loadRules(ctx context.Context, ws int64) (identity.Rules, error) {
	var raw []byte
	err := db.app.QueryRow(ctx, `SELECT identity_rules FROM workspaces WHERE id = $1`, ws).Scan(&raw)
	if err != nil {
		return identity.Rules{}, interpretError(fmt.Errorf("load identity rules: %w", err))
	}
	rules := identity.DefaultRules()
	if raw != nil {
		rules = identity.Rules{}
		if err := json.Unmarshal(raw, &rules); err != nil {
			return identity.Rules{}, fmt.Errorf("decode identity rules: %w", err)
		}
	}
	return rules, nil
}

// survivorKeeps reports whether a merge keeps the survivor's observation
// sm of a trait against the merged customer's mm: the newer of two of a
// kind, an ordinary one against a weak one not over a newer clear, a weak
// one over a clear newer than the ordinary one.
func survivorKeeps(sm, mm traitMeta) bool {
	switch {
	case sm.Weak == mm.Weak:
		return sm.At.After(mm.At)
	case mm.Weak:
		return !mm.Floor.After(sm.At)
	default:
		return sm.Floor.After(mm.At)
	}
}
