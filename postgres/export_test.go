package postgres

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/c360dev/c360"
	"github.com/c360dev/c360/identity"
)

// Statements whose plans tests inspect.
var PlannedStatements = map[string]struct {
	SQL  string
	Args func(ws, customer int64) []any
}{
	"FindCustomerByID": {`SELECT ` + findCustomerByIDSQL, func(ws, c int64) []any { return []any{ws, c} }},
	"CustomersByIDs":   {customersByIDsSQL, func(ws, c int64) []any { return []any{ws, []int64{c}} }},
	// By id; by identity ($2, $3) is the same generic plan.
	"CustomerContext":        {contextSQL, func(ws, c int64) []any { return []any{ws, nil, nil, c, nil, nil, 10, 5, 100, 10, 10, 10} }},
	"AuditEntriesOfCustomer": {auditEntriesOfCustomerSQL, func(ws, c int64) []any { return []any{ws, nil, nil, nil, 21, c} }},
}

// ProfileStatements returns the statements FindProfile queues after its
// lookup, with their arguments: every part, with the conversations'
// messages (withMessages) or without.
func ProfileStatements(ws int64, withMessages bool) (sql []string, args [][]any) {
	req := c360.ProfileRequest{Identities: true, Consents: true,
		Events: []c360.PageArgs{{First: 20}}, Conversations: []c360.PageArgs{{First: 5}}}
	if withMessages {
		req.Messages = &c360.PageArgs{First: 10}
	}
	p := newPipeline(ws)
	p.lookedUp = true // as FindProfile's lookup, queued first, makes it
	if _, err := queueProfiles(p, ws, nil, req); err != nil {
		panic(err)
	}
	return statementsOf(p.batch.QueuedQueries[1:])
}

// statementsOf lists queued statements' SQL and arguments.
func statementsOf(qs []*pgx.QueuedQuery) (sql []string, args [][]any) {
	for _, q := range qs {
		sql, args = append(sql, q.SQL), append(args, q.Arguments)
	}
	return sql, args
}

// FindProfileWithFailingPart is FindProfile whose one part fails in
// PostgreSQL (a division by zero) after the lookup has run.
func (db *DB) FindProfileWithFailingPart(ctx context.Context, ws int64, key c360.CustomerKey) (*c360.Customer, *c360.Profiles, error) {
	return db.findProfile(ctx, ws, key, func(p *pipeline) (*c360.Profiles, error) {
		p.queue("failing", `SELECT 1/0`, nil, func(pgx.Rows) error { return nil })
		return &c360.Profiles{}, nil
	})
}

// IngestHeld applies ev on the per-event path in a transaction that closes
// ready once the event is applied and commits only when hold closes.
func (db *DB) IngestHeld(ctx context.Context, ws int64, ev *c360.Event, ready chan<- struct{}, hold <-chan struct{}) error {
	rules, err := db.identityRules(ctx, ws)
	if err != nil {
		return err
	}
	p, err := db.prepare(ev, rules)
	if err != nil {
		return err
	}
	p.encode()
	return db.inTx(ctx, ws, func(tx pgx.Tx) error {
		if _, _, err := db.ingestOne(ctx, tx, ws, rules, &p); err != nil {
			return err
		}
		close(ready)
		<-hold
		return nil
	})
}

// IngestPerEventOnly applies ev on the per-event path alone, in a
// transaction of its own, and returns its result.
func (db *DB) IngestPerEventOnly(ctx context.Context, ws int64, ev *c360.Event) (c360.IngestResult, error) {
	rules, prepared, err := db.prepareAll(ctx, ws, []*c360.Event{ev})
	if err != nil {
		return c360.IngestResult{}, err
	}
	var res c360.IngestResult
	err = db.inTx(ctx, ws, func(tx pgx.Tx) error {
		var err error
		res, _, err = db.ingestOne(ctx, tx, ws, rules, prepared[0])
		return err
	})
	return res, err
}

// FlushNow sends the notifier's pending notifications now.
func (n *Notifier) FlushNow(ctx context.Context) bool {
	n.init()
	return n.flush(ctx)
}

// PendingCount is how many (workspace, customer) pairs wait, and whether a
// workspace waits whole.
func (n *Notifier) PendingCount() (pairs int, whole bool) {
	n.init()
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, set := range n.pending {
		if set == nil {
			whole = true
		}
		pairs += len(set)
	}
	return pairs, whole
}

// ForgetAPIKeys empties this process's caches of verified keys, as another
// process that never saw them would have.
func (db *DB) ForgetAPIKeys() {
	db.authCache.Clear()
}

// AfterKeyRead sets a function to run after a key's row is read and before
// the key is cached (nil: none).
func (db *DB) AfterKeyRead(f func()) { db.afterKeyRead = f }

// BeforeCustomerLock sets a function to run in a manual merge or a split
// between the read of the customers' survivors and the lock of their rows
// (nil: none).
func (db *DB) BeforeCustomerLock(f func()) { db.beforeCustomerLock = f }

// Setting returns a setting as the migrator's connections see it.
func (m *Migrator) Setting(ctx context.Context, t testing.TB, name string) string {
	t.Helper()
	var v string
	if err := m.db.QueryRowContext(ctx, "SHOW "+name).Scan(&v); err != nil {
		t.Fatal(err)
	}
	return v
}

// HoldAppConns acquires n connections of the tenant pool, as requests in
// flight hold them, until the test ends.
func (db *DB) HoldAppConns(t testing.TB, n int) {
	for range n {
		c, err := db.app.Acquire(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(c.Release)
	}
}

// SetMigrationLockPoll makes waiting migrators try the lock every d until
// the test ends.
func SetMigrationLockPoll(t testing.TB, d time.Duration) {
	old := migrationLockPoll
	migrationLockPoll = d
	t.Cleanup(func() { migrationLockPoll = old })
}

// UpTo applies the migrations up to version v.
func (m *Migrator) UpTo(ctx context.Context, v int64) error {
	_, err := m.provider.UpTo(ctx, v)
	return err
}

// DownTo rolls the migrations back to version v.
func (m *Migrator) DownTo(ctx context.Context, v int64) error {
	_, err := m.provider.DownTo(ctx, v)
	return err
}

// GroupWriteStatements returns the statements a group's flush sends for n
// existing customers, each with one inbound message in an existing
// conversation: every SQL text, in order, with its arguments.
func GroupWriteStatements(ws int64, n int) (sql []string, args [][]any) {
	now := time.Now()
	w := newGroupWrites(ws, now)
	st := &groupState{cust: map[int64]*customerRow{}}
	for i := range int64(n) {
		c := &customerRow{id: i + 1, traits: map[string]any{}, meta: map[string]traitMeta{}, version: 2, traitsDirty: true}
		st.cust[c.id] = c
		ev := &c360.Event{OccurredAt: now, Message: &c360.MessageInput{Channel: "sms", Direction: c360.DirectionInbound, Body: "hi"}}
		w.message(1000+i, 2000+i, c.id, 3000+i, ev)
		w.change(c, "event", map[string]any{})
	}
	return statementsOf(w.queue(st).QueuedQueries)
}

// ArrayRead is the batch of a read over an array of ids, from its
// workspace's scoping on: every SQL text in order (its SETs too), with its
// arguments.
type ArrayRead struct {
	SQL  []string
	Args [][]any
}

// ArrayReads returns, by name, the reads over arrays of ids, each for n
// ids.
func ArrayReads(ws int64, n int) map[string]ArrayRead {
	ids := make([]int64, n)
	for i := range ids {
		ids[i] = int64(i + 1)
	}
	var b pgx.Batch
	queueCustomersByIDs(&b, ws, ids)
	var customers ArrayRead
	customers.SQL, customers.Args = statementsOf(b.QueuedQueries)
	return map[string]ArrayRead{
		"MergesByCustomers": {[]string{mergesByCustomersSQL}, [][]any{{ws, ids}}},
		"CustomersByIDs":    customers,
	}
}

// MergeAndSplitStatements returns, by name, the statements of a merge and
// of a split that move a customer's rows, and the read of the separations
// of candidates for a merge, with their arguments.
func MergeAndSplitStatements(ws, survivor, merged int64) map[string]ArrayRead {
	return map[string]ArrayRead{
		"merge":       {[]string{mergeSQL}, [][]any{{ws, survivor, merged, "", "", nil, "", "", time.Now()}}},
		"split":       {[]string{splitMoveSQL}, [][]any{{ws, merged, survivor, []byte(`[]`), "phone", "+1", `phone "+1":`, []string{"email"}, []string{"a@b.io"}, []string{`email "a@b.io":`}}}},
		"reopen":      {[]string{reopenSQL}, [][]any{{ws, survivor, merged}}},
		"separations": {[]string{separationsSQL}, [][]any{{ws, []int64{survivor, merged}}}},
	}
}

// SearchCustomersSQL is FindCustomers' statement for a search: $1
// workspace, $2 page size, $3 LIKE patterns, $4 and $5 the cursor or NULL.
const SearchCustomersSQL = searchCustomersSQL

// SearchPatterns are the LIKE patterns of FindCustomers' search for q.
func SearchPatterns(db *DB, q string) []string { return db.searchPatterns(q) }

// AuditWakes counts the times requests and Flush woke w's writer.
func AuditWakes(w *AuditWriter) int64 { return w.wakes.Load() }

// AuditWakePending reports whether a wake waits for w's writer.
func AuditWakePending(w *AuditWriter) bool { return len(w.wake) > 0 }

// AuditWriting reports whether w's writer is in a pass.
func AuditWriting(w *AuditWriter) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.writing
}

// GroupLockTimeout returns the lock_timeout a group's transaction in ws
// runs with (groupBeginSQL), as PostgreSQL shows it.
//
// A session whose statement_timeout is a few milliseconds (the test's
// floor case) may see these two short statements cancelled on a busy
// machine: that is the setting at work, not what is tested, so they are
// tried again.
func (db *DB) GroupLockTimeout(ctx context.Context, ws int64) (s string, err error) {
	// A statement_timeout of a few milliseconds cancels the reading itself
	// on a busy machine (make test runs packages side by side): tried
	// again, spaced out, for up to about 2 s of such load.
	for range 100 {
		s, err = db.groupLockTimeout(ctx, ws)
		var pe *pgconn.PgError
		if !errors.As(err, &pe) || pe.Code != "57014" {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	return s, err
}

func (db *DB) groupLockTimeout(ctx context.Context, ws int64) (string, error) {
	tx, err := db.app.BeginTx(ctx, pgx.TxOptions{BeginQuery: groupBeginSQL(ws)})
	if err != nil {
		return "", err
	}
	defer tx.Rollback(ctx)
	var s string
	err = tx.QueryRow(ctx, `SHOW lock_timeout`).Scan(&s)
	return s, err
}

// SetEraseStatementTimeout bounds EraseCustomer's statements by d until the
// test ends.
func SetEraseStatementTimeout(t testing.TB, d time.Duration) {
	old := eraseStatementTimeout
	eraseStatementTimeout = d
	t.Cleanup(func() { eraseStatementTimeout = old })
}

// SetSearchTimeout bounds a customer search by fragment by d until the
// test ends.
func SetSearchTimeout(t testing.TB, d time.Duration) {
	old := searchTimeout
	searchTimeout = d
	t.Cleanup(func() { searchTimeout = old })
}

// SetKeyPrefixes makes the next API keys take these prefixes, one each, in
// order, then random ones again, until the test ends.
func SetKeyPrefixes(t testing.TB, prefixes ...string) {
	old := newKeyPrefix
	var mu sync.Mutex
	newKeyPrefix = func() string {
		mu.Lock()
		defer mu.Unlock()
		if len(prefixes) == 0 {
			return old()
		}
		p := prefixes[0]
		prefixes = prefixes[1:]
		return p
	}
	t.Cleanup(func() { newKeyPrefix = old })
}

// RenormalizeEmails runs migration 00021 (emailForm) on db's database
// with db's normalizer, reading and writing pages of page rows, and logs
// to log.
func RenormalizeEmails(ctx context.Context, db *DB, page int, log *slog.Logger) error {
	return RenormalizeEmailsAfter(ctx, db, page, log, func() {})
}

// RenormalizeEmailsAfter is RenormalizeEmails calling ready once the
// migrator is open, just before the migration runs.
func RenormalizeEmailsAfter(ctx context.Context, db *DB, page int, log *slog.Logger, ready func()) error {
	m, err := db.NewMigrator()
	if err != nil {
		return err
	}
	defer m.Close()
	defer func(p int) { emailFormPage = p }(emailFormPage)
	emailFormPage = page
	f := emailForm{normalizer: func() identity.Normalizer { return db.Normalizer }, log: func() *slog.Logger { return log }}
	ready()
	return f.up(ctx, m.db)
}

// RecordReplayFailure is what a replay refused before ingest's
// transaction records on its letter.
func (db *DB) RecordReplayFailure(ctx context.Context, ws, id int64, cause error) error {
	return db.recordReplayFailure(ctx, ws, id, cause)
}
