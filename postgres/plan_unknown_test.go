package postgres_test

import (
	"context"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/c360dev/c360/bench/seed"
	"github.com/c360dev/c360/internal/pgtest"
	"github.com/c360dev/c360/postgres"
)

// A workspace created after the last ANALYZE is unknown to the planner's
// statistics. Its group statements, planned with their values (as their
// first runs are), must still read every table by key: by id, by identity,
// by event key, not by workspace alone and a filter, which reads every row
// of the workspace in every statement until the next ANALYZE. It takes
// three things together: migration 00013 keeps one most common workspace
// in the statistics, so an unknown one is not taken to hold no rows; the
// reads look their keys up one by one (LATERAL ... OFFSET 0), so they
// cannot be a join against the workspace; and the UPDATEs run with bitmap
// and sequential scans off (byKeyOnly).
func TestUnknownWorkspacePlansStayKeyLookups(t *testing.T) {
	// A database of its own: the statistics must know every workspace but
	// the new one, as on a deployment of a few tenants.
	db, m := emptyStore(t, "unknownws")
	ctx := context.Background()
	if err := m.UpTo(ctx, 12); err != nil {
		t.Fatal(err)
	}
	// The group's statements are this release's and name columns that
	// migrations after 00013 add, which nothing here reads by: add them as
	// those migrations do (00018, events.traits_at).
	if _, err := db.Pool.Exec(ctx, `ALTER TABLE events ADD COLUMN traits_at timestamptz`); err != nil {
		t.Fatal(err)
	}
	for _, n := range []int{3000, 500, 500} {
		ws, _, _ := pgtest.Workspace(t, db)
		if _, err := seed.Run(ctx, db.Pool, ws, seed.Options{Customers: n, EventsPerCustomer: 1, MessagesPerConv: 1}); err != nil {
			t.Fatalf("seed: %v", err)
		}
	}
	if _, err := db.Pool.Exec(ctx, `ANALYZE`); err != nil {
		t.Fatal(err)
	}
	fresh, _, _ := pgtest.Workspace(t, db)
	rows, _ := db.Pool.Query(ctx, `SELECT id FROM customers ORDER BY id LIMIT 50`)
	customers, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	if err != nil {
		t.Fatal(err)
	}
	sqls, args := postgres.GroupStatements(fresh, customers)

	// Before 00013 the planner takes the new workspace to hold no rows,
	// and reads it whole: eight of the group's reads of events, customers,
	// identities and conversations are bounded by workspace_id alone.
	if bad := unkeyedGroupReads(t, db, fresh, sqls, args); len(bad) == 0 {
		t.Fatalf("before 00013 every read was by key; the check proves nothing")
	}
	if err := m.UpTo(ctx, 13); err != nil {
		t.Fatal(err)
	}
	for _, bad := range unkeyedGroupReads(t, db, fresh, sqls, args) {
		t.Errorf("after 00013, %s", bad)
	}
	// The per-event path (merges, outbound messages, and any group that
	// falls back to it) reads the same tables by key too.
	psqls, pargs := postgres.PerEventReadStatements(fresh, customers)
	plans := customPlans(t, db, fresh, psqls, pargs)
	if len(plans) != len(psqls) {
		t.Fatalf("planned %d of the per-event path's %d reads", len(plans), len(psqls))
	}
	for _, p := range plans {
		if bad := p.Plan.readsWholeWorkspace(); bad != "" {
			t.Errorf("after 00013, the per-event path's %s in:\n%s", bad, p.SQL)
		}
	}
}

// unkeyedGroupReads plans each of the group's statements in workspace ws
// with its values, as a custom plan sees them, and describes every read of
// a table that its key does not bound.
func unkeyedGroupReads(t *testing.T, db *postgres.DB, ws int64, sqls []string, args [][]any) []string {
	t.Helper()
	var out []string
	plans := customPlans(t, db, ws, sqls, args)
	for _, p := range plans {
		if bad := p.Plan.readsWholeWorkspace(); bad != "" {
			out = append(out, bad+" in:\n"+p.SQL)
		}
	}
	if len(plans) < 8 {
		t.Fatalf("planned %d statements, want the group's 8 or more", len(plans))
	}
	return out
}
