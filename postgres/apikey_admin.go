package postgres

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/c360dev/c360"
)

var _ c360.APIKeyManager = (*DB)(nil)

// IssueAPIKey issues a key with the role and scopes for the workspace.
func (db *DB) IssueAPIKey(ctx context.Context, ws int64, role c360.Role, scopes []string) (string, *c360.APIKey, error) {
	if err := c360.CheckKey(role, scopes); err != nil { // before anything is written
		return "", nil, err
	}
	var (
		secret string
		key    *c360.APIKey
		err    error
	)
	err = db.inTx(ctx, ws, func(tx pgx.Tx) error {
		secret, key, err = insertAPIKey(ctx, tx, ws, role, scopes)
		return err
	})
	return secret, key, err
}

const apiKeyColumns = `id, workspace_id, prefix, role, scopes, created_at, last_used_at, revoked_at`

func scanAPIKey(row pgx.Row) (*c360.APIKey, error) {
	k := &c360.APIKey{}
	var role string
	if err := row.Scan(&k.ID, &k.WorkspaceID, &k.Prefix, &role, &k.Scopes, &k.CreatedAt, &k.LastUsedAt, &k.RevokedAt); err != nil {
		return nil, err
	}
	k.Role = c360.Role(role)
	return k, nil
}

// ListAPIKeys returns the workspace's keys, newest first. Hashes never
// leave the store.
func (db *DB) ListAPIKeys(ctx context.Context, ws int64) ([]*c360.APIKey, error) {
	rows, err := db.as(ws).Query(ctx, `SELECT `+apiKeyColumns+` FROM api_keys
		WHERE workspace_id = $1 ORDER BY created_at DESC, id DESC`, ws)
	if err != nil {
		return nil, interpretError(fmt.Errorf("list api keys: %w", err))
	}
	defer rows.Close()
	out := []*c360.APIKey{}
	for rows.Next() {
		k, err := scanAPIKey(rows)
		if err != nil {
			return nil, fmt.Errorf("scan api key: %w", err)
		}
		out = append(out, k)
	}
	return out, interpretError(rows.Err())
}

// RevokeAPIKey revokes the workspace's key with this prefix. This process
// forgets the key at once; other processes within authCacheTTL (5 s). A
// key revoked already is returned as it is, revoked false: its revokedAt
// stays the first revocation's. Of two revocations at once, the second's
// UPDATE waits for the first's and finds the key revoked; its read of the
// key, a statement of its own, then sees the first's revokedAt.
func (db *DB) RevokeAPIKey(ctx context.Context, ws int64, prefix string) (*c360.APIKey, bool, error) {
	revoked := true
	k, err := scanAPIKey(db.as(ws).QueryRow(ctx, `
		UPDATE api_keys SET revoked_at = now()
		WHERE workspace_id = $1 AND prefix = $2 AND revoked_at IS NULL
		RETURNING `+apiKeyColumns, ws, prefix))
	if err == pgx.ErrNoRows {
		revoked = false
		k, err = scanAPIKey(db.as(ws).QueryRow(ctx, `
			SELECT `+apiKeyColumns+` FROM api_keys WHERE workspace_id = $1 AND prefix = $2`, ws, prefix))
	}
	if err == pgx.ErrNoRows {
		return nil, false, c360.Errorf(c360.ENOTFOUND, "no API key with prefix %q in this workspace", truncate(prefix, 40))
	} else if err != nil {
		return nil, false, interpretError(fmt.Errorf("revoke api key: %w", err))
	}
	// Counted before the key is forgotten: a read of the row that raced
	// the UPDATE then does not cache it again (cacheKey).
	db.revocations.Add(1)
	db.authCache.Delete(prefix)
	return k, revoked, nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

// keyUsed tells the attached KeyUsage, if any, that p's key authenticated
// a request.
func (db *DB) keyUsed(p *c360.Principal) {
	if u := db.usage.Load(); u != nil {
		u.touch(p)
	}
}

// KeyUsage records when API keys were last used (api_keys.last_used_at),
// off the request path: Authenticate hands it the key, at most once per
// Interval per key and process, and one background goroutine writes the
// times in batches. A full queue drops the touch: last_used_at is an
// operator's hint, precise to about a minute, not an audit record.
type KeyUsage struct {
	db       *DB
	interval time.Duration
	log      *slog.Logger

	mu   sync.Mutex
	last map[int64]time.Time // key id -> last time handed to the writer

	queue   chan keyUse
	flushes chan chan struct{}
	stop    chan struct{}
	done    chan struct{}
	once    sync.Once
}

type keyUse struct {
	ws, id int64
	at     time.Time
}

// NewKeyUsage attaches a usage recorder to db and starts its writer; Close
// detaches and stops it. interval 0 means one minute.
func NewKeyUsage(db *DB, interval time.Duration, log *slog.Logger) *KeyUsage {
	if interval <= 0 {
		interval = time.Minute
	}
	if log == nil {
		log = slog.Default()
	}
	u := &KeyUsage{db: db, interval: interval, log: log, last: map[int64]time.Time{},
		queue: make(chan keyUse, 1024), flushes: make(chan chan struct{}),
		stop: make(chan struct{}), done: make(chan struct{})}
	db.usage.Store(u)
	go u.run()
	return u
}

// touch notes a use of p's key unless one was noted within the interval.
func (u *KeyUsage) touch(p *c360.Principal) {
	now := time.Now()
	u.mu.Lock()
	if t, ok := u.last[p.KeyID]; ok && now.Sub(t) < u.interval {
		u.mu.Unlock()
		return
	}
	u.last[p.KeyID] = now
	u.mu.Unlock()
	select {
	case u.queue <- keyUse{ws: p.WorkspaceID, id: p.KeyID, at: now}:
	default:
	}
}

// Flush waits until the uses noted before the call are written.
func (u *KeyUsage) Flush(ctx context.Context) error {
	ch := make(chan struct{})
	select {
	case u.flushes <- ch:
	case <-u.done:
		return fmt.Errorf("key usage writer closed")
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case <-ch:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Close detaches the recorder from the store, writes what is queued and
// stops the writer.
func (u *KeyUsage) Close() {
	u.once.Do(func() {
		u.db.usage.CompareAndSwap(u, nil)
		close(u.stop)
	})
	<-u.done
}

func (u *KeyUsage) run() {
	defer close(u.done)
	for {
		select {
		case k := <-u.queue:
			u.write(append([]keyUse{k}, u.drain()...))
		case ch := <-u.flushes:
			u.write(u.drain())
			close(ch)
		case <-u.stop:
			u.write(u.drain())
			return
		}
	}
}

// drain takes what is queued without waiting.
func (u *KeyUsage) drain() []keyUse {
	var out []keyUse
	for {
		select {
		case k := <-u.queue:
			out = append(out, k)
		default:
			return out
		}
	}
}

// write stores the uses, one statement per workspace. A key already marked
// used within the interval (by another replica) is not written again.
func (u *KeyUsage) write(uses []keyUse) {
	if len(uses) == 0 {
		return
	}
	slices.SortFunc(uses, func(a, b keyUse) int {
		if a.ws != b.ws {
			return int(a.ws - b.ws)
		}
		return int(a.id - b.id)
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for i := 0; i < len(uses); {
		j := i
		var ids []int64
		var at []time.Time
		for ; j < len(uses) && uses[j].ws == uses[i].ws; j++ {
			ids, at = append(ids, uses[j].id), append(at, uses[j].at)
		}
		_, err := u.db.as(uses[i].ws).Exec(ctx, `
			UPDATE api_keys k SET last_used_at = u.at
			FROM unnest($2::bigint[], $3::timestamptz[]) AS u(id, at)
			WHERE k.workspace_id = $1 AND k.id = u.id
			  AND (k.last_used_at IS NULL OR k.last_used_at < u.at - $4::interval)`,
			uses[i].ws, ids, at, u.interval)
		if err != nil {
			u.log.Warn("api key usage: write failed", "workspace", uses[i].ws, "keys", len(ids), "error", interpretError(err))
		}
		i = j
	}
}
