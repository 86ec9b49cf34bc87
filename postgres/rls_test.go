package postgres_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/c360dev/c360"
	"github.com/c360dev/c360/internal/pgtest"
)

// appConn connects as the service's role, c360_app, as the app pool does.
func appConn(t *testing.T) *pgx.Conn {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, pgtest.URL(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(ctx) })
	if _, err := conn.Exec(ctx, "SET ROLE c360_app"); err != nil {
		t.Fatal(err)
	}
	return conn
}

func TestRowLevelSecurity(t *testing.T) {
	db := pgtest.Open(t)
	wsA, _, _ := pgtest.Workspace(t, db)
	wsB, _, _ := pgtest.Workspace(t, db)
	ctx := context.Background()
	ingest1(t, db, wsA, track("a1", ids("email", "a@rls.io")))
	ingest1(t, db, wsB, track("b1", ids("email", "b@rls.io")))
	ingest1(t, db, wsB, track("b2", ids("email", "b2@rls.io")))
	conn := appConn(t)

	tables := []string{"customers", "identities", "events", "customer_changes", "api_keys"}
	// Without the setting, a statement sees no tenant rows, even one that
	// forgets its workspace filter.
	for _, table := range tables {
		var n int
		if err := conn.QueryRow(ctx, `SELECT count(*) FROM `+table).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n != 0 {
			t.Errorf("%s without a workspace: %d rows visible, want 0", table, n)
		}
	}
	// With it, exactly that workspace's rows, again without any filter.
	countAs := func(ws int64, table string) int {
		tx, err := conn.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer tx.Rollback(ctx)
		if _, err := tx.Exec(ctx, `SELECT set_config('c360.workspace_id', $1, true)`, fmt.Sprint(ws)); err != nil {
			t.Fatal(err)
		}
		var n int
		if err := tx.QueryRow(ctx, `SELECT count(*) FROM `+table).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	if got := countAs(wsA, "customers"); got != 1 {
		t.Errorf("customers visible to A = %d, want 1", got)
	}
	if got := countAs(wsB, "identities"); got != 2 {
		t.Errorf("identities visible to B = %d, want 2", got)
	}
	// The setting ends with its transaction: the pooled connection is clean.
	var n int
	if err := conn.QueryRow(ctx, `SELECT count(*) FROM customers`).Scan(&n); err != nil || n != 0 {
		t.Errorf("after the transaction: %d rows (%v), want 0", n, err)
	}
	// Writing another workspace's row is refused by the policy.
	tx, _ := conn.Begin(ctx)
	tx.Exec(ctx, `SELECT set_config('c360.workspace_id', $1, true)`, fmt.Sprint(wsA))
	_, err := tx.Exec(ctx, `INSERT INTO customers (workspace_id) VALUES ($1)`, wsB)
	tx.Rollback(ctx)
	if err == nil {
		t.Errorf("inserting a row of workspace B while acting for A succeeded")
	}
	// The app role cannot read a key it does not name, or the owner's data.
	if err := conn.QueryRow(ctx, `SELECT count(*) FROM api_keys WHERE prefix <> ''`).Scan(&n); err != nil || n != 0 {
		t.Errorf("api keys visible without naming a prefix: %d (%v)", n, err)
	}
}

func TestParallelWorkspacesNeverMix(t *testing.T) {
	db := pgtest.Open(t)
	ctx := context.Background()
	const workspaces = 4
	var wss []int64
	for i := 0; i < workspaces; i++ {
		ws, _, _ := pgtest.Workspace(t, db)
		wss = append(wss, ws)
		for j := 0; j < 5; j++ {
			ingest1(t, db, ws, track(fmt.Sprint(j), ids("email", fmt.Sprintf("p%d-%d@mix.io", i, j))))
		}
	}
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for g := 0; g < 32; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ws := wss[g%workspaces]
			for k := 0; k < 20; k++ {
				page, err := db.FindCustomers(ctx, ws, c360.CustomerFilter{First: 100})
				if err != nil {
					errs <- err
					return
				}
				var custIDs []int64
				for _, c := range page.Items {
					if c.WorkspaceID != ws {
						errs <- fmt.Errorf("workspace %d saw a customer of %d", ws, c.WorkspaceID)
						return
					}
					custIDs = append(custIDs, c.ID)
				}
				if len(page.Items) != 5 {
					errs <- fmt.Errorf("workspace %d saw %d customers, want 5", ws, len(page.Items))
					return
				}
				idents, err := db.IdentitiesByCustomers(ctx, ws, custIDs)
				if err != nil {
					errs <- err
					return
				}
				for _, rs := range idents {
					for _, r := range rs {
						if r.Value[:2] != fmt.Sprintf("p%d", g%workspaces) {
							errs <- fmt.Errorf("workspace %d saw identity %s", ws, r.Value)
							return
						}
					}
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

func TestForeignCustomerOnEveryLookupPath(t *testing.T) {
	db := pgtest.Open(t)
	wsA, _, _ := pgtest.Workspace(t, db)
	wsB, _, _ := pgtest.Workspace(t, db)
	ctx := context.Background()
	a := ingest1(t, db, wsA, track("a", ids("email", "owner@a.io", "phone", "+14155550199")))
	b := ingest1(t, db, wsB, track("b", ids("email", "other@b.io")))

	notFound := func(name string, err error) {
		t.Helper()
		if c360.ErrorCode(err) != c360.ENOTFOUND {
			t.Errorf("%s: %v, want NOT_FOUND", name, err)
		}
	}
	_, err := db.FindCustomerByID(ctx, wsB, a.CustomerID)
	notFound("by id", err)
	_, err = db.FindCustomerByIdentity(ctx, wsB, c360.Identity{Type: "email", Value: "owner@a.io"})
	notFound("by identity", err)
	page, err := db.FindCustomers(ctx, wsB, c360.CustomerFilter{First: 50, Query: "owner"})
	if err != nil {
		t.Errorf("search from B: %v", err)
	} else if len(page.Items) != 0 {
		t.Errorf("search from B: %d results, want none", len(page.Items))
	}
	_, err = db.MergeCustomers(ctx, wsB, b.CustomerID, a.CustomerID, true, "admin", "")
	notFound("merge", err)
	_, err = db.SplitIdentity(ctx, wsB, a.CustomerID, c360.Identity{Type: "phone", Value: "+14155550199"}, "admin", "")
	notFound("split", err)
	m, err := db.CustomersByIDs(ctx, wsB, []int64{a.CustomerID})
	if err != nil || len(m) != 0 {
		t.Errorf("dataloader by ids from B: %v (%v), want nothing", m, err)
	}
	pages, err := db.EventsByCustomers(ctx, wsB, []int64{a.CustomerID}, c360.PageArgs{First: 10})
	if err != nil || len(pages[a.CustomerID].Items) != 0 {
		t.Errorf("events of A's customer from B: %v (%v), want none", pages[a.CustomerID], err)
	}
	// A's customer is intact.
	if c, err := db.FindCustomerByID(ctx, wsA, a.CustomerID); err != nil || c.ID != a.CustomerID {
		t.Errorf("A's own lookup: %v, %v", c, err)
	}
}

// A search finds its customers through c360_search_customers, which runs
// as its owner (migration 00014): it still finds only the live customers
// of the transaction's own workspace, page after page, and nothing without
// one.
func TestSearchStaysInItsWorkspace(t *testing.T) {
	db := pgtest.Open(t)
	wsA, _, _ := pgtest.Workspace(t, db)
	wsB, _, _ := pgtest.Workspace(t, db)
	ctx := context.Background()
	mine := map[int64]map[int64]bool{wsA: {}, wsB: {}}
	for _, ws := range []int64{wsA, wsB} {
		for i := range 5 {
			r := ingest1(t, db, ws, track(fmt.Sprint("s", i), ids("email", fmt.Sprintf("s%d@shared.io", i))))
			mine[ws][r.CustomerID] = true
		}
	}
	// One of B's customers merged into another is no longer listed.
	var gone int64
	for id := range mine[wsB] {
		gone = id
	}
	delete(mine[wsB], gone)
	for id := range mine[wsB] {
		if _, err := db.MergeCustomers(ctx, wsB, id, gone, true, "admin", ""); err != nil {
			t.Fatal(err)
		}
		break
	}
	for _, ws := range []int64{wsA, wsB} {
		seen := map[int64]bool{}
		after := ""
		for {
			page, err := db.FindCustomers(ctx, ws, c360.CustomerFilter{First: 2, After: after, Query: "SHARED.io"})
			if err != nil {
				t.Fatal(err)
			}
			for _, c := range page.Items {
				if !mine[ws][c.ID] || seen[c.ID] || c.WorkspaceID != ws {
					t.Errorf("workspace %d: search found customer %d of workspace %d (seen before: %v)", ws, c.ID, c.WorkspaceID, seen[c.ID])
				}
				seen[c.ID] = true
			}
			if !page.HasNext {
				break
			}
			after = page.Cursors[len(page.Cursors)-1]
		}
		if len(seen) != len(mine[ws]) {
			t.Errorf("workspace %d: search found %d customers, want %d", ws, len(seen), len(mine[ws]))
		}
	}
	// Called directly by the app role: the transaction's workspace, or none.
	conn := appConn(t)
	search := func(ws string) int {
		t.Helper()
		var n int
		err := pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, `SELECT set_config('c360.workspace_id', $1, true)`, ws); err != nil {
				return err
			}
			return tx.QueryRow(ctx, `SELECT count(*) FROM c360_search_customers('%shared.io%', 100, NULL, NULL)`).Scan(&n)
		})
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	if n := search(""); n != 0 {
		t.Errorf("without a workspace the search finds %d customers, want 0", n)
	}
	if n := search(fmt.Sprint(wsA)); n != len(mine[wsA]) {
		t.Errorf("in workspace A the search finds %d customers, want A's %d", n, len(mine[wsA]))
	}
}

// Where the search function's owner does not bypass row-level security
// (the tables force their policies on their owner), the policy binds the
// search too. It still finds the transaction's workspace's customers, no
// others, and none without a workspace (migration 00014's note). The
// owner is changed inside a transaction that is rolled back, so no other
// test sees it.
func TestSearchUnderAnOwnerThePolicyBinds(t *testing.T) {
	db := pgtest.Open(t)
	wsA, _, _ := pgtest.Workspace(t, db)
	wsB, _, _ := pgtest.Workspace(t, db)
	ctx := context.Background()
	for i := range 3 {
		ingest1(t, db, wsA, track(fmt.Sprint("o", i), ids("email", fmt.Sprintf("o%d@owner.io", i))))
	}
	ingest1(t, db, wsB, track("ob", ids("email", "ob@owner.io")))

	conn, err := pgx.Connect(ctx, pgtest.URL(t))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	tx, err := conn.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	role := fmt.Sprintf("c360_search_owner_%d", time.Now().UnixNano())
	for _, stmt := range []string{
		`CREATE ROLE ` + role + ` NOLOGIN NOBYPASSRLS`,
		`GRANT USAGE ON SCHEMA public TO ` + role,
		`GRANT SELECT ON customers TO ` + role,
		`ALTER FUNCTION c360_search_customers(text, integer, timestamptz, bigint) OWNER TO ` + role,
		`SET LOCAL ROLE c360_app`,
	} {
		if _, err := tx.Exec(ctx, stmt); err != nil {
			t.Fatalf("%s: %v", stmt, err)
		}
	}
	var owner string
	var bypass bool
	if err := tx.QueryRow(ctx, `SELECT r.rolname, r.rolbypassrls OR r.rolsuper FROM pg_proc p JOIN pg_roles r ON r.oid = p.proowner
		WHERE p.proname = 'c360_search_customers'`).Scan(&owner, &bypass); err != nil {
		t.Fatal(err)
	}
	if owner != role || bypass {
		t.Fatalf("the search runs as %s (bypasses row-level security: %v), want %s, bound by the policy", owner, bypass, role)
	}
	count := func(ws string) int {
		t.Helper()
		var n int
		if _, err := tx.Exec(ctx, `SELECT set_config('c360.workspace_id', $1, true)`, ws); err != nil {
			t.Fatal(err)
		}
		if err := tx.QueryRow(ctx, `SELECT count(*) FROM c360_search_customers('%owner.io%', 100, NULL, NULL)`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	for _, c := range []struct {
		ws   string
		want int
	}{{fmt.Sprint(wsA), 3}, {fmt.Sprint(wsB), 1}, {"", 0}} {
		if n := count(c.ws); n != c.want {
			t.Errorf("workspace %q: the search finds %d customers, want %d", c.ws, n, c.want)
		}
	}
}

// The service's role keeps only the privileges it uses (migration 00023):
// it reads and updates workspaces but neither inserts nor deletes them (a
// workspace is created in the owner's transaction), reads goose's version
// table (the readiness check) but never writes it, and has nothing by
// default on a table created after the migrations: each grants its own.
func TestAppRoleKeepsOnlyWhatItUses(t *testing.T) {
	db := pgtest.Open(t)
	ws, slug, _ := pgtest.Workspace(t, db)
	ctx := context.Background()
	conn := appConn(t)
	table := fmt.Sprintf("c360_t_defaults_%d", os.Getpid())
	if _, err := db.Pool.Exec(ctx, `CREATE TABLE `+table+` (id int)`); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Pool.Exec(context.Background(), `DROP TABLE IF EXISTS `+table) })
	for _, s := range []string{
		`INSERT INTO workspaces (slug, name, webhook_secret) VALUES ('app-made', 'x', 'whsec_x')`,
		`DELETE FROM workspaces WHERE id = ` + fmt.Sprint(ws),
		`TRUNCATE workspaces CASCADE`,
		`SELECT nextval(pg_get_serial_sequence('workspaces', 'id'))`,
		`INSERT INTO goose_db_version (version_id, is_applied) VALUES (99999, true)`,
		`UPDATE goose_db_version SET is_applied = false`,
		`DELETE FROM goose_db_version`,
		`SELECT count(*) FROM ` + table,
		`INSERT INTO ` + table + ` VALUES (1)`,
	} {
		// Each in a transaction rolled back: were it allowed, it changes
		// nothing the other tests see.
		tx, err := conn.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		_, err = tx.Exec(ctx, s)
		tx.Rollback(ctx)
		var pgErr *pgconn.PgError
		if !errors.As(err, &pgErr) || pgErr.Code != "42501" {
			t.Errorf("as c360_app, %s: %v, want permission denied (42501)", s, err)
		}
	}
	var n int
	if err := conn.QueryRow(ctx, `SELECT count(*) FROM goose_db_version`).Scan(&n); err != nil || n == 0 {
		t.Errorf("as c360_app, read goose_db_version: %d rows, %v; want its rows (the readiness check reads it)", n, err)
	}
	tx, err := conn.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	if err := tx.QueryRow(ctx, `UPDATE workspaces SET name = name WHERE slug = $1 RETURNING id`, slug).Scan(&n); err != nil || int64(n) != ws {
		t.Errorf("as c360_app, update workspace %s: %d, %v; want it updated", slug, n, err)
	}
}

// Every table with a workspace_id column is tenant data: row-level
// security enabled and forced (binding the owner too), under the policy
// tenant of migration 00006, workspace_id = c360_workspace() for reads and
// writes alike. A table a migration adds without them would be read across
// workspaces by a statement that forgets its filter. The tables are the
// ones docs/security.md lists.
func TestEveryTenantTableIsUnderItsPolicy(t *testing.T) {
	db := pgtest.Open(t)
	rows, err := db.Pool.Query(context.Background(), `
		SELECT c.relname, c.relrowsecurity, c.relforcerowsecurity,
			coalesce((SELECT p.polcmd = '*' AND p.polpermissive
					AND pg_get_expr(p.polqual, p.polrelid) = '(workspace_id = c360_workspace())'
					AND pg_get_expr(p.polwithcheck, p.polrelid) = '(workspace_id = c360_workspace())'
				FROM pg_policy p WHERE p.polrelid = c.oid AND p.polname = 'tenant'), false)
		FROM pg_class c
		JOIN pg_namespace n ON n.oid = c.relnamespace
		JOIN pg_attribute a ON a.attrelid = c.oid
		WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p') AND a.attname = 'workspace_id' AND NOT a.attisdropped
		ORDER BY c.relname`)
	if err != nil {
		t.Fatal(err)
	}
	var tables []string
	for rows.Next() {
		var name string
		var enabled, forced, policy bool
		if err := rows.Scan(&name, &enabled, &forced, &policy); err != nil {
			t.Fatal(err)
		}
		tables = append(tables, name)
		if !enabled || !forced || !policy {
			t.Errorf("%s: row-level security enabled %v, forced %v, policy tenant on workspace_id = c360_workspace() %v; want all three",
				name, enabled, forced, policy)
		}
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}

	doc, err := os.ReadFile("../docs/security.md")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`The tables are ([a-z_,\s]+) and ([a-z_]+)\.`).FindSubmatch(doc)
	if m == nil {
		t.Fatal(`docs/security.md no longer lists the tenant tables ("The tables are ... and ...")`)
	}
	var listed []string
	for _, name := range strings.Split(string(m[1]), ",") {
		listed = append(listed, strings.TrimSpace(name))
	}
	listed = append(listed, string(m[2]))
	slices.Sort(listed)
	if !slices.Equal(tables, listed) {
		t.Errorf("tables with workspace_id: %v\ndocs/security.md lists: %v", tables, listed)
	}
}
