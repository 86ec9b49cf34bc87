package postgres_test

import (
	"context"
	"encoding/json"
	"strconv"
	"strings"
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
// of the workspace in every statement until the next ANALYZE. Migration
// 00013 keeps one most common workspace in the statistics, so an unknown
// one is not taken to hold no rows.
func TestUnknownWorkspacePlansStayKeyLookups(t *testing.T) {
	// A database of its own: the statistics must know every workspace but
	// the new one, as on a deployment of a few tenants.
	db, m := emptyStore(t, "unknownws")
	ctx := context.Background()
	if err := m.UpTo(ctx, 12); err != nil {
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
}

// unkeyedGroupReads explains each of the group's statements in workspace
// ws with its values, as a custom plan sees them, and describes every read
// of a table that its key does not bound.
func unkeyedGroupReads(t *testing.T, db *postgres.DB, ws int64, sqls []string, args [][]any) []string {
	t.Helper()
	ctx := context.Background()
	var out []string
	checked := 0
	err := pgx.BeginFunc(ctx, db.Pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SET LOCAL ROLE c360_app`); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `SELECT set_config('c360.workspace_id', $1, true)`, strconv.FormatInt(ws, 10)); err != nil {
			return err
		}
		for i, sql := range sqls {
			if strings.HasPrefix(sql, "SET ") {
				if _, err := tx.Exec(ctx, sql); err != nil {
					return err
				}
				continue
			}
			// Simple protocol: the values are in the text.
			var raw []byte
			a := append([]any{pgx.QueryExecModeSimpleProtocol}, args[i]...)
			if err := tx.QueryRow(ctx, `EXPLAIN (FORMAT JSON) `+sql, a...).Scan(&raw); err != nil {
				return err
			}
			var plans []struct{ Plan scanNode }
			if err := json.Unmarshal(raw, &plans); err != nil {
				return err
			}
			for _, bad := range plans[0].Plan.unkeyedScans() {
				out = append(out, bad+" in:\n"+sql)
			}
			checked++
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if checked < 8 {
		t.Fatalf("explained %d statements, want the group's 8 or more", checked)
	}
	return out
}

// scanNode is a node of EXPLAIN (FORMAT JSON), with what it reads.
type scanNode struct {
	NodeType  string     `json:"Node Type"`
	Relation  string     `json:"Relation Name"`
	IndexCond string     `json:"Index Cond"`
	Plans     []scanNode `json:"Plans"`
}

// unkeyedScans describes each read of a table under n that is bounded by
// nothing (a Seq Scan) or by the workspace alone.
func (n scanNode) unkeyedScans() []string {
	var out []string
	switch {
	case n.Relation == "":
	case n.NodeType == "Seq Scan":
		out = append(out, n.Relation+" by a Seq Scan")
	case strings.Contains(n.NodeType, "Index") && !strings.Contains(n.IndexCond, " AND "):
		out = append(out, n.Relation+" by "+n.NodeType+" on "+n.IndexCond)
	}
	for _, c := range n.Plans {
		out = append(out, c.unkeyedScans()...)
	}
	return out
}
