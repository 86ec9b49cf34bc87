package postgres

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/c360dev/c360"
)

// This file is the read side of the change feed for the real-time hub, the
// batched NOTIFY that tells other replicas which feeds grew, and the LISTEN
// loop that hears them.

// ChangesAfter returns, for each position (workspace, customer and the last
// version already seen, given as a change), up to limit changes that follow
// it, ordered by customer and version. One statement serves any number of
// positions.
func (db *DB) ChangesAfter(ctx context.Context, after []c360.Change, limit int) ([]c360.Change, error) {
	if len(after) == 0 {
		return nil, nil
	}
	// Row-level security scopes a statement to one workspace: one statement
	// per workspace woken, usually one.
	byWS := map[int64][]c360.Change{}
	var order []int64
	for _, p := range after {
		if _, ok := byWS[p.WorkspaceID]; !ok {
			order = append(order, p.WorkspaceID)
		}
		byWS[p.WorkspaceID] = append(byWS[p.WorkspaceID], p)
	}
	slices.Sort(order)
	var out []c360.Change
	for _, w := range order {
		got, err := db.changesAfter(ctx, w, byWS[w], limit)
		if err != nil {
			return nil, err
		}
		out = append(out, got...)
	}
	return out, nil
}

func (db *DB) changesAfter(ctx context.Context, w int64, after []c360.Change, limit int) ([]c360.Change, error) {
	ids := make([]int64, len(after))
	vs := make([]int64, len(after))
	for i, p := range after {
		ids[i], vs[i] = p.CustomerID, p.Version
	}
	rows, err := db.as(w).Query(ctx, `
		SELECT c.workspace_id, c.customer_id, c.version, c.kind, c.diff, c.created_at
		FROM unnest($2::bigint[], $3::bigint[]) AS p(customer, version)
		CROSS JOIN LATERAL (
			SELECT * FROM customer_changes c
			WHERE c.workspace_id = $1 AND c.customer_id = p.customer AND c.version > p.version
			ORDER BY c.version LIMIT $4) c
		ORDER BY c.customer_id, c.version`, w, ids, vs, limit)
	if err != nil {
		return nil, interpretError(fmt.Errorf("read changes: %w", err))
	}
	out, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (c360.Change, error) {
		var c c360.Change
		err := row.Scan(&c.WorkspaceID, &c.CustomerID, &c.Version, &c.Kind, &c.Diff, &c.At)
		return c, err
	})
	if err != nil {
		return nil, interpretError(fmt.Errorf("read changes: %w", err))
	}
	return out, nil
}

// CustomerState returns the customer's current version and, when it was
// merged away, the survivor it points to (else 0).
func (db *DB) CustomerState(ctx context.Context, ws, id int64) (version, mergedInto int64, err error) {
	err = db.as(ws).QueryRow(ctx, `
		SELECT version, coalesce(merged_into, 0) FROM customers WHERE workspace_id = $1 AND id = $2`,
		ws, id).Scan(&version, &mergedInto)
	if err == pgx.ErrNoRows {
		return 0, 0, c360.Errorf(c360.ENOTFOUND, "customer %d not found", id)
	} else if err != nil {
		return 0, 0, interpretError(fmt.Errorf("read customer state: %w", err))
	}
	return version, mergedInto, nil
}

// MergeVersion returns the version of the survivor's change that absorbed
// the merged customer: the first one whose diff lists it under "merged". A
// survivor reached through a later merge (its feed never names the merged
// id) falls back to its first change made at or after the merged_into
// change, then to its next version.
func (db *DB) MergeVersion(ctx context.Context, ws, survivor, merged int64) (int64, error) {
	var v int64
	err := db.as(ws).QueryRow(ctx, `
		SELECT coalesce(
			(SELECT min(version) FROM customer_changes
			 WHERE workspace_id = $1 AND customer_id = $2 AND diff->'merged' ? $3::text),
			(SELECT min(s.version) FROM customer_changes s
			 WHERE s.workspace_id = $1 AND s.customer_id = $2 AND s.created_at >= (
				SELECT max(m.created_at) FROM customer_changes m
				WHERE m.workspace_id = $1 AND m.customer_id = $4 AND m.kind = 'merged_into')),
			(SELECT version + 1 FROM customers WHERE workspace_id = $1 AND id = $2),
			1)`, ws, survivor, strconv.FormatInt(merged, 10), merged).Scan(&v)
	if err != nil {
		return 0, interpretError(fmt.Errorf("find merge change: %w", err))
	}
	return v, nil
}

// VersionsBefore returns, per customer, the highest version of its changes
// made before t; customers without one are absent.
func (db *DB) VersionsBefore(ctx context.Context, ws int64, customers []int64, t time.Time) (map[int64]int64, error) {
	rows, err := db.as(ws).Query(ctx, `
		SELECT customer_id, max(version) FROM customer_changes
		WHERE workspace_id = $1 AND customer_id = ANY($2) AND created_at < $3
		GROUP BY customer_id`, ws, customers, t)
	if err != nil {
		return nil, interpretError(fmt.Errorf("read versions: %w", err))
	}
	defer rows.Close()
	out := make(map[int64]int64, len(customers))
	for rows.Next() {
		var id, v int64
		if err := rows.Scan(&id, &v); err != nil {
			return nil, interpretError(fmt.Errorf("read versions: %w", err))
		}
		out[id] = v
	}
	return out, interpretError(rows.Err())
}

// CustomersChangedSince returns the customers of the workspace with a
// change made at or after t, each once.
func (db *DB) CustomersChangedSince(ctx context.Context, ws int64, t time.Time) ([]int64, error) {
	rows, err := db.as(ws).Query(ctx, `
		SELECT DISTINCT customer_id FROM customer_changes WHERE workspace_id = $1 AND created_at >= $2`, ws, t)
	if err != nil {
		return nil, interpretError(fmt.Errorf("read changed customers: %w", err))
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	return ids, interpretError(err)
}

// MessageOfChange returns the message a message change names, as it is now.
func (db *DB) MessageOfChange(ctx context.Context, ws, id int64) (*c360.Message, error) {
	return db.findMessage(ctx, ws, id)
}

// ConversationOwner returns the customer a conversation belongs to now
// (merges move conversations to the survivor).
func (db *DB) ConversationOwner(ctx context.Context, ws, conversationID int64) (int64, error) {
	var id int64
	err := db.as(ws).QueryRow(ctx, `SELECT customer_id FROM conversations WHERE workspace_id = $1 AND id = $2`,
		ws, conversationID).Scan(&id)
	if err == pgx.ErrNoRows {
		return 0, c360.Errorf(c360.ENOTFOUND, "conversation %d not found", conversationID)
	} else if err != nil {
		return 0, interpretError(fmt.Errorf("find conversation: %w", err))
	}
	return id, nil
}

// ChangesChannel is the LISTEN/NOTIFY channel of change notifications.
const ChangesChannel = "c360_changes"

// maxPayload keeps each NOTIFY payload under PostgreSQL's 8000-byte limit.
const maxPayload = 7900

// NewOrigin returns a random id for this process: notifications carry it so
// that a process ignores its own.
func NewOrigin() string {
	b := make([]byte, 8)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// Notifier tells other replicas which customers' feeds grew. Add collects
// (workspace, customer) pairs after commits; Run flushes them at most every
// Interval in one statement, whatever the number of commits, and never inside
// an ingest transaction. Payloads are
//
//	v1 <origin> <workspace>:<customer>,<customer>... <workspace>:* ...
//
// split to stay under PostgreSQL's payload limit; "*" wakes every customer of
// the workspace (sent when too many pairs piled up).
type Notifier struct {
	DB     *DB
	Origin string
	// Interval is the longest a notification waits for others to share its
	// statement (default 5ms).
	Interval time.Duration
	// MaxPending bounds the pairs held between flushes (default 50000); past
	// it a workspace is notified whole.
	MaxPending int
	Logger     *slog.Logger

	mu      sync.Mutex
	pending map[int64]map[int64]struct{} // nil inner map: the whole workspace
	n       int
	signal  chan struct{}
	once    sync.Once
}

func (n *Notifier) init() {
	n.once.Do(func() {
		if n.Interval <= 0 {
			n.Interval = 5 * time.Millisecond
		}
		if n.MaxPending <= 0 {
			n.MaxPending = 50000
		}
		if n.Logger == nil {
			n.Logger = slog.Default()
		}
		n.signal = make(chan struct{}, 1)
		n.pending = map[int64]map[int64]struct{}{}
	})
}

// Add records that these customers' feeds grew. It never blocks on I/O.
func (n *Notifier) Add(ws int64, customers []int64) {
	n.init()
	n.requeue(ws, customers)
	select {
	case n.signal <- struct{}{}:
	default:
	}
}

// requeue adds customers to the pending notifications of ws.
func (n *Notifier) requeue(ws int64, customers []int64) {
	n.mu.Lock()
	set, ok := n.pending[ws]
	if !ok {
		set = map[int64]struct{}{}
		n.pending[ws] = set
	}
	if set != nil {
		for _, id := range customers {
			if _, dup := set[id]; !dup {
				set[id] = struct{}{}
				n.n++
			}
		}
		if n.n > n.MaxPending {
			n.wholeLocked(ws)
		}
	}
	n.mu.Unlock()
}

// wholeLocked marks every customer of ws for notification ("ws:*"), in
// place of the pairs it held. Called with n.mu held.
func (n *Notifier) wholeLocked(ws int64) {
	n.n -= len(n.pending[ws])
	n.pending[ws] = nil
}

// Run flushes collected notifications until ctx ends, then flushes once more.
func (n *Notifier) Run(ctx context.Context) error {
	n.init()
	var retry time.Duration
	for {
		select {
		case <-ctx.Done():
			fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
			if !n.flush(fctx) {
				n.lost()
			}
			cancel()
			return nil
		case <-n.signal:
		}
		// Let the commits of the next few milliseconds share the statement.
		t := time.NewTimer(n.Interval)
		select {
		case <-ctx.Done():
			t.Stop()
			// Stopping: flush at the top of the loop, with a context that is
			// not cancelled (flushing with ctx would drop the batch).
			continue
		case <-t.C:
		}
		if n.flush(ctx) {
			retry = 0
			continue
		}
		// The batch is pending again: try again after a pause that grows
		// while the database does not answer.
		retry = min(max(2*retry, 100*time.Millisecond), 5*time.Second)
		t = time.NewTimer(retry)
		select {
		case <-ctx.Done():
			t.Stop()
		case <-t.C:
		}
		select {
		case n.signal <- struct{}{}:
		default:
		}
	}
}

// Flush sends what Add collected, at once, for a process that commits and
// then exits without running Run (`c360 deadletter replay`): other
// replicas' subscribers hear of its changes now, not at their next
// periodic resync. It reports whether the notifications were sent.
func (n *Notifier) Flush(ctx context.Context) bool {
	n.init()
	return n.flush(ctx)
}

// lost logs what the last flush, at stop, could not send. Other replicas'
// hubs find those changes at their next periodic resync (hub.Options.
// ResyncInterval), not at once. Counts only: customer ids are not logged.
func (n *Notifier) lost() {
	n.mu.Lock()
	customers, whole := n.n, 0
	for _, set := range n.pending {
		if set == nil {
			whole++
		}
	}
	n.mu.Unlock()
	n.Logger.Error("change notifications not sent at stop: other replicas deliver these changes at their next resync",
		"customers", customers, "whole_workspaces", whole)
}

// flush sends the pending notifications in one statement. When it fails,
// the batch is pending again (merged with what came meanwhile) and flush
// reports false: other replicas must still hear of those changes.
func (n *Notifier) flush(ctx context.Context) bool {
	n.mu.Lock()
	pending := n.pending
	if len(pending) == 0 {
		n.mu.Unlock()
		return true
	}
	n.pending, n.n = map[int64]map[int64]struct{}{}, 0
	n.mu.Unlock()
	payloads := EncodeNotifications(n.Origin, pending)
	if _, err := n.DB.Pool.Exec(ctx, `SELECT pg_notify($1, p) FROM unnest($2::text[]) AS p`, ChangesChannel, payloads); err != nil {
		n.Logger.Error("notify change feed failed; the batch is kept for the next flush (at stop, none follows)", "error", err, "payloads", len(payloads))
		for ws, set := range pending {
			if set == nil {
				n.mu.Lock()
				n.wholeLocked(ws)
				n.mu.Unlock()
				continue
			}
			ids := make([]int64, 0, len(set))
			for id := range set {
				ids = append(ids, id)
			}
			n.requeue(ws, ids)
		}
		return false
	}
	return true
}

// EncodeNotifications renders pending pairs as NOTIFY payloads, each under
// the payload limit.
func EncodeNotifications(origin string, pending map[int64]map[int64]struct{}) []string {
	var out []string
	var b strings.Builder
	start := func() {
		b.Reset()
		b.WriteString("v1 ")
		b.WriteString(origin)
	}
	start()
	empty := b.Len()
	for ws, set := range pending {
		prefix := " " + strconv.FormatInt(ws, 10) + ":"
		if set == nil {
			if b.Len()+len(prefix)+1 > maxPayload {
				out = append(out, b.String())
				start()
			}
			b.WriteString(prefix)
			b.WriteByte('*')
			continue
		}
		first := true
		for id := range set {
			s := strconv.FormatInt(id, 10)
			if b.Len()+len(prefix)+len(s)+1 > maxPayload {
				out = append(out, b.String())
				start()
				first = true
			}
			if first {
				b.WriteString(prefix)
				first = false
			} else {
				b.WriteByte(',')
			}
			b.WriteString(s)
		}
	}
	if b.Len() > empty {
		out = append(out, b.String())
	}
	return out
}

// Notification is one decoded payload.
type Notification struct {
	Origin string
	// Customers maps a workspace to the customers whose feeds grew; a nil
	// slice means every customer of the workspace.
	Customers map[int64][]int64
}

// DecodeNotification parses a payload written by EncodeNotifications.
func DecodeNotification(payload string) (Notification, error) {
	f := strings.Fields(payload)
	if len(f) < 2 || f[0] != "v1" {
		return Notification{}, errors.New("decode notification: unknown format")
	}
	n := Notification{Origin: f[1], Customers: map[int64][]int64{}}
	for _, part := range f[2:] {
		w, list, ok := strings.Cut(part, ":")
		ws, err := strconv.ParseInt(w, 10, 64)
		if !ok || err != nil {
			return Notification{}, fmt.Errorf("decode notification: bad workspace %q", w)
		}
		if list == "*" {
			n.Customers[ws] = nil
			continue
		}
		ids := n.Customers[ws]
		for _, s := range strings.Split(list, ",") {
			id, err := strconv.ParseInt(s, 10, 64)
			if err != nil {
				return Notification{}, fmt.Errorf("decode notification: bad customer %q", s)
			}
			ids = append(ids, id)
		}
		if _, whole := n.Customers[ws]; !whole || n.Customers[ws] != nil {
			n.Customers[ws] = ids
		}
	}
	return n, nil
}

// Listener hears other replicas' notifications on a dedicated connection
// (LISTEN needs a session; it cannot go through the pool or a transaction
// pooler) and wakes the local hub. It reconnects with backoff and asks for a
// resync after each connect, since notifications sent while it was away are
// lost.
//
// The wait before a reconnect starts at MinBackoff and doubles with each
// failure in a row, up to MaxBackoff. A connection that listened for at
// least MaxBackoff ends the run of failures: the next outage starts again
// from MinBackoff. One that fails sooner does not, so a server that accepts
// connections only to drop them is not reconnected to more often than
// about once per MaxBackoff.
type Listener struct {
	DB     *DB
	Origin string
	// Wake is told of customers whose feeds grew; WakeWorkspace of a whole
	// workspace; Resync to read every followed feed again.
	Wake          func(ws int64, customers []int64)
	WakeWorkspace func(ws int64)
	Resync        func()
	Logger        *slog.Logger
	// HealthInterval is how often an idle connection is checked (30s).
	HealthInterval time.Duration
	// HealthTimeout bounds the check (5s): a connection whose path went
	// dead without a reset would otherwise hold it until TCP gives up
	// (about 15 minutes), while other replicas' changes go unheard.
	HealthTimeout time.Duration
	// MinBackoff and MaxBackoff bound the wait before a reconnect (100ms
	// and 5s).
	MinBackoff, MaxBackoff time.Duration
}

// Run listens until ctx ends.
func (l *Listener) Run(ctx context.Context) error {
	if l.Logger == nil {
		l.Logger = slog.Default()
	}
	if l.HealthInterval <= 0 {
		l.HealthInterval = 30 * time.Second
	}
	if l.HealthTimeout <= 0 {
		l.HealthTimeout = 5 * time.Second
	}
	minBackoff, maxBackoff := l.MinBackoff, l.MaxBackoff
	if minBackoff <= 0 {
		minBackoff = 100 * time.Millisecond
	}
	if maxBackoff <= 0 {
		maxBackoff = 5 * time.Second
	}
	maxBackoff = max(maxBackoff, minBackoff)
	backoff := minBackoff
	for {
		listened, err := l.session(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if listened >= maxBackoff {
			backoff = minBackoff // the connection worked: this is a new outage
		}
		l.Logger.Warn("change listener disconnected; reconnecting", "error", err, "in", backoff.String())
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, maxBackoff)
	}
}

// session runs one connection: LISTEN, resync, then dispatch notifications.
// It returns how long the connection listened (0 if it never did) and why
// it ended.
func (l *Listener) session(ctx context.Context) (time.Duration, error) {
	cfg := l.DB.Pool.Config().ConnConfig.Copy()
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return 0, fmt.Errorf("connect: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if _, err := conn.Exec(ctx, "LISTEN "+ChangesChannel); err != nil {
		return 0, fmt.Errorf("listen: %w", err)
	}
	listening := time.Now()
	if l.Resync != nil {
		l.Resync()
	}
	for {
		wctx, cancel := context.WithTimeout(ctx, l.HealthInterval)
		note, err := conn.WaitForNotification(wctx)
		cancel()
		if ctx.Err() != nil {
			return time.Since(listening), ctx.Err()
		}
		if err != nil {
			if !errors.Is(err, context.DeadlineExceeded) && !conn.PgConn().IsClosed() {
				return time.Since(listening), fmt.Errorf("wait for notification: %w", err)
			}
			// Idle: make sure the connection still answers, soon.
			hctx, hcancel := context.WithTimeout(ctx, l.HealthTimeout)
			_, err := conn.Exec(hctx, "SELECT 1")
			hcancel()
			if err != nil {
				return time.Since(listening), fmt.Errorf("health check: %w", err)
			}
			continue
		}
		n, err := DecodeNotification(note.Payload)
		if err != nil {
			l.Logger.Warn("change listener: ignoring a notification", "error", err)
			continue
		}
		if n.Origin == l.Origin {
			continue // this process woke its hub directly after commit
		}
		for ws, ids := range n.Customers {
			if ids == nil {
				if l.WakeWorkspace != nil {
					l.WakeWorkspace(ws)
				}
				continue
			}
			if l.Wake != nil {
				l.Wake(ws, ids)
			}
		}
	}
}
