package postgres_test

import (
	"context"
	"strconv"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/c360dev/c360/bench/seed"
	"github.com/c360dev/c360/internal/pgtest"
	"github.com/c360dev/c360/postgres"
)

// PostgreSQL may run a prepared statement with a generic plan, made without
// the parameters' values. For a lookup of one customer that follows a
// merge, that plan must still read customers by id: a scan of the
// workspace's customers costs milliseconds at thousands of customers
// and a table scan at a million.
func TestMergeFollowingPlansStayIndexLookups(t *testing.T) {
	db := pgtest.Open(t)
	ws, _, _ := pgtest.Workspace(t, db)
	ctx := context.Background()
	if _, err := seed.Run(ctx, db.Pool, ws, seed.Options{Customers: 3000, EventsPerCustomer: 1, MessagesPerConv: 1}); err != nil {
		t.Fatalf("seed: %v", err)
	}
	if _, err := db.Pool.Exec(ctx, `ANALYZE customers`); err != nil {
		t.Fatal(err)
	}
	var customer int64
	if err := db.Pool.QueryRow(ctx, `SELECT max(id) FROM customers WHERE workspace_id = $1`, ws).Scan(&customer); err != nil {
		t.Fatal(err)
	}
	for name, st := range postgres.PlannedStatements {
		err := pgx.BeginFunc(ctx, db.Pool, func(tx pgx.Tx) error {
			for _, s := range []string{`SET LOCAL ROLE c360_app`, `SET LOCAL plan_cache_mode = force_generic_plan`} {
				if _, err := tx.Exec(ctx, s); err != nil {
					return err
				}
			}
			if _, err := tx.Exec(ctx, `SELECT set_config('c360.workspace_id', $1, true)`, strconv.FormatInt(ws, 10)); err != nil {
				return err
			}
			if _, err := tx.Exec(ctx, `PREPARE planned_`+name+` AS `+st.SQL); err != nil {
				return err
			}
			args := st.Args(ws, customer)
			lits := make([]string, len(args))
			for i, a := range args {
				switch v := a.(type) {
				case int64:
					lits[i] = strconv.FormatInt(v, 10)
				case []int64:
					lits[i] = "ARRAY[" + strconv.FormatInt(v[0], 10) + "]::bigint[]"
				}
			}
			rows, err := tx.Query(ctx, `EXPLAIN EXECUTE planned_`+name+`(`+strings.Join(lits, ", ")+`)`)
			if err != nil {
				return err
			}
			plan, err := pgx.CollectRows(rows, pgx.RowTo[string])
			if err != nil {
				return err
			}
			if _, err := tx.Exec(ctx, `DEALLOCATE planned_`+name); err != nil {
				return err
			}
			// Every read of customers is an index lookup by id: a seq or
			// bitmap scan, or an index scan bounded only by the workspace,
			// reads the whole workspace.
			text := strings.Join(plan, "\n")
			for i, line := range plan {
				if !strings.Contains(line, " on customers ") {
					continue
				}
				bounded := strings.Contains(line, "Index") && i+1 < len(plan) &&
					strings.Contains(plan[i+1], "Index Cond") && strings.Contains(plan[i+1], "(id = ")
				if !bounded {
					t.Errorf("%s: generic plan reads customers without an id bound (%s):\n%s", name, strings.TrimSpace(line), text)
				}
			}
			return nil
		})
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
	}
}

// The tables a new workspace grows into are analyzed early (migration
// 00008), so its statistics do not stay those of before it existed.
func TestTenantTablesAnalyzeEarly(t *testing.T) {
	db := pgtest.Open(t)
	for _, table := range []string{"customers", "identities", "events", "customer_changes", "conversations", "messages"} {
		var opts []string
		if err := db.Pool.QueryRow(context.Background(), `SELECT coalesce(reloptions, '{}') FROM pg_class WHERE oid = $1::regclass`, table).Scan(&opts); err != nil {
			t.Fatal(err)
		}
		got := strings.Join(opts, ",")
		if !strings.Contains(got, "autovacuum_analyze_scale_factor=0.02") || !strings.Contains(got, "autovacuum_analyze_threshold=1000") {
			t.Errorf("%s: reloptions %q, want the early-analyze settings", table, got)
		}
	}
}
