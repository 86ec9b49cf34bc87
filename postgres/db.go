// Package postgres is c360's store: the pgx pool, transactions, the one ingest
// path, identity resolution SQL and the change feed. It implements the domain
// service interfaces of package c360.
package postgres

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/jackc/pgx/v5/pgxpool"
	"golang.org/x/sync/semaphore"
	"golang.org/x/sync/singleflight"

	"github.com/c360dev/c360"
	"github.com/c360dev/c360/identity"
)

// DB is the connection pool and the services built on it.
type DB struct {
	// Pool connects as the owner (the role in DATABASE_URL): migrations,
	// workspace creation and tests' assertions. Tenant traffic never uses it.
	Pool *pgxpool.Pool
	// app connects as c360_app, under row-level security (scope.go).
	app *pgxpool.Pool
	// ready is one connection as c360_app for Ready alone: a probe that
	// queued behind tenant work for an app connection would report the
	// database down whenever the pool is merely busy, and under load take
	// every replica out of the load balancer at once.
	ready *pgxpool.Pool
	// Now is the clock; tests replace it to fix time.
	Now c360.Clock
	// Normalizer normalizes identities on ingest and lookup.
	Normalizer identity.Normalizer

	// OnCommit, when set, is called after every ingest commit with the
	// customers whose change feed grew. The real-time hub hangs here: it is
	// woken only by committed changes, never by ones that may roll back.
	OnCommit func(workspaceID int64, customerIDs []int64)

	rules rulesCache
	// migrationsCurrentUntil caches Ready's migration check (migrate.go).
	migrationsCurrentUntil atomic.Int64
	// workspaces caches FindWorkspaceBySlug (workspace.go).
	workspaces sync.Map
	// workspaceSlugs maps a workspace's id to its slug (findWorkspaceByID).
	workspaceSlugs sync.Map
	// workspaceRereads joins the RereadWorkspace calls of one slug that run
	// at once; workspaceRereadAt holds each slug's last forced read.
	workspaceRereads  singleflight.Group
	workspaceRereadAt sync.Map
	// batch runs group commit when StartIngest was called (batcher.go).
	batch *batcher
	// usage records keys' last use off the request path (KeyUsage).
	usage atomic.Pointer[KeyUsage]
	// authCache maps a recently verified API key's prefix to its authEntry
	// (apikey.go): one per process, as each replica opens one DB.
	authCache sync.Map
	// keyChecks joins the KeyActive reads of one key that run at once
	// (every subscriber of a key checks it before the same change).
	keyChecks singleflight.Group
	// revocations counts RevokeAPIKey's revocations, for cacheKey.
	revocations atomic.Uint64
	// recentSends holds the workspaces this process recorded an outbound
	// message in lately, which the minute sweep of pending messages reads
	// (pending.go).
	recentSends recentSends
	// replaySlots bounds the dead-letter replays in flight, each of which
	// holds a connection of the owner pool (lockForReplay).
	replaySlots *semaphore.Weighted
	// afterKeyRead, when set (by tests), runs after a key's row is read
	// and before the key is cached.
	afterKeyRead func()
	// beforeCustomerLock, when set (by tests), runs in a manual merge or a
	// split after the customers' survivors are read and before their rows
	// are locked: the window in which a concurrent merge makes them stale.
	beforeCustomerLock func()
}

// Option adjusts the pool configuration before connecting (tests install a
// statement-counting tracer with one).
type Option func(*pgxpool.Config)

// MaxConns sizes the tenant pool at n connections, whatever the URL's
// pool_max_conns says (cmd/c360 passes C360_DB_MAX_CONNS with it).
func MaxConns(n int32) Option {
	return func(cfg *pgxpool.Config) { cfg.MaxConns = n }
}

// Open connects to PostgreSQL at url. The tenant pool's size comes from a
// MaxConns option, else the URL's pool_max_conns, else a default sized for
// 2 cores.
func Open(ctx context.Context, url string, opts ...Option) (*DB, error) {
	if err := checkAuthority(url); err != nil {
		return nil, err
	}
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, c360.Errorf(c360.EINVALID, "DATABASE_URL: %s", parseProblem(err))
	}
	if !strings.Contains(url, "pool_max_conns") {
		// Ingest transactions wait on fsync, not CPU: more connections than
		// cores lets commits share one WAL flush.
		cfg.MaxConns = 16
	}
	cfg.MaxConnIdleTime = 5 * time.Minute
	cfg.HealthCheckPeriod = 5 * time.Second
	cfg.ConnConfig.ConnectTimeout = 5 * time.Second
	// A statement that runs away is cut off instead of holding a connection.
	if cfg.ConnConfig.RuntimeParams == nil {
		cfg.ConnConfig.RuntimeParams = map[string]string{}
	}
	if _, ok := cfg.ConnConfig.RuntimeParams["statement_timeout"]; !ok {
		cfg.ConnConfig.RuntimeParams["statement_timeout"] = "10000"
	}
	if _, ok := cfg.ConnConfig.RuntimeParams["lock_timeout"]; !ok {
		cfg.ConnConfig.RuntimeParams["lock_timeout"] = "5000"
	}
	// A 2xx means the commit is flushed to disk (docs/operations.md), even
	// if the server's default says otherwise; the URL may ask for more
	// (remote_apply with a synchronous standby).
	if _, ok := cfg.ConnConfig.RuntimeParams["synchronous_commit"]; !ok {
		cfg.ConnConfig.RuntimeParams["synchronous_commit"] = "on"
	}
	cfg.ConnConfig.RuntimeParams["application_name"] = "c360"
	for _, o := range opts {
		o(cfg)
	}
	// The owner pool migrates, creates workspaces and serves tests'
	// assertions; it stays small. Tenant traffic uses the app pool.
	appCfg := cfg.Copy()
	cfg.MaxConns, cfg.MinConns = 4, 0
	cfg.AfterConnect = func(ctx context.Context, c *pgx.Conn) error {
		exactJSON(c)
		return nil
	}
	appCfg.AfterConnect = func(ctx context.Context, c *pgx.Conn) error {
		exactJSON(c)
		_, err := c.Exec(ctx, "SET ROLE "+appRole)
		return err
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("open pool: %w", err)
	}
	app, err := pgxpool.NewWithConfig(ctx, appCfg)
	if err != nil {
		pool.Close()
		return nil, fmt.Errorf("open app pool: %w", err)
	}
	readyCfg := appCfg.Copy()
	readyCfg.MaxConns, readyCfg.MinConns = 1, 0
	ready, err := pgxpool.NewWithConfig(ctx, readyCfg)
	if err != nil {
		app.Close()
		pool.Close()
		return nil, fmt.Errorf("open readiness pool: %w", err)
	}
	return &DB{
		Pool:  pool,
		app:   app,
		ready: ready,
		// Half the owner pool, whose connections hold the replays'
		// locks (lockForReplay).
		replaySlots: semaphore.NewWeighted(int64(cfg.MaxConns) / 2),
		Now:         func() time.Time { return time.Now().UTC() },
		Normalizer:  identity.Normalizer{DefaultRegion: "US"},
	}, nil
}

// checkAuthority refuses a URL in which a password holds an @ not written
// as %40, found as pgx (like libpq) finds it: the userinfo ends at the
// first @ before any /, so a ? or # in the password does not end it, and
// the hosts run from there to the next / or ?. If those hosts still hold
// an @, pgx would take the rest of the password as a host name, and every
// connection error would name it, in the command's output, on every retry
// in the server's log, and in a DNS query. Only the URL forms are read:
// in the keyword/value form (password='a://@@') an @ is only a character
// of a value, which pgx parses and redacts. The message never echoes the
// URL.
func checkAuthority(url string) error {
	rest, ok := strings.CutPrefix(url, "postgresql://")
	if !ok {
		rest, ok = strings.CutPrefix(url, "postgres://")
	}
	if !ok {
		return nil
	}
	if i := strings.IndexAny(rest, "@/"); i >= 0 && rest[i] == '@' {
		rest = rest[i+1:]
	}
	if i := strings.IndexAny(rest, "/?"); i >= 0 {
		rest = rest[:i]
	}
	if strings.Contains(rest, "@") {
		return c360.Errorf(c360.EINVALID, "DATABASE_URL: more than one @ before the host: percent-encode the password (@ as %%40)")
	}
	return nil
}

// parseProblem is pgx's reason for refusing a connection string ("cannot
// parse pool_max_conns (…)", "failed to configure TLS (sslmode is
// invalid)") without the string itself, whose password pgx masks only on
// a best-effort basis.
func parseProblem(err error) string {
	var pe *pgconn.ParseConfigError
	if !errors.As(err, &pe) {
		return "malformed"
	}
	msg := pe.Error()
	if i := strings.LastIndex(msg, "`: "); i >= 0 {
		return msg[i+len("`: "):]
	}
	return "malformed"
}

// Close stops group commit, letting groups in flight commit, and closes
// the pool.
func (db *DB) Close() {
	db.stopIngest()
	db.ready.Close()
	db.app.Close()
	db.Pool.Close()
}

// Ping reports whether the database answers.
func (db *DB) Ping(ctx context.Context) error { return db.Pool.Ping(ctx) }

// inTx runs fn in a transaction of workspace ws on the app pool and commits
// it. Serialization failures and deadlocks, which PostgreSQL resolves by
// aborting one side, are retried.
func (db *DB) inTx(ctx context.Context, ws int64, fn func(tx pgx.Tx) error) error {
	return db.retryTx(ctx, func() (pgx.Tx, error) {
		return db.app.BeginTx(ctx, pgx.TxOptions{BeginQuery: beginSQL(ws)})
	}, fn)
}

// ownerTx runs fn in a transaction of the owner role, outside any one
// workspace: creating a workspace and its first keys.
func (db *DB) ownerTx(ctx context.Context, fn func(tx pgx.Tx) error) error {
	return db.retryTx(ctx, func() (pgx.Tx, error) { return db.Pool.Begin(ctx) }, fn)
}

func (db *DB) retryTx(ctx context.Context, begin func() (pgx.Tx, error), fn func(tx pgx.Tx) error) error {
	return retry(ctx, func() error { return db.tryTx(ctx, begin, fn) })
}

// retry runs try until it succeeds or fails for good, at most 5 times: a
// deadlock or a serialization failure is tried again, with backoff.
func retry(ctx context.Context, try func() error) error {
	const attempts = 5
	var err error
	for i := 0; i < attempts; i++ {
		err = try()
		if !retryable(err) {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Duration(1<<i) * time.Millisecond):
		}
	}
	return err
}

func (db *DB) tryTx(ctx context.Context, begin func() (pgx.Tx, error), fn func(tx pgx.Tx) error) error {
	tx, err := begin()
	if err != nil {
		return interpretError(fmt.Errorf("begin: %w", err))
	}
	defer tx.Rollback(context.WithoutCancel(ctx))
	if err := fn(tx); err != nil {
		return err
	}
	if err := tx.Commit(ctx); err != nil {
		return interpretError(fmt.Errorf("commit: %w", err))
	}
	return nil
}

func retryable(err error) bool {
	if errors.Is(err, errMergeRaced) || errors.Is(err, errSplitRaced) || errors.Is(err, errEraseRaced) {
		return true
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch pgErr.Code {
		case "40001", "40P01": // serialization_failure, deadlock_detected
			return true
		}
	}
	return false
}

// interpretError maps database errors to domain errors, once, here.
func interpretError(err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, pgx.ErrNoRows) {
		return c360.Errorf(c360.ENOTFOUND, "not found")
	}
	// A connection that could not be made is the system's failure, whatever
	// the server said: a refusal at startup ("53300 sorry, too many clients
	// already", "57P03 the database system is starting up") is a
	// *pgconn.PgError inside the *pgconn.ConnectError, and must not be read
	// as a statement's error, the event's fault.
	var connErr *pgconn.ConnectError
	if errors.As(err, &connErr) {
		return &wrapped{c360.Errorf(c360.EUNAVAILABLE, "the database is unavailable; retry"), err}
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch pgErr.Code {
		case "23505":
			return &wrapped{c360.Errorf(c360.ECONFLICT, "already exists"), err}
		case "23514", "22P02", "22001", "23502":
			return &wrapped{c360.Errorf(c360.EINVALID, "value refused by a constraint"), err}
		case "22021", "22P05": // a NUL character in text, \u0000 in jsonb: valid JSON, refused by PostgreSQL
			return &wrapped{c360.Errorf(c360.EINVALID, "text with a NUL character (\\u0000) cannot be stored"), err}
		case "57014", "55P03": // query_canceled (statement timeout), lock_not_available
			return &wrapped{c360.Errorf(c360.EUNAVAILABLE, "the database is busy; retry"), err}
		}
		// Classes 08 (connection exception), 53 (insufficient resources:
		// disk full, out of memory, too many connections), 57 (operator
		// intervention: shutdown, cannot connect now) and 58 (system error:
		// I/O) are the server's state, not the statement's: a retry is
		// their cure.
		if len(pgErr.Code) == 2+3 {
			switch pgErr.Code[:2] {
			case "08", "53", "57", "58":
				return &wrapped{c360.Errorf(c360.EUNAVAILABLE, "the database is unavailable; retry"), err}
			}
		}
		return err
	}
	if pgconn.SafeToRetry(err) || pgconn.Timeout(err) || connectionLost(err) {
		return &wrapped{c360.Errorf(c360.EUNAVAILABLE, "the database is unavailable; retry"), err}
	}
	return err
}

// connectionLost reports an error of a connection the server dropped in the
// middle of a statement (PostgreSQL restarted or crashed: "unexpected EOF",
// a reset). It is unavailability, answered 503: whether a COMMIT in flight
// took effect is unknown, and the provider's retry finds the event stored
// or stores it, once.
func connectionLost(err error) bool {
	var netErr net.Error
	return errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) || errors.As(err, &netErr)
}

// wrapped carries a domain error for the client and the database error for
// logs and for retry decisions.
type wrapped struct {
	domain *c360.Error
	cause  error
}

func (w *wrapped) Error() string { return w.domain.Message + ": " + w.cause.Error() }
func (w *wrapped) Unwrap() []error {
	return []error{w.domain, w.cause}
}

// exactJSON makes c decode json and jsonb as encoding/json does, but with
// numbers as json.Number: PostgreSQL's numeric keeps every digit of a
// trait like 12345678901234567, and a float64 would round it on every
// read (and every ingest that compares it with what came in).
func exactJSON(c *pgx.Conn) {
	m := c.TypeMap()
	jsonb := &pgtype.Type{Name: "jsonb", OID: pgtype.JSONBOID,
		Codec: &pgtype.JSONBCodec{Marshal: json.Marshal, Unmarshal: c360.UnmarshalExact}}
	jsonType := &pgtype.Type{Name: "json", OID: pgtype.JSONOID,
		Codec: &pgtype.JSONCodec{Marshal: json.Marshal, Unmarshal: c360.UnmarshalExact}}
	m.RegisterType(jsonb)
	m.RegisterType(jsonType)
	m.RegisterType(&pgtype.Type{Name: "_jsonb", OID: pgtype.JSONBArrayOID, Codec: &pgtype.ArrayCodec{ElementType: jsonb}})
	m.RegisterType(&pgtype.Type{Name: "_json", OID: pgtype.JSONArrayOID, Codec: &pgtype.ArrayCodec{ElementType: jsonType}})
}
