package postgres_test

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/pressly/goose/v3/lock"

	"github.com/c360dev/c360"
	"github.com/c360dev/c360/internal/pgtest"
	"github.com/c360dev/c360/postgres"
)

// Migrations run without the pools' statement and lock timeouts: an index
// build outlasts any request, and CREATE INDEX CONCURRENTLY waits, under
// the lock timeout, for every older transaction (a backup's too).
func TestMigratorHasNoTimeouts(t *testing.T) {
	db := pgtest.Open(t)
	m, err := db.NewMigrator()
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	for name, want := range map[string]string{"statement_timeout": "0", "lock_timeout": "0"} {
		if got := m.Setting(t.Context(), t, name); got != want {
			t.Errorf("migrator's %s = %q, want %q", name, got, want)
		}
		var pool string
		if err := db.Pool.QueryRow(t.Context(), "SHOW "+name).Scan(&pool); err != nil {
			t.Fatal(err)
		}
		if pool == want {
			t.Errorf("the pool's %s is %q too: requests would have no bound", name, pool)
		}
	}
}

// emptyStore opens a database of the test's own with no migration applied,
// and a migrator on it.
func emptyStore(t *testing.T, suffix string) (*postgres.DB, *postgres.Migrator) {
	t.Helper()
	db, err := postgres.Open(context.Background(), pgtest.EmptyDatabase(t, suffix))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(db.Close)
	m, err := db.NewMigrator()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return db, m
}

// indexes returns the indexes of conversations, customer_changes and
// customers, and whether each is valid.
func indexes(t *testing.T, db *postgres.DB) map[string]bool {
	t.Helper()
	rows, err := db.Pool.Query(context.Background(), `SELECT indexrelid::regclass::text, indisvalid FROM pg_index
		WHERE indrelid IN ('conversations'::regclass, 'customer_changes'::regclass, 'customers'::regclass)`)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]bool{}
	for rows.Next() {
		var n string
		var valid bool
		if err := rows.Scan(&n, &valid); err != nil {
			t.Fatal(err)
		}
		out[n] = valid
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// A CONCURRENTLY migration cut short leaves the index it was building,
// invalid; running the migrations again must finish the job.
func TestConcurrentMigrationsRunAgainAfterACutShortRun(t *testing.T) {
	ctx := context.Background()
	db, m := emptyStore(t, "cutshort")

	// Up to 00009, then what a cut-short 00010, 00011 and 00012 leave:
	// their new indexes, invalid (as a CREATE INDEX CONCURRENTLY that
	// failed leaves them), and the old index still there.
	if err := m.UpTo(ctx, 9); err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{
		`CREATE INDEX conversations_customer_id_idx ON conversations (workspace_id, customer_id, id DESC)`,
		`CREATE INDEX customer_changes_created_brin ON customer_changes USING brin (created_at)`,
		`CREATE INDEX customers_merged_into_idx ON customers (workspace_id, merged_into) WHERE merged_into IS NOT NULL`,
		`UPDATE pg_index SET indisvalid = false WHERE indexrelid IN ('conversations_customer_id_idx'::regclass, 'customer_changes_created_brin'::regclass,
			'customers_merged_into_idx'::regclass)`,
	} {
		if _, err := db.Pool.Exec(ctx, s); err != nil {
			t.Fatalf("%s: %v", s, err)
		}
	}
	if err := m.Up(ctx, slog.New(slog.DiscardHandler)); err != nil {
		t.Fatalf("migrate up after a cut-short run: %v", err)
	}
	got := indexes(t, db)
	for _, want := range []string{"conversations_customer_id_idx", "customer_changes_created_brin", "customers_merged_into_idx"} {
		if valid, ok := got[want]; !ok || !valid {
			t.Errorf("index %s: present %v, valid %v; want it built again, valid (%v)", want, ok, valid, got)
		}
	}
	if _, ok := got["conversations_customer_idx"]; ok {
		t.Errorf("the old conversations_customer_idx is still there: %v", got)
	}
}

// 00014 down to 00010 roll back to the function, statistics, indexes and
// storage of 00009, and forward again.
func TestConcurrentMigrationsRollBack(t *testing.T) {
	ctx := context.Background()
	db, m := emptyStore(t, "rollback")
	if err := m.Up(ctx, slog.New(slog.DiscardHandler)); err != nil {
		t.Fatal(err)
	}
	if err := m.DownTo(ctx, 11); err != nil {
		t.Fatalf("down to 00011: %v", err)
	}
	if got := indexes(t, db); !got["customer_changes_created_brin"] || got["customers_merged_into_idx"] {
		t.Errorf("after down to 00011: want 00011's index and not 00012's: %v", got)
	}
	if searchFunction(t, db) {
		t.Errorf("after down to 00011: 00014's c360_search_customers is still there")
	}
	if got := workspaceStatistics(t, db); got != -1 {
		t.Errorf("after down to 00011: statistics target of workspace_id %d, want -1 (00013 rolled back)", got)
	}
	if err := m.DownTo(ctx, 9); err != nil {
		t.Fatalf("down to 00009: %v", err)
	}
	got := indexes(t, db)
	if valid, ok := got["conversations_customer_idx"]; !ok || !valid {
		t.Errorf("after down: conversations_customer_idx present %v, valid %v (%v)", ok, valid, got)
	}
	for _, gone := range []string{"conversations_customer_id_idx", "customer_changes_created_brin", "customers_merged_into_idx"} {
		if _, ok := got[gone]; ok {
			t.Errorf("after down: %s is still there (%v)", gone, got)
		}
	}
	var opts []string
	if err := db.Pool.QueryRow(ctx, `SELECT coalesce(reloptions, '{}') FROM pg_class WHERE oid = 'conversations'::regclass`).Scan(&opts); err != nil {
		t.Fatal(err)
	}
	for _, o := range opts {
		if strings.HasPrefix(o, "fillfactor") {
			t.Errorf("after down: conversations still has %s", o)
		}
	}
	if err := m.Up(ctx, slog.New(slog.DiscardHandler)); err != nil {
		t.Fatalf("up again: %v", err)
	}
	if got := indexes(t, db); !got["conversations_customer_id_idx"] || !got["customer_changes_created_brin"] || !got["customers_merged_into_idx"] {
		t.Errorf("up again: %v", got)
	}
	if !searchFunction(t, db) {
		t.Errorf("up again: no c360_search_customers")
	}
	if got := workspaceStatistics(t, db); got != 1 {
		t.Errorf("up again: statistics target of workspace_id %d, want 00013's 1", got)
	}
}

// workspaceStatistics returns the statistics target of workspace_id on
// every tenant table 00013 sets, failing if they differ.
func workspaceStatistics(t *testing.T, db *postgres.DB) int {
	t.Helper()
	rows, _ := db.Pool.Query(context.Background(), `SELECT DISTINCT coalesce(a.attstattarget, -1)::int FROM pg_attribute a
		WHERE a.attname = 'workspace_id' AND a.attrelid = ANY('{customers,identities,events,customer_changes,conversations,messages,consents,observations,merges,customer_separations,audit_log,dead_letters}'::regclass[])`)
	got, err := pgx.CollectRows(rows, pgx.RowTo[int])
	if err != nil || len(got) != 1 {
		t.Fatalf("statistics targets of workspace_id: %v (%v), want one value", got, err)
	}
	return got[0]
}

// searchFunction says whether migration 00014's search function exists.
func searchFunction(t *testing.T, db *postgres.DB) bool {
	t.Helper()
	var ok bool
	if err := db.Pool.QueryRow(context.Background(),
		`SELECT to_regprocedure('c360_search_customers(text, integer, timestamptz, bigint)') IS NOT NULL`).Scan(&ok); err != nil {
		t.Fatal(err)
	}
	return ok
}

// A replica that finds another process's migration running waits for it
// to finish, however long it takes (an index build at scale outlasts any
// count of tries goose's locker would make), says once that it waits, then
// finds the rest to do.
func TestMigrationWaitsForAnotherProcesssLock(t *testing.T) {
	ctx := context.Background()
	postgres.SetMigrationLockPoll(t, 10*time.Millisecond)
	db, m := emptyStore(t, "lockwait")
	// Another process's migration: a session holding goose's advisory lock.
	other, err := db.Pool.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Release()
	if _, err := other.Exec(ctx, "SELECT pg_advisory_lock($1)", lock.DefaultLockID); err != nil {
		t.Fatal(err)
	}
	var out syncBuffer
	done := make(chan error, 1)
	go func() { done <- m.Up(ctx, slog.New(slog.NewTextHandler(&out, nil))) }()
	// 2 s is some 200 tries at the shortened period: goose's locker, which
	// gives up after 60, or any count near it, ends Up here.
	select {
	case err := <-done:
		t.Fatalf("migrate up ended while another process held the lock: %v", err)
	case <-time.After(2 * time.Second):
	}
	if got := strings.Count(out.String(), "waiting for another process's migration to finish"); got != 1 {
		t.Errorf("log says it waits %d times, want once:\n%s", got, out.String())
	}
	if _, err := other.Exec(ctx, "SELECT pg_advisory_unlock($1)", lock.DefaultLockID); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("migrate up after the lock was released: %v", err)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("migrate up still waits after the lock was released")
	}
	if ok, err := m.Current(ctx); err != nil || !ok {
		t.Errorf("after up: current %v (%v), want every migration applied", ok, err)
	}
}

// Status reads without the migrations' lock: an operator asking during
// another process's long migration (an index build) gets the state at
// once instead of waiting for the migration to end.
func TestMigrationStatusDoesNotWaitForTheLock(t *testing.T) {
	ctx := context.Background()
	db, m := emptyStore(t, "statusnowait")
	if err := m.UpTo(ctx, 2); err != nil {
		t.Fatal(err)
	}
	other, err := db.Pool.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Release()
	if _, err := other.Exec(ctx, "SELECT pg_advisory_lock($1)", lock.DefaultLockID); err != nil {
		t.Fatal(err)
	}
	defer other.Exec(ctx, "SELECT pg_advisory_unlock($1)", lock.DefaultLockID)
	sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	var out bytes.Buffer
	start := time.Now()
	if err := m.Status(sctx, &out); err != nil {
		t.Fatalf("status while another process holds the lock: %v after %v", err, time.Since(start))
	}
	if !strings.Contains(out.String(), "00002_messaging.sql            applied") || !strings.Contains(out.String(), "00003_identity.sql             pending") {
		t.Errorf("status printed:\n%s\nwant 2 applied and 3 pending", out.String())
	}
}

// syncBuffer is a bytes.Buffer a logger on another goroutine writes to.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// A database owner without CREATEROLE migrates when an administrator made
// c360_app and granted it to them beforehand, as docs/operations.md
// recommends: PostgreSQL checks CREATEROLE before it looks for the role, so
// an unconditional CREATE ROLE failed with 42501 though the role existed.
func TestMigrateAsAnOwnerWithoutCreateRole(t *testing.T) {
	ctx := context.Background()
	dbURL := pgtest.EmptyDatabase(t, "nocreaterole")
	u, err := url.Parse(dbURL)
	if err != nil {
		t.Fatal(err)
	}
	dbName := strings.TrimPrefix(u.Path, "/")
	role := fmt.Sprintf("c360_t_owner_%d", os.Getpid())
	admin, err := pgx.Connect(ctx, os.Getenv("TEST_DATABASE_URL"))
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(ctx)
	for _, s := range []string{
		`DROP ROLE IF EXISTS ` + role,
		`CREATE ROLE ` + role + ` LOGIN`,
		`ALTER DATABASE ` + dbName + ` OWNER TO ` + role,
		`DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'c360_app') THEN CREATE ROLE c360_app NOLOGIN; END IF; END $$`,
		`GRANT c360_app TO ` + role,
	} {
		if _, err := admin.Exec(ctx, s); err != nil {
			t.Fatalf("%s: %v", s, err)
		}
	}
	t.Cleanup(func() {
		// The role owns the database: drop it first (EmptyDatabase's own
		// drop then finds nothing).
		c, err := pgx.Connect(context.Background(), os.Getenv("TEST_DATABASE_URL"))
		if err != nil {
			t.Error(err)
			return
		}
		defer c.Close(context.Background())
		for _, s := range []string{`DROP DATABASE IF EXISTS ` + dbName + ` WITH (FORCE)`, `DROP ROLE ` + role} {
			if _, err := c.Exec(context.Background(), s); err != nil {
				t.Errorf("%s: %v", s, err)
			}
		}
	})
	u.User = url.User(role)
	db, err := postgres.Open(ctx, u.String())
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	m, err := db.NewMigrator()
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if err := m.Up(ctx, slog.New(slog.DiscardHandler)); err != nil {
		t.Fatalf("migrate up as an owner with LOGIN only: %v", err)
	}
	if err := db.Ready(ctx); err != nil {
		t.Errorf("ready after migrating as that owner: %v", err)
	}
}

// On a database never migrated, migrate status and /readyz's check read
// and write nothing: goose's Status and HasPending create their version
// table when it is missing, which status must not (it reads, docs say),
// and which the readiness check, as the app role, cannot: it retried the
// refused CREATE TABLE until its deadline and answered that the database
// was unavailable instead of that migrations are pending.
func TestMigrationStateOfANewDatabaseWritesNothing(t *testing.T) {
	ctx := context.Background()
	db, m := emptyStore(t, "statusreadonly")
	rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	start := time.Now()
	err := db.Ready(rctx)
	if c360.ErrorCode(err) != c360.EUNAVAILABLE || c360.ErrorMessage(err) != "migrations pending" {
		t.Errorf("ready on a new database: %v after %v, want migrations pending", err, time.Since(start))
	}
	var out bytes.Buffer
	if err := m.Status(ctx, &out); err != nil {
		t.Fatal(err)
	}
	pending := func() (n, of int) {
		lines := strings.Split(strings.TrimSpace(out.String()), "\n")
		for _, l := range lines {
			if strings.HasSuffix(l, " pending") {
				n++
			}
		}
		return n, len(lines)
	}
	if n, of := pending(); n != of || of < 20 {
		t.Errorf("status of a new database:\n%s\nwant every migration pending", out.String())
	}
	var exists bool
	if err := db.Pool.QueryRow(ctx, "SELECT to_regclass('goose_db_version') IS NOT NULL").Scan(&exists); err != nil {
		t.Fatal(err)
	}
	if exists {
		t.Error("status or the readiness check created goose_db_version")
	}
	// Once migrated, both read it.
	if err := m.Up(ctx, slog.New(slog.DiscardHandler)); err != nil {
		t.Fatal(err)
	}
	if err := db.Ready(ctx); err != nil {
		t.Errorf("ready after migrating: %v", err)
	}
	out.Reset()
	if err := m.Status(ctx, &out); err != nil {
		t.Fatal(err)
	}
	if n, _ := pending(); n != 0 {
		t.Errorf("status after migrating: %v\n%s", err, out.String())
	}
}

// reloptions returns the storage parameters of relation rel.
func reloptions(t *testing.T, db *postgres.DB, rel string) []string {
	t.Helper()
	var opts []string
	if err := db.Pool.QueryRow(context.Background(),
		`SELECT coalesce(reloptions, '{}') FROM pg_class WHERE oid = $1::regclass`, rel).Scan(&opts); err != nil {
		t.Fatal(err)
	}
	return opts
}

// Migration 00022 has the BRIN index on customer_changes.created_at
// summarize each block range as it fills, and autovacuum vacuum the table
// after 2% of its rows are inserted: without them a range stayed
// unsummarized until a VACUUM, which came after 20%, and every sweep of
// CustomersChangedSince read the whole tail since. Down resets both.
func TestChangesBRINSummarizesItself(t *testing.T) {
	ctx := context.Background()
	db, m := emptyStore(t, "brinsummarize")
	if err := m.Up(ctx, slog.New(slog.DiscardHandler)); err != nil {
		t.Fatal(err)
	}
	has := func(rel, opt string) bool {
		for _, o := range reloptions(t, db, rel) {
			if o == opt {
				return true
			}
		}
		return false
	}
	if !has("customer_changes_created_brin", "autosummarize=on") {
		t.Errorf("customer_changes_created_brin options %v, want autosummarize=on", reloptions(t, db, "customer_changes_created_brin"))
	}
	if !has("customer_changes", "autovacuum_vacuum_insert_scale_factor=0.02") {
		t.Errorf("customer_changes options %v, want autovacuum_vacuum_insert_scale_factor=0.02", reloptions(t, db, "customer_changes"))
	}
	if err := m.DownTo(ctx, 21); err != nil {
		t.Fatalf("down to 00021: %v", err)
	}
	if has("customer_changes_created_brin", "autosummarize=on") || has("customer_changes", "autovacuum_vacuum_insert_scale_factor=0.02") {
		t.Errorf("after down to 00021: index options %v, table options %v, want 00022's reset",
			reloptions(t, db, "customer_changes_created_brin"), reloptions(t, db, "customer_changes"))
	}
	if !has("customer_changes", "autovacuum_analyze_scale_factor=0.02") {
		t.Errorf("after down to 00021: customer_changes options %v, want 00008's kept", reloptions(t, db, "customer_changes"))
	}
}
