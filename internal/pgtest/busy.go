package pgtest

import (
	"context"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/c360dev/c360/postgres"
)

// A database that cannot take a write now: a store of its own with a short
// lock_timeout, and a test holding the lock every ingest transaction needs.

// OpenStore opens a store of its own on the test database, with the
// connection settings params (lock_timeout, say), and starts group commit
// sized by cfg.
func OpenStore(t testing.TB, params url.Values, cfg postgres.IngestConfig) *postgres.DB {
	t.Helper()
	u, err := url.Parse(URL(t))
	if err != nil {
		t.Fatal(err)
	}
	q := u.Query()
	for k, v := range params {
		q[k] = v
	}
	u.RawQuery = q.Encode()
	db, err := postgres.Open(context.Background(), u.String())
	if err != nil {
		t.Fatal(err)
	}
	db.StartIngest(cfg)
	t.Cleanup(db.Close)
	return db
}

// LockEvents holds an exclusive lock on the events table, as a long
// migration would, until release is called (at the latest when the test
// ends): every ingest transaction waits for it.
func LockEvents(t testing.TB, db *postgres.DB) (release func()) {
	t.Helper()
	ctx := context.Background()
	tx, err := db.Pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, `LOCK TABLE events IN ACCESS EXCLUSIVE MODE`); err != nil {
		tx.Rollback(ctx)
		t.Fatal(err)
	}
	release = sync.OnceFunc(func() { tx.Rollback(ctx) })
	t.Cleanup(release)
	return release
}

// WaitForLockWait returns once a transaction of this database waits for
// the lock on table.
func WaitForLockWait(t testing.TB, db *postgres.DB, table string) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		var n int
		if err := db.Pool.QueryRow(context.Background(), `SELECT count(*) FROM pg_locks
			WHERE NOT granted AND relation = $1::regclass
			  AND database = (SELECT oid FROM pg_database WHERE datname = current_database())`, table).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n > 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no transaction waits for the lock on %s", table)
		}
	}
}
