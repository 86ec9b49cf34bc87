package postgres_test

import (
	"context"
	"log/slog"
	"testing"
	"time"

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
