package postgres_test

import (
	"context"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/pressly/goose/v3"

	"github.com/c360dev/c360/internal/pgtest"
	"github.com/c360dev/c360/migrations"
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

// A CONCURRENTLY migration cut short leaves the index it was building,
// invalid; running the migrations again must finish the job.
func TestConcurrentMigrationsRunAgainAfterACutShortRun(t *testing.T) {
	ctx := context.Background()
	base := os.Getenv("TEST_DATABASE_URL")
	conn, err := pgx.Connect(ctx, base)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	name := fmt.Sprintf("c360_t_migrate_%d", os.Getpid())
	if _, err := conn.Exec(ctx, "DROP DATABASE IF EXISTS "+name); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		// conn is closed by now: the test's defers ran first.
		c, err := pgx.Connect(context.Background(), base)
		if err != nil {
			t.Errorf("drop %s: %v", name, err)
			return
		}
		defer c.Close(context.Background())
		if _, err := c.Exec(context.Background(), "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)"); err != nil {
			t.Errorf("drop %s: %v", name, err)
		}
	})
	u, _ := url.Parse(base)
	u.Path = "/" + name
	db, err := postgres.Open(ctx, u.String())
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()

	// Up to 00009, then what a cut-short 00010 and 00011 leave: their new
	// indexes, invalid (as a CREATE INDEX CONCURRENTLY that failed leaves
	// them), and the old index still there.
	sqlDB := stdlib.OpenDBFromPool(db.Pool)
	defer sqlDB.Close()
	p, err := goose.NewProvider(goose.DialectPostgres, sqlDB, migrations.FS, goose.WithLogger(goose.NopLogger()))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.UpTo(ctx, 9); err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{
		`CREATE INDEX conversations_customer_id_idx ON conversations (workspace_id, customer_id, id DESC)`,
		`CREATE INDEX customer_changes_created_brin ON customer_changes USING brin (created_at)`,
		`UPDATE pg_index SET indisvalid = false WHERE indexrelid IN ('conversations_customer_id_idx'::regclass, 'customer_changes_created_brin'::regclass)`,
	} {
		if _, err := db.Pool.Exec(ctx, s); err != nil {
			t.Fatalf("%s: %v", s, err)
		}
	}
	m, err := db.NewMigrator()
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if err := m.Up(ctx, slog.New(slog.DiscardHandler)); err != nil {
		t.Fatalf("migrate up after a cut-short run: %v", err)
	}
	indexes := map[string]bool{}
	rows, err := db.Pool.Query(ctx, `SELECT indexrelid::regclass::text, indisvalid FROM pg_index
		WHERE indrelid IN ('conversations'::regclass, 'customer_changes'::regclass)`)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var n string
		var valid bool
		if err := rows.Scan(&n, &valid); err != nil {
			t.Fatal(err)
		}
		indexes[n] = valid
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"conversations_customer_id_idx", "customer_changes_created_brin"} {
		if valid, ok := indexes[want]; !ok || !valid {
			t.Errorf("index %s: present %v, valid %v; want it built again, valid (%v)", want, ok, valid, indexes)
		}
	}
	if _, ok := indexes["conversations_customer_idx"]; ok {
		t.Errorf("the old conversations_customer_idx is still there: %v", indexes)
	}
}
