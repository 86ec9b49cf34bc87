package postgres

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5/stdlib"
	"github.com/pressly/goose/v3"
	"github.com/pressly/goose/v3/lock"

	"github.com/c360dev/c360"
	"github.com/c360dev/c360/identity"
	"github.com/c360dev/c360/migrations"
)

// Migrator applies the embedded migrations with goose, and those written
// in Go (goMigrations).
type Migrator struct {
	db       *sql.DB
	provider *goose.Provider
	// reader is a provider without the session lock, for Status: an
	// operator asking for the state during another process's long
	// migration gets it at once instead of waiting for the migration.
	reader *goose.Provider
	// log receives the note that another process's migration holds the
	// lock (Up sets it; slog.Default otherwise).
	log *slog.Logger
}

// migrationLockPoll is how often a migrator waiting for another process's
// migration tries the lock again (tests shorten it).
var migrationLockPoll = 5 * time.Second

// NewMigrator returns a migrator over the pool's database, on connections
// of its own.
//
// Those connections have no statement or lock timeout, unlike the pools'
// (10 s and 5 s, see Open): building an index on a large table takes
// longer than a request may, and CREATE INDEX CONCURRENTLY first waits for
// every transaction older than it, a backup's included, under the lock
// timeout. Cut short, it would leave an invalid index behind
// (docs/operations.md).
func (db *DB) NewMigrator() (*Migrator, error) {
	cfg := db.Pool.Config().ConnConfig.Copy()
	cfg.RuntimeParams["statement_timeout"] = "0"
	cfg.RuntimeParams["lock_timeout"] = "0"
	sqlDB := stdlib.OpenDB(*cfg)
	m := &Migrator{db: sqlDB, log: slog.Default()}
	// Replicas (and test servers) starting together all migrate at start: a
	// session advisory lock makes one apply the migrations while the others
	// wait, then find nothing pending.
	p, err := goose.NewProvider(goose.DialectPostgres, sqlDB, migrations.FS,
		goose.WithLogger(goose.NopLogger()), goose.WithSessionLocker(&waitingLocker{m: m}),
		goMigrations(emailForm{
			normalizer: func() identity.Normalizer { return db.Normalizer },
			log:        func() *slog.Logger { return m.log },
		}))
	if err != nil {
		sqlDB.Close()
		return nil, fmt.Errorf("migrations: %w", err)
	}
	r, err := migrationReader(sqlDB)
	if err != nil {
		sqlDB.Close()
		return nil, err
	}
	m.provider, m.reader = p, r
	return m, nil
}

// migrationReader is a goose provider over sqlDB without the session lock:
// it reads the migrations' state at once, even while another process
// migrates (Status, Current, Ready).
func migrationReader(sqlDB *sql.DB) (*goose.Provider, error) {
	// It lists the Go migrations too, but never runs them.
	p, err := goose.NewProvider(goose.DialectPostgres, sqlDB, migrations.FS, goose.WithLogger(goose.NopLogger()),
		goMigrations(emailForm{}))
	if err != nil {
		return nil, fmt.Errorf("migrations: %w", err)
	}
	return p, nil
}

// waitingLocker is the session lock of goose's Postgres locker (the same
// advisory lock, lock.DefaultLockID), waited for as long as the context
// lets it: goose's locker gives up after a count of tries, and an index
// build at scale outlasts any count, so a replica would exit while the
// migration it waited for goes on. It says, once, that it waits: without
// that a replica would sit silent for as long as the other's build takes.
type waitingLocker struct {
	m *Migrator
}

var _ lock.SessionLocker = (*waitingLocker)(nil)

// SessionLock tries the lock every migrationLockPoll until it holds it or
// ctx ends.
func (l *waitingLocker) SessionLock(ctx context.Context, conn *sql.Conn) error {
	said := false
	for {
		var locked bool
		if err := conn.QueryRowContext(ctx, "SELECT pg_try_advisory_lock($1)", lock.DefaultLockID).Scan(&locked); err != nil {
			return fmt.Errorf("migrations lock: %w", err)
		}
		if locked {
			return nil
		}
		if !said {
			l.m.log.Info("waiting for another process's migration to finish", "lock", lock.DefaultLockID)
			said = true
		}
		t := time.NewTimer(migrationLockPoll)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("migrations lock: %w", ctx.Err())
		case <-t.C:
		}
	}
}

// SessionUnlock releases the lock. Should it fail, goose closes the
// connection next, and the session's end releases the lock anyway.
func (l *waitingLocker) SessionUnlock(ctx context.Context, conn *sql.Conn) error {
	var unlocked bool
	if err := conn.QueryRowContext(ctx, "SELECT pg_advisory_unlock($1)", lock.DefaultLockID).Scan(&unlocked); err != nil {
		return fmt.Errorf("migrations unlock: %w", err)
	}
	if !unlocked {
		return errors.New("migrations unlock: the lock was not held")
	}
	return nil
}

// Close releases the migrator's handle (not the pool).
func (m *Migrator) Close() error { return m.db.Close() }

// Up applies every pending migration.
func (m *Migrator) Up(ctx context.Context, log *slog.Logger) error {
	m.log = log
	res, err := m.provider.Up(ctx)
	for _, r := range res {
		log.Info("migration applied", "version", r.Source.Version, "file", r.Source.Path, "duration", r.Duration)
	}
	if err != nil {
		return fmt.Errorf("migrate up: %w", err)
	}
	return nil
}

// Down rolls back the newest migration.
func (m *Migrator) Down(ctx context.Context) error {
	if _, err := m.provider.Down(ctx); err != nil {
		return fmt.Errorf("migrate down: %w", err)
	}
	return nil
}

// Status writes each migration and whether it is applied. It reads
// without the migrations' lock, so it answers during another process's
// migration, which may have applied some of its migrations so far.
//
// It writes nothing: goose's Status creates its version table when it is
// missing, so on a database never migrated every migration is listed
// pending without asking goose.
func (m *Migrator) Status(ctx context.Context, w io.Writer) error {
	var st []*goose.MigrationStatus
	if exists, err := versionTableExists(ctx, m.db); err != nil {
		return fmt.Errorf("migrate status: %w", err)
	} else if !exists {
		for _, src := range m.reader.ListSources() {
			st = append(st, &goose.MigrationStatus{Source: src, State: goose.StatePending})
		}
	} else if st, err = m.reader.Status(ctx); err != nil {
		return fmt.Errorf("migrate status: %w", err)
	}
	for _, s := range st {
		applied := "pending"
		if s.State == goose.StatePending {
			applied = "pending"
		} else {
			applied = "applied " + s.AppliedAt.UTC().Format("2006-01-02 15:04:05")
		}
		fmt.Fprintf(w, "%05d  %-30s %s\n", s.Source.Version, s.Source.Path, applied)
	}
	return nil
}

// Current reports whether every migration is applied; /readyz uses it. It
// writes nothing: on a database never migrated (no version table, which
// goose's HasPending would create, and which the app role may not) every
// migration is pending.
func (m *Migrator) Current(ctx context.Context) (bool, error) {
	if exists, err := versionTableExists(ctx, m.db); err != nil || !exists {
		return false, err
	}
	has, err := m.reader.HasPending(ctx)
	if err != nil {
		return false, err
	}
	return !has, nil
}

// versionTableExists reports whether goose's version table exists (as
// goose names it, through the search path), without creating it.
func versionTableExists(ctx context.Context, db *sql.DB) (bool, error) {
	var exists bool
	err := db.QueryRowContext(ctx, "SELECT to_regclass($1) IS NOT NULL", goose.DefaultTablename).Scan(&exists)
	return exists, err
}

// Ready reports whether the database answers and every migration is applied.
func (db *DB) Ready(ctx context.Context) error {
	// On a connection of its own, configured as the app pool's: it answers
	// whether the database does, and proves SET ROLE c360_app works, however
	// busy the app pool is with tenant work.
	if err := db.ready.Ping(ctx); err != nil {
		return interpretError(fmt.Errorf("ping: %w", err))
	}
	// Migrations stay current once they are: a probe every few seconds
	// need not rebuild goose's view of them each time.
	if time.Now().UnixNano() < db.migrationsCurrentUntil.Load() {
		return nil
	}
	// Over the readiness pool's one connection too: a connection of its
	// own, opened when the cache expires, would fail whenever the database
	// is at max_connections, and take every replica out at once. goose
	// reads the migration state without its lock, so the check does not
	// wait for a running migration either.
	sqlDB := stdlib.OpenDBFromPool(db.ready)
	defer sqlDB.Close()
	r, err := migrationReader(sqlDB)
	if err != nil {
		return err
	}
	current, err := (&Migrator{db: sqlDB, reader: r}).Current(ctx)
	if err != nil {
		return interpretError(fmt.Errorf("migration status: %w", err))
	}
	if !current {
		return c360.Errorf(c360.EUNAVAILABLE, "migrations pending")
	}
	db.migrationsCurrentUntil.Store(time.Now().Add(30 * time.Second).UnixNano())
	return nil
}
