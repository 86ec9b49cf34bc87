package postgres

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/c360dev/c360"
)

// RecordAudit stores audit entries now, one statement per workspace, in one
// round trip and one transaction.
func (db *DB) RecordAudit(ctx context.Context, entries []*c360.AuditEntry) error {
	if len(entries) == 0 {
		return nil
	}
	byWS := map[int64][]*c360.AuditEntry{}
	var order []int64
	for _, e := range entries {
		if _, ok := byWS[e.WorkspaceID]; !ok {
			order = append(order, e.WorkspaceID)
		}
		byWS[e.WorkspaceID] = append(byWS[e.WorkspaceID], e)
	}
	slices.Sort(order)
	// One round trip, where a transaction took four: a batch runs as one
	// implicit transaction, so each workspace's setting is local to it and
	// the entries are written all or none. A deadlock is tried again, as a
	// transaction would be.
	args := make([][]any, len(order))
	for i, ws := range order {
		a, err := auditArgs(ws, byWS[ws])
		if err != nil {
			return err
		}
		args[i] = a
	}
	err := retry(ctx, func() error {
		b := &pgx.Batch{}
		for i, ws := range order {
			b.Queue(setWorkspaceSQL, strconv.FormatInt(ws, 10))
			b.Queue(insertAuditSQL, args[i]...)
		}
		return db.app.SendBatch(ctx, b).Close()
	})
	if err != nil {
		return interpretError(fmt.Errorf("insert audit entries: %w", err))
	}
	return nil
}

// insertAuditSQL inserts one workspace's entries, in one statement. Arrays
// of columns, not COPY: COPY FROM is refused on tables under row-level
// security.
const insertAuditSQL = `
	INSERT INTO audit_log (workspace_id, at, key_id, actor, role, action, customer_id, fields, detail)
	SELECT $1, a.at, a.key_id, a.actor, a.role, a.action, a.customer_id,
	       ARRAY(SELECT jsonb_array_elements_text(a.fields)), a.detail
	FROM unnest($2::timestamptz[], $3::bigint[], $4::text[], $5::text[], $6::text[], $7::bigint[], $8::jsonb[], $9::jsonb[])
	     AS a(at, key_id, actor, role, action, customer_id, fields, detail)`

// auditArgs are insertAuditSQL's arguments for one workspace's entries.
func auditArgs(ws int64, entries []*c360.AuditEntry) ([]any, error) {
	n := len(entries)
	var (
		at        = make([]time.Time, n)
		keyIDs    = make([]*int64, n)
		actors    = make([]string, n)
		roles     = make([]*string, n)
		actions   = make([]string, n)
		customers = make([]*int64, n)
		fields    = make([]string, n)
		details   = make([]string, n)
	)
	for i, e := range entries {
		at[i], actors[i], actions[i] = e.At, e.Actor, e.Action
		if at[i].IsZero() {
			at[i] = time.Now()
		}
		if e.KeyID != 0 {
			keyIDs[i] = &e.KeyID
		}
		if e.Role != "" {
			r := string(e.Role)
			roles[i] = &r
		}
		if e.CustomerID != 0 {
			customers[i] = &e.CustomerID
		}
		f := e.Fields
		if f == nil {
			f = []string{}
		}
		b, err := json.Marshal(f)
		if err != nil {
			return nil, fmt.Errorf("encode audit fields: %w", err)
		}
		fields[i] = string(b)
		d := e.Detail
		if d == nil {
			d = map[string]any{}
		}
		if b, err = json.Marshal(d); err != nil {
			return nil, fmt.Errorf("encode audit detail: %w", err)
		}
		details[i] = string(b)
	}
	return []any{ws, at, keyIDs, actors, roles, actions, customers, fields, details}, nil
}

// auditEntriesSQL reads a page of the workspace's audit log, newest first:
// $2 an action or NULL, ($3, $4) the cursor or NULL, $5 the page size.
const auditEntriesSQL = `
	SELECT id, at, coalesce(key_id, 0), actor, coalesce(role, ''), action, coalesce(customer_id, 0), fields, detail
	FROM audit_log
	WHERE workspace_id = $1
	  AND ($2::text IS NULL OR action = $2)
	  AND ($3::timestamptz IS NULL OR (at, id) < ($3, $4))
	ORDER BY at DESC, id DESC
	LIMIT $5`

// auditEntriesOfCustomerSQL is auditEntriesSQL for the customer $6: the
// survivor it resolves to and every customer merged into that survivor
// (one hop reaches it: merges repoint), each read by the customer index
// for a page of its own, and $6 itself, which an erased customer's entries
// keep. Entries recorded for a customer before it was merged are then its
// survivor's, as its events are.
const auditEntriesOfCustomerSQL = `
	WITH s AS (
		SELECT coalesce((SELECT coalesce(m.merged_into, m.id) FROM customers m WHERE m.workspace_id = $1 AND m.id = $6), $6) AS id
	), k AS (
		SELECT $6::bigint AS id
		UNION SELECT s.id FROM s
		UNION SELECT x.id FROM s JOIN customers x ON x.workspace_id = $1 AND x.merged_into = s.id
	)
	SELECT a.* FROM k CROSS JOIN LATERAL (
		SELECT id, at, coalesce(key_id, 0), actor, coalesce(role, ''), action, coalesce(customer_id, 0), fields, detail
		FROM audit_log
		WHERE workspace_id = $1 AND customer_id = k.id
		  AND ($2::text IS NULL OR action = $2)
		  AND ($3::timestamptz IS NULL OR (at, id) < ($3, $4))
		ORDER BY at DESC, id DESC
		LIMIT $5) a
	ORDER BY a.at DESC, a.id DESC
	LIMIT $5`

// FindAuditEntries returns a page of the workspace's audit log, newest
// first. A customer filter follows merges (auditEntriesOfCustomerSQL).
func (db *DB) FindAuditEntries(ctx context.Context, ws int64, f c360.AuditFilter) ([]*c360.AuditEntry, []string, bool, error) {
	n, err := pageSize(f.First)
	if err != nil {
		return nil, nil, false, err
	}
	var (
		afterAt *time.Time
		afterID *int64
	)
	if f.After != "" {
		cur, err := c360.DecodeCursor(f.After, c360.ListAudit)
		if err != nil {
			return nil, nil, false, err
		}
		afterAt, afterID = &cur.Time, &cur.ID
	}
	var action *string
	if f.Action != "" {
		action = &f.Action
	}
	sql, args := auditEntriesSQL, []any{ws, action, afterAt, afterID, n + 1}
	if f.CustomerID != 0 {
		sql, args = auditEntriesOfCustomerSQL, append(args, f.CustomerID)
	}
	rows, err := db.as(ws).Query(ctx, sql, args...)
	if err != nil {
		return nil, nil, false, interpretError(fmt.Errorf("find audit entries: %w", err))
	}
	defer rows.Close()
	var (
		out     []*c360.AuditEntry
		cursors []string
		more    bool
	)
	for rows.Next() {
		e := &c360.AuditEntry{WorkspaceID: ws}
		var role string
		if err := rows.Scan(&e.ID, &e.At, &e.KeyID, &e.Actor, &role, &e.Action, &e.CustomerID, &e.Fields, &e.Detail); err != nil {
			return nil, nil, false, fmt.Errorf("scan audit entry: %w", err)
		}
		e.Role = c360.Role(role)
		if len(out) == n {
			more = true
			break
		}
		out = append(out, e)
		cursors = append(cursors, c360.Cursor{List: c360.ListAudit, Time: e.At, ID: e.ID}.Encode())
	}
	if err := rows.Err(); err != nil {
		return nil, nil, false, interpretError(fmt.Errorf("find audit entries: %w", err))
	}
	return out, cursors, more, nil
}

// AuditWriterConfig tunes an AuditWriter; zero values take the defaults.
type AuditWriterConfig struct {
	// MaxPending bounds the entries waiting to be written or being
	// written (default 50,000). Entries that would exceed it are dropped,
	// counted and logged.
	MaxPending int
	// MaxBatch bounds the entries written in one transaction (default 1,000).
	MaxBatch int
	// Linger is how long the writer gathers entries after the first before
	// it writes them (default 20 ms), unless a batch fills or a Flush or
	// Close asks first. Without it, one request at a time would cost one
	// durable transaction per request; with it, a steady stream of reads
	// costs about 1/Linger transactions a second.
	Linger time.Duration
	// CloseTimeout bounds how long Close goes on writing (default 10 s):
	// the pass under way and what is still queued.
	CloseTimeout time.Duration
	Logger       *slog.Logger
}

// AuditWriter is the audit log as the GraphQL layer uses it: reads are
// queued (EnqueueAudit) and written in batches by one background goroutine,
// off the request path; changes are written at once (RecordAudit). It
// implements c360.AuditLog.
//
// Durability of queued reads is best-effort: the queue is bounded, so when
// the database falls behind by more than MaxPending entries, further
// entries are dropped (Dropped counts them, and a warning is logged at most
// every 10 s), and entries still queued when the process dies are lost.
// Close writes what is queued. The alternative, writing reads on the
// request path, would make every read wait on a write.
//
// The queue is a slice under a mutex, not a channel: a request appends its
// entries and wakes the writer only when it finds the queue empty (the
// linger starts) or fills a batch, so a steady stream of reads costs a
// wake per batch instead of one per request, which each request paid in
// a futex call on its own path.
type AuditWriter struct {
	db  *DB
	cfg AuditWriterConfig

	mu       sync.Mutex
	queued   []*c360.AuditEntry
	flushes  []auditFlush
	closed   bool
	writing  bool  // a pass is writing what it took
	inflight int   // the entries it took
	lastErr  error // the first error of the last pass

	// ctx is every write's; Close cancels it CloseTimeout after it is
	// called, whatever a pass is waiting for.
	ctx    context.Context
	cancel context.CancelFunc

	wake    chan struct{} // capacity 1: something for the writer to do
	wakes   atomic.Int64  // sent on wake, for tests
	dropped atomic.Int64
	stop    chan struct{}
	done    chan struct{}
	once    sync.Once

	warnMu   sync.Mutex
	lastWarn time.Time
}

// auditFlush is a Flush waiting for the entries queued before it.
type auditFlush struct {
	done chan error
	// afterWrite is set when a pass was writing as the Flush came: some of
	// the entries before it were in that pass, whose error it reports.
	afterWrite bool
}

var _ c360.AuditLog = (*AuditWriter)(nil)

// NewAuditWriter starts the background writer; Close stops it.
func NewAuditWriter(db *DB, cfg AuditWriterConfig) *AuditWriter {
	if cfg.MaxPending <= 0 {
		cfg.MaxPending = 50_000
	}
	if cfg.MaxBatch <= 0 {
		cfg.MaxBatch = 1000
	}
	if cfg.Linger <= 0 {
		cfg.Linger = 20 * time.Millisecond
	}
	if cfg.CloseTimeout <= 0 {
		cfg.CloseTimeout = 10 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	w := &AuditWriter{db: db, cfg: cfg, wake: make(chan struct{}, 1),
		stop: make(chan struct{}), done: make(chan struct{})}
	w.ctx, w.cancel = context.WithCancel(context.Background())
	go w.run()
	return w
}

// RecordAudit writes entries now.
func (w *AuditWriter) RecordAudit(ctx context.Context, entries []*c360.AuditEntry) error {
	return w.db.RecordAudit(ctx, entries)
}

// FindAuditEntries lists the audit log.
func (w *AuditWriter) FindAuditEntries(ctx context.Context, ws int64, f c360.AuditFilter) ([]*c360.AuditEntry, []string, bool, error) {
	return w.db.FindAuditEntries(ctx, ws, f)
}

// EnqueueAudit queues entries for the background writer. It never blocks
// on the writer: when the queue is full, or the writer closed, the entries
// are dropped.
func (w *AuditWriter) EnqueueAudit(entries []*c360.AuditEntry) {
	if len(entries) == 0 {
		return
	}
	w.mu.Lock()
	if w.closed || len(w.queued)+w.inflight+len(entries) > w.cfg.MaxPending {
		w.mu.Unlock()
		w.drop(len(entries), "queue full")
		return
	}
	first := len(w.queued) == 0
	w.queued = append(w.queued, entries...)
	full := len(w.queued) >= w.cfg.MaxBatch
	w.mu.Unlock()
	if first || full {
		w.signal()
	}
}

// signal wakes the writer, or leaves the wake it has not taken yet.
func (w *AuditWriter) signal() {
	select {
	case w.wake <- struct{}{}:
		w.wakes.Add(1)
	default:
	}
}

// Dropped returns how many entries were dropped since the writer started.
func (w *AuditWriter) Dropped() int64 { return w.dropped.Load() }

// Pending returns how many entries wait to be written: queued, or in the
// batch being written.
func (w *AuditWriter) Pending() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.queued) + w.inflight
}

func (w *AuditWriter) drop(n int, why string) {
	total := w.dropped.Add(int64(n))
	w.warnMu.Lock()
	defer w.warnMu.Unlock()
	if time.Since(w.lastWarn) < 10*time.Second {
		return
	}
	w.lastWarn = time.Now()
	w.cfg.Logger.Warn("audit: entries dropped", "reason", why, "dropped", n, "droppedTotal", total)
}

// Flush waits until every entry queued before the call is written (or its
// write failed, which it returns). Tests use it to assert the rows.
func (w *AuditWriter) Flush(ctx context.Context) error {
	ch := make(chan error, 1)
	w.mu.Lock()
	if w.closed {
		w.mu.Unlock()
		return fmt.Errorf("audit writer closed")
	}
	w.flushes = append(w.flushes, auditFlush{done: ch, afterWrite: w.writing})
	w.mu.Unlock()
	w.signal()
	select {
	case err := <-ch:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Close stops accepting entries, writes what is queued (for at most
// CloseTimeout, the pass under way included), and stops the writer. Call
// it after the HTTP server has shut down.
func (w *AuditWriter) Close() {
	w.once.Do(func() {
		w.mu.Lock()
		w.closed = true
		w.mu.Unlock()
		close(w.stop)
		deadline := time.AfterFunc(w.cfg.CloseTimeout, w.cancel)
		<-w.done
		deadline.Stop()
		w.cancel()
	})
	<-w.done
}

func (w *AuditWriter) run() {
	defer close(w.done)
	linger := time.NewTimer(time.Hour)
	linger.Stop()
	for {
		select {
		case <-w.wake:
		case <-w.stop:
			w.writeQueued()
			return
		}
		// Gather for the linger; a full batch, a Flush or Close cuts it short.
		w.mu.Lock()
		idle, urgent := len(w.queued) == 0 && len(w.flushes) == 0, len(w.flushes) > 0 || len(w.queued) >= w.cfg.MaxBatch
		w.mu.Unlock()
		if idle {
			continue // a wake for what an earlier pass wrote
		}
		if !urgent {
			linger.Reset(w.cfg.Linger)
			select {
			case <-linger.C:
			case <-w.wake:
			case <-w.stop:
			}
			linger.Stop()
		}
		w.writeQueued()
	}
}

// writeQueued takes what is queued and the Flushes waiting, writes the
// entries in batches of at most MaxBatch (each within 30 s, and all before
// Close's deadline), and answers the Flushes. What comes meanwhile waits
// for the next pass, and its linger.
func (w *AuditWriter) writeQueued() {
	w.mu.Lock()
	entries, flushes, before := w.queued, w.flushes, w.lastErr
	w.queued, w.flushes, w.writing, w.inflight = nil, nil, true, len(entries)
	w.mu.Unlock()
	var first error
	for batch := range slices.Chunk(entries, w.cfg.MaxBatch) {
		bctx, cancel := context.WithTimeout(w.ctx, 30*time.Second)
		if err := w.write(bctx, batch); err != nil && first == nil {
			first = err
		}
		cancel()
	}
	w.mu.Lock()
	w.writing, w.inflight, w.lastErr = false, 0, first
	w.mu.Unlock()
	for _, f := range flushes {
		err := first
		if f.afterWrite && before != nil {
			err = before
		}
		f.done <- err
	}
}

// write stores a batch, retrying briefly; a batch that still fails is
// dropped and logged, so a database outage never grows memory.
func (w *AuditWriter) write(ctx context.Context, batch []*c360.AuditEntry) error {
	if len(batch) == 0 {
		return nil
	}
	var err error
	for attempt := 0; attempt < 3; attempt++ {
		if err = w.db.RecordAudit(ctx, batch); err == nil {
			return nil
		}
		select {
		case <-time.After(time.Duration(100<<attempt) * time.Millisecond):
		case <-ctx.Done():
			attempt = 3
		}
	}
	w.dropped.Add(int64(len(batch)))
	w.cfg.Logger.Error("audit: write failed; entries dropped", "entries", len(batch), "error", err)
	return fmt.Errorf("write audit entries: %w", err)
}
