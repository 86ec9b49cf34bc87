package main

import (
	"context"
	"net/url"
	"testing"

	"github.com/c360dev/c360/internal/pgtest"
)

// TestIngestWorkspaceSeedsPastTheStatementTimeout prepares an ingest
// benchmark's workspace, with two tenants to seed, on a database whose URL
// sets a 1 ms statement timeout. Beside the query's million customers the
// tenants' seeds (a count of the customers, ANALYZE, a search index build)
// can outlast postgres.Open's 10 s as surely as these outlast 1 ms: the
// store they run on lifts the timeout, as the query's seed does.
func TestIngestWorkspaceSeedsPastTheStatementTimeout(t *testing.T) {
	ctx := context.Background()
	u, err := url.Parse(pgtest.URL(t))
	if err != nil {
		t.Fatal(err)
	}
	q := u.Query()
	q.Set("statement_timeout", "1")
	u.RawQuery = q.Encode()
	db := pgtest.Open(t)
	var have int
	if err := db.Pool.QueryRow(ctx, `SELECT count(*) FROM workspaces`).Scan(&have); err != nil {
		t.Fatal(err)
	}
	creds, err := ingestWorkspace(ctx, config{databaseURL: u.String()}, &ingestConfig{tenants: have + 2}, "wh", "timeout test", nil)
	if err != nil {
		t.Fatalf("ingest workspace on a 1 ms statement timeout: %v", err)
	}
	var tenants, customers int
	if err := db.Pool.QueryRow(ctx, `SELECT count(*), (SELECT count(*) FROM customers) FROM workspaces WHERE id <> $1`,
		creds.ID).Scan(&tenants, &customers); err != nil {
		t.Fatal(err)
	}
	if tenants < have+2 || customers < 400 {
		t.Errorf("%d other workspaces with %d customers, want at least %d and 400", tenants, customers, have+2)
	}
}
