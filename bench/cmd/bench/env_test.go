package main

import (
	"context"
	"testing"

	"github.com/c360dev/c360/internal/pgtest"
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
