package postgres_test

import (
	"context"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/c360dev/c360"
	"github.com/c360dev/c360/internal/pgtest"
	"github.com/c360dev/c360/postgres"
)

// /readyz's check: ready when migrated; not ready while a migration is
// pending, even on a store that was ready before (its cache of the answer
// does not hide a pending migration from a fresh check).
func TestReadyFollowsMigrations(t *testing.T) {
	ctx := context.Background()
	db := pgtest.Open(t)
	if err := db.Ready(ctx); err != nil {
		t.Fatalf("migrated store: %v, want ready", err)
	}
	m, err := db.NewMigrator()
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if err := m.Down(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		// Leave the binary's database migrated for the other tests,
		// whatever happened above (a no-op when the test got that far).
		m, err := db.NewMigrator()
		if err == nil {
			err = m.Up(ctx, slog.New(slog.DiscardHandler))
			m.Close()
		}
		if err != nil {
			t.Errorf("migrate up again: %v", err)
		}
	})
	fresh := pgtest.Open(t)
	if err := fresh.Ready(ctx); c360.ErrorCode(err) != c360.EUNAVAILABLE {
		t.Errorf("with a migration pending: %v, want UNAVAILABLE", err)
	}
	if err := m.Up(ctx, slog.New(slog.DiscardHandler)); err != nil {
		t.Fatal(err)
	}
	if err := fresh.Ready(ctx); err != nil {
		t.Errorf("migrated again: %v, want ready", err)
	}
}

// Every webhook finds its workspace by slug, through a short cache; an
// update on this replica is seen at once.
func TestWorkspaceUpdateSeenAtOnce(t *testing.T) {
	ctx := context.Background()
	db := pgtest.Open(t)
	_, slug, _ := pgtest.Workspace(t, db)
	before, err := db.FindWorkspaceBySlug(ctx, slug)
	if err != nil {
		t.Fatal(err)
	}
	token := "rotated-token"
	if _, err := db.UpdateWorkspace(ctx, slug, c360.WorkspaceUpdate{TwilioAuthToken: &token}); err != nil {
		t.Fatal(err)
	}
	after, err := db.FindWorkspaceBySlug(ctx, slug)
	if err != nil {
		t.Fatal(err)
	}
	if after.TwilioAuthToken != token || before.TwilioAuthToken == token {
		t.Errorf("auth token after update = %q (before %q), want %q", after.TwilioAuthToken, before.TwilioAuthToken, token)
	}
	if _, err := db.FindWorkspaceBySlug(ctx, "no-such-slug"); c360.ErrorCode(err) != c360.ENOTFOUND {
		t.Errorf("unknown slug: %v, want NOT_FOUND", err)
	}
}

// /readyz's check does not queue behind tenant work: with every connection
// of the tenant pool (C360_DB_MAX_CONNS=2) busy, the database still answers,
// and the replica stays in the load balancer.
func TestReadyWhileTheTenantPoolIsBusy(t *testing.T) {
	db := pgtest.Open(t, postgres.MaxConns(2))
	db.HoldAppConns(t, 2)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := db.Ready(ctx); err != nil {
		t.Errorf("with the tenant pool busy: %v, want ready", err)
	}
}

// /readyz's check needs no connection beyond the readiness pool's one:
// opening another for the migration state failed whenever the database was
// at max_connections, on every replica at once. A role allowed a single
// connection stands for a full database.
func TestReadyOnOneConnection(t *testing.T) {
	ctx := context.Background()
	base := pgtest.URL(t)
	owner, err := pgx.Connect(ctx, base)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { owner.Close(ctx) })
	role := fmt.Sprintf("c360_t_ready_%d", os.Getpid())
	if _, err := owner.Exec(ctx, "DROP ROLE IF EXISTS "+role); err != nil {
		t.Fatal(err)
	}
	if _, err := owner.Exec(ctx, "CREATE ROLE "+role+" LOGIN CONNECTION LIMIT 1 IN ROLE c360_app"); err != nil {
		t.Fatal(err)
	}
	u, err := url.Parse(base)
	if err != nil {
		t.Fatal(err)
	}
	u.User = url.User(role)
	db, err := postgres.Open(ctx, u.String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		db.Close()
		if _, err := owner.Exec(ctx, "DROP ROLE "+role); err != nil {
			t.Errorf("drop role: %v", err)
		}
	})
	for i := 0; i < 2; i++ {
		if err := db.Ready(ctx); err != nil {
			t.Fatalf("ready as a role with one connection (probe %d): %v", i+1, err)
		}
	}
}
