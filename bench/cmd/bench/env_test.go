package main

import (
	"context"
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/c360dev/c360/bench/seed"
	"github.com/c360dev/c360/internal/pgtest"
	"github.com/c360dev/c360/postgres"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// TestSeedMigratesAFreshDatabase runs `bench seed` on a database no
// migration has touched, as make bench's c360_bench is on a fresh
// checkout: the tool migrates it, then seeds.
func TestSeedMigratesAFreshDatabase(t *testing.T) {
	url := pgtest.EmptyDatabase(t, "fresh")
	t.Setenv("DATABASE_URL", url)
	if err := run(context.Background(), []string{"seed", "--customers", "50"}); err != nil {
		t.Fatalf("bench seed on a fresh database: %v", err)
	}
	// A second run finds nothing to migrate and seeds again.
	if err := run(context.Background(), []string{"seed", "--customers", "50"}); err != nil {
		t.Fatalf("bench seed again: %v", err)
	}
}

// TestReuseFindsOnlyCompleteQuerySeeds gives --reuse a database holding,
// besides one complete query seed of 30 customers, a newer one cut short
// by an interrupt, and webhook and batch workspaces with as many
// customers: it picks the complete one; for another size it seeds one.
func TestReuseFindsOnlyCompleteQuerySeeds(t *testing.T) {
	ctx := context.Background()
	t.Setenv("DATABASE_URL", pgtest.EmptyDatabase(t, "reuse"))
	if err := run(ctx, []string{"seed", "--customers", "30"}); err != nil {
		t.Fatal(err)
	}
	// A second seed, interrupted after its first COPY.
	cut, cancel := context.WithCancel(ctx)
	defer cancel()
	progress := seedProgress
	defer func() { seedProgress = progress }()
	seedProgress = func(format string, args ...any) {
		progress(format, args...)
		if len(args) > 0 && args[0] == "customers" {
			cancel()
		}
	}
	if err := run(cut, []string{"seed", "--customers", "30"}); !errors.Is(err, context.Canceled) {
		t.Fatalf("interrupted seed: %v, want the cancellation", err)
	}
	db, err := postgres.Open(ctx, os.Getenv("DATABASE_URL"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	for _, slug := range []string{"bench-wh-1", "bench-batch-1"} {
		creds, err := db.CreateWorkspace(ctx, slug, "other benchmark")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := seed.Run(ctx, db.Pool, creds.ID, seed.Options{Customers: 30, EventsPerCustomer: 2, MessagesPerConv: 2}); err != nil {
			t.Fatal(err)
		}
	}
	var complete int64
	if err := db.Pool.QueryRow(ctx, `SELECT id FROM workspaces WHERE slug LIKE 'bench-query-%' ORDER BY id LIMIT 1`).Scan(&complete); err != nil {
		t.Fatal(err)
	}

	cfg := config{databaseURL: os.Getenv("DATABASE_URL"), reuse: true, shape: seed.Skewed(30)}
	b, err := seedWorkspace(ctx, cfg)
	if err != nil {
		t.Fatalf("--reuse: %v", err)
	}
	if b.ws != complete || b.customers != 30 || b.shape.RichCustomers() != 3 {
		t.Errorf("--reuse picked workspace %d (%s, %d customers, %d rich), want %d", b.ws, b.slug, b.customers, b.shape.RichCustomers(), complete)
	}
	// None of 20 customers: --reuse seeds one, then finds it.
	cfg.shape = seed.Skewed(20)
	b20, err := seedWorkspace(ctx, cfg)
	if err != nil {
		t.Fatalf("--reuse for 20 customers: %v", err)
	}
	if b20.ws == complete || b20.customers != 20 {
		t.Errorf("--reuse for 20 customers took workspace %d (%d customers), want a new one of 20", b20.ws, b20.customers)
	}
	if again, err := seedWorkspace(ctx, cfg); err != nil || again.ws != b20.ws {
		t.Errorf("--reuse for 20 customers again: %v, %v; want workspace %d", again, err, b20.ws)
	}
}

// TestSeedOfFiveCustomers: bench seed --customers 5 seeds (one rich
// customer), where the shape of 5·2 messages could not give it its 12.
func TestSeedOfFiveCustomers(t *testing.T) {
	t.Setenv("DATABASE_URL", pgtest.EmptyDatabase(t, "five"))
	if err := run(context.Background(), []string{"seed", "--customers", "5"}); err != nil {
		t.Fatalf("bench seed --customers 5: %v", err)
	}
}

// TestReuseFindsAnOlder1MSeed records a 1M seed as the code before
// seed.Skewed recorded it (bench_seeds, oldShape), and looks it up with
// the shape the flags' defaults now give: --reuse finds it, so make bench
// does not seed its million customers again.
func TestReuseFindsAnOlder1MSeed(t *testing.T) {
	ctx := context.Background()
	url := pgtest.EmptyDatabase(t, "reuse1m")
	if err := migrate(ctx, url); err != nil {
		t.Fatal(err)
	}
	db, err := postgres.Open(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Pool.Exec(ctx, seedsTableSQL); err != nil {
		t.Fatal(err)
	}
	creds, err := db.CreateWorkspace(ctx, "bench-query-1", "benchmark")
	if err != nil {
		t.Fatal(err)
	}
	old := oldShape(1_000_000)
	events, _, messages := old.Totals()
	if _, err := db.Pool.Exec(ctx, `INSERT INTO bench_seeds (workspace_id, customers, rich, rich_events, rich_messages, events, messages, seconds)
		VALUES ($1, $2, $3, $4, $5, $6, $7, 151)`, creds.ID, old.Customers, old.RichCustomers(), old.EventsPerCustomer,
		old.MessagesPerConv, events, messages); err != nil {
		t.Fatal(err)
	}
	b, err := reuseWorkspace(ctx, db, seedShape(1_000_000, 10, 25, 12, 10, 2))
	if err != nil || b == nil || b.ws != creds.ID {
		t.Fatalf("--reuse at 1M: %+v, %v; want workspace %d", b, err, creds.ID)
	}
}

// TestRefusesANonDurableServer: the header reads the server's durability
// settings, and a measuring run on sessions with synchronous_commit off
// is refused before anything is measured, unless --allow-nondurable; a
// seed only warns. The baseline's header said "synchronous_commit on"
// without asking.
func TestRefusesANonDurableServer(t *testing.T) {
	ctx := context.Background()
	url := pgtest.EmptyDatabase(t, "nondurable")
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	d, err := readDurability(ctx, conn)
	conn.Close(ctx)
	if err != nil || d.fsync != "on" || d.synchronousCommit != "on" || d.notDurable() != "" || !strings.Contains(d.String(), "wal_sync_method ") {
		t.Fatalf("the test cluster: %v, %v; want fsync and synchronous_commit on", d, err)
	}
	t.Setenv("DATABASE_URL", url+"&options=-c%20synchronous_commit%3Doff")
	for _, cmd := range []string{"baseline", "query", "webhooks", "batch", "fanout", "all"} {
		// Small sizes: a run not refused would go on with them.
		err := run(ctx, []string{cmd, "--duration", "1s", "--customers", "50", "--subscribers", "10", "--tenants", "0", "--binary", "/nonexistent"})
		if err == nil || !strings.Contains(err.Error(), "synchronous_commit off") || !strings.Contains(err.Error(), "--allow-nondurable") {
			t.Errorf("bench %s with synchronous_commit off: %v, want it refused", cmd, err)
		}
	}
	if err := run(ctx, []string{"seed", "--customers", "5"}); err != nil {
		t.Errorf("bench seed with synchronous_commit off: %v, want a warning only", err)
	}
	if got := (durability{fsync: "off", synchronousCommit: "off"}).notDurable(); got != "fsync off and synchronous_commit off" {
		t.Errorf("fsync and synchronous_commit off: %q", got)
	}
	if got := (durability{fsync: "on", synchronousCommit: "local"}).notDurable(); got != "" {
		t.Errorf("synchronous_commit local (flushed locally): %q, want durable", got)
	}
}
