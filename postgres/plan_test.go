package postgres_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

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
	db, ws, customer := plannedWorkspace(t)
	for name, st := range postgres.PlannedStatements {
		for _, p := range genericPlans(t, db, ws, name, []string{st.SQL}, [][]any{st.Args(ws, customer)}) {
			// Every read of customers is an index lookup by id, or by
			// merged_into (the customers merged into one: the partial index
			// of merged customers holds only those): a seq or bitmap scan,
			// or an index scan bounded only by the workspace, reads the
			// whole workspace.
			scans := p.Plan.scansOf("customers")
			if len(scans) == 0 {
				t.Errorf("%s: no read of customers in its plan:\n%s", name, p.Raw)
			}
			for _, n := range scans {
				bounded := strings.Contains(n.IndexCond, "(id = ") || strings.Contains(n.IndexCond, "(merged_into = ")
				if !strings.Contains(n.NodeType, "Index") || !bounded {
					t.Errorf("%s: generic plan reads customers without an id bound (%s, %q):\n%s", name, n.NodeType, n.IndexCond, p.Raw)
				}
			}
		}
	}
}

// FindProfile's parts read the customer its lookup found from a setting.
// Under row-level security PostgreSQL bounds an index scan only by a
// condition it can prove leakproof; a condition on the setting written as
// a COALESCE is not one, and its plan scans every row of the table. Each
// part must read its table by an index bounded by the customer (or, for
// messages, by the conversation), in its generic plan too.
func TestLookedUpProfilePlansUseIndexes(t *testing.T) {
	db, ws, _ := plannedWorkspace(t)
	checkLookedUpProfilePlans(t, db, ws)
}

// In a database of many small tenants, a generic plan takes a workspace to
// hold the table's rows divided by its workspaces; the looked-up profile
// must still read its customer's rows by index, not the workspace's
// (consents, the smallest table, was read whole and hashed). The tenants
// are made in a database of the test's own: added to the package's, they
// would change the plans that the other plan tests check.
func TestLookedUpProfilePlansUseIndexesAmongSmallTenants(t *testing.T) {
	db, m := emptyStore(t, "tenants")
	if err := m.Up(context.Background(), slog.New(slog.DiscardHandler)); err != nil {
		t.Fatal(err)
	}
	ws, _ := seedPlannedWorkspace(t, db)
	crowd(t, db)
	checkLookedUpProfilePlans(t, db, ws)
}

// checkLookedUpProfilePlans checks that the parts of a looked-up profile
// read each table by the customer's (or conversation's) index.
func checkLookedUpProfilePlans(t *testing.T, db *postgres.DB, ws int64) {
	t.Helper()
	tables := []string{"identities", "consents", "events", "conversations", "messages"}
	for _, withMessages := range []bool{false, true} {
		sqls, args := postgres.ProfileStatements(ws, withMessages)
		read := map[string]bool{}
		for _, p := range genericPlans(t, db, ws, fmt.Sprintf("part_%t", withMessages), sqls, args) {
			for _, table := range tables {
				for _, n := range p.Plan.scansOf(table) {
					read[table] = true
					bounded := strings.Contains(n.NodeType, "Index") &&
						(strings.Contains(n.IndexCond, "customer_id = ") || strings.Contains(n.IndexCond, "conversation_id = "))
					if !bounded {
						t.Errorf("reads %s without an index bound (%s, %q):\n%s\n%s", table, n.NodeType, n.IndexCond, p.SQL, p.Raw)
					}
				}
			}
		}
		for _, table := range tables {
			if !read[table] && (table != "messages" || withMessages) {
				t.Errorf("messages %v: no part reads %s", withMessages, table)
			}
		}
	}
}

// plannedWorkspace seeds a workspace large enough for the planner to tell
// a scan from a lookup, and returns one of its customers.
func plannedWorkspace(t *testing.T) (*postgres.DB, int64, int64) {
	db := pgtest.Open(t)
	ws, customer := seedPlannedWorkspace(t, db)
	return db, ws, customer
}

// seedPlannedWorkspace is plannedWorkspace in db.
func seedPlannedWorkspace(t *testing.T, db *postgres.DB) (int64, int64) {
	t.Helper()
	ws, _, _ := pgtest.Workspace(t, db)
	ctx := context.Background()
	if _, err := seed.Run(ctx, db.Pool, ws, seed.Options{Customers: 3000, EventsPerCustomer: 1, MessagesPerConv: 1}); err != nil {
		t.Fatalf("seed: %v", err)
	}
	// The seed records no consents; an empty table is rightly scanned.
	if _, err := db.Pool.Exec(ctx, `INSERT INTO consents (workspace_id, customer_id, channel, status)
		SELECT workspace_id, id, 'sms', 'opted_in' FROM customers WHERE workspace_id = $1`, ws); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Pool.Exec(ctx, `ANALYZE customers, identities, consents, events, conversations, messages`); err != nil {
		t.Fatal(err)
	}
	var customer int64
	if err := db.Pool.QueryRow(ctx, `SELECT max(id) FROM customers WHERE workspace_id = $1`, ws).Scan(&customer); err != nil {
		t.Fatal(err)
	}
	return ws, customer
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

// Every message moves its conversation's last_message_at and, inbound,
// last_inbound_at. An update is HOT (it writes no index entry) only when
// no indexed column changes, so no index of conversations may hold either
// column (migration 00010): with one, every webhook wrote two index entries
// for its conversation.
func TestConversationActivityIsNotIndexed(t *testing.T) {
	db := pgtest.Open(t)
	rows, err := db.Pool.Query(context.Background(), `SELECT pg_get_indexdef(indexrelid) FROM pg_index WHERE indrelid = 'conversations'::regclass`)
	if err != nil {
		t.Fatal(err)
	}
	defs, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	if len(defs) < 2 {
		t.Fatalf("conversations has %d indexes, want its primary key and the by-customer index: %q", len(defs), defs)
	}
	for _, def := range defs {
		for _, col := range []string{"last_message_at", "last_inbound_at"} {
			if strings.Contains(def, col) {
				t.Errorf("index %s holds %s: message updates of conversations cannot be HOT", def, col)
			}
		}
	}
	var opts []string
	if err := db.Pool.QueryRow(context.Background(), `SELECT coalesce(reloptions, '{}') FROM pg_class WHERE oid = 'conversations'::regclass`).Scan(&opts); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(strings.Join(opts, ","), "fillfactor=80") {
		t.Errorf("conversations reloptions %q: want fillfactor=80, room on the page for HOT updates", opts)
	}
}

// A group's UPDATEs join a table to the rows of their array parameters. In
// a generic plan no nested loop may rescan those rows for each row of the
// table: for a group of n customers that compares n² pairs.
//
// The planner walks into that loop when it takes "id = ANY($2)" to find a
// single row, which it does once the tables hold ten workspaces or more,
// as a shared deployment's do.
func TestGroupUpdatesNeverRescanTheirArrays(t *testing.T) {
	db, ws, _ := plannedWorkspace(t)
	crowd(t, db)
	sqls, args := postgres.GroupWriteStatements(ws, 400)
	updates := 0
	for _, p := range genericPlans(t, db, ws, "group_write", sqls, args) {
		if !strings.Contains(p.SQL, "UPDATE ") {
			continue
		}
		updates++
		if bad := p.Plan.rescansArray(); bad != "" {
			t.Errorf("generic plan rescans an array for each row (%s):\n%s\n%s", bad, p.SQL, p.Raw)
		}
	}
	if updates != 2 {
		t.Fatalf("planned %d UPDATEs, want 2 (customers and conversations)", updates)
	}
}

// Reads of many customers by an array of ids take time linear in the
// array, in their generic plans too, among ten workspaces or more: no
// nested loop rescans the array, or searches an index by the whole array,
// for each row of its other side, and no table is read by its workspace
// alone and matched against each id.
func TestArrayReadsScaleWithTheirArrays(t *testing.T) {
	db, ws, _ := plannedWorkspace(t)
	crowd(t, db)
	ctx := context.Background()
	// Every workspace of the test has merged some customers.
	if _, err := db.Pool.Exec(ctx, `INSERT INTO merges (workspace_id, kind, survivor_id, merged_id)
		SELECT workspace_id, 'merge', id, id + 1 FROM customers WHERE workspace_id >= $1 AND id % 3 = 0`, ws); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Pool.Exec(ctx, `ANALYZE customers, merges`); err != nil {
		t.Fatal(err)
	}
	reads := postgres.ArrayReads(ws, 500)
	if len(reads) == 0 {
		t.Fatal("no array reads to plan")
	}
	for name, r := range reads {
		planned := 0
		for _, p := range genericPlans(t, db, ws, name, r.SQL, r.Args) {
			if p.Setting {
				continue
			}
			planned++
			for _, bad := range []string{p.Plan.rescansArray(), p.Plan.searchesByArrayPerRow(), p.Plan.readsWholeWorkspace()} {
				if bad != "" {
					t.Errorf("%s: generic plan %s:\n%s\n%s", name, bad, p.SQL, p.Raw)
				}
			}
		}
		if planned != 1 {
			t.Errorf("%s: planned %d statements, want 1", name, planned)
		}
	}
}

// A merge and a split read only the rows of their customers, by indexes,
// in their generic plans: none reads the workspace's messages or customers
// to find the few it moves, nor its separations to find those of two
// customers.
func TestMergeAndSplitReadOnlyTheirCustomers(t *testing.T) {
	db, ws, customer := plannedWorkspace(t)
	crowd(t, db)
	ctx := context.Background()
	// Every workspace of the test has observations, merged customers and
	// separations.
	for _, s := range []string{
		`INSERT INTO observations (workspace_id, customer_id, text, source, recorded_by, recorded_by_role)
			SELECT workspace_id, id, 'likes tea', 'test', 'test', 'agent' FROM customers WHERE workspace_id >= $1`,
		`UPDATE customers SET merged_into = id - 1 WHERE workspace_id >= $1 AND id % 10 = 0`,
		`INSERT INTO customer_separations (workspace_id, customer_a, customer_b)
			SELECT workspace_id, id, id + 1 FROM customers WHERE workspace_id >= $1 AND id % 7 = 0`,
	} {
		if _, err := db.Pool.Exec(ctx, s, ws); err != nil {
			t.Fatalf("%s: %v", s, err)
		}
	}
	if _, err := db.Pool.Exec(ctx, `ANALYZE customers, conversations, messages, observations, customer_separations`); err != nil {
		t.Fatal(err)
	}
	for name, r := range postgres.MergeAndSplitStatements(ws, customer-1, customer) {
		for _, p := range genericPlans(t, db, ws, name, r.SQL, r.Args) {
			if bad := p.Plan.readsWholeWorkspace(); bad != "" {
				t.Errorf("%s: generic plan %s:\n%s\n%s", name, bad, p.SQL, p.Raw)
			}
		}
	}
}

// A search by a rare fragment (a phone's or an email's) finds its
// customers by the trigram index as the app role, in the statement's
// generic plan: under row-level security the app role's own LIKE, not
// leakproof, could only filter every live customer of the workspace. The
// plan of the search inside c360_search_customers is caught by
// auto_explain, which logs nested statements too.
func TestSearchUsesTheTrigramIndex(t *testing.T) {
	db, ws, _ := plannedWorkspace(t)
	crowd(t, db)
	// The statement reads customers by the ids it finds, not the workspace.
	for _, p := range genericPlans(t, db, ws, "search", []string{postgres.SearchCustomersSQL}, [][]any{{ws, 11, []string{""}, nil, nil}}) {
		if bad := p.Plan.readsWholeWorkspace(); bad != "" {
			t.Errorf("generic plan %s:\n%s", bad, p.Raw)
		}
	}
}

// The search inside c360_search_customers asks the trigram index, for a
// large tenant among many small ones. It runs in a database of its own,
// with a workspace of 20,000 customers: in the package's database the
// customers table is as small as the tests before it left it, and a table
// of a few thousand rows is rightly read whole (run alone, the search was
// a sequential scan), and its tenants would change the package's other
// plans.
func TestSearchUsesTheTrigramIndexAmongSmallTenants(t *testing.T) {
	db, m := emptyStore(t, "search")
	ctx := context.Background()
	if err := m.Up(ctx, slog.New(slog.DiscardHandler)); err != nil {
		t.Fatal(err)
	}
	ws, _, _ := pgtest.Workspace(t, db)
	if _, err := seed.Run(ctx, db.Pool, ws, seed.Options{Customers: 20000, EventsPerCustomer: 1, MessagesPerConv: 1}); err != nil {
		t.Fatalf("seed: %v", err)
	}
	crowd(t, db)
	crowd(t, db)
	checkSearchUsesTheTrigramIndex(t, db, ws)
}

// checkSearchUsesTheTrigramIndex searches ws for one customer's email, and
// for its phone number as a console writes it ("(415) 200-0042", which
// search text holds as "+14152000042": two patterns), and checks, in the
// generic plan and in the plans auto_explain logs for the function's own
// statements, that customers are read by the ids the trigram index finds.
func checkSearchUsesTheTrigramIndex(t *testing.T, db *postgres.DB, ws int64) {
	t.Helper()
	ctx := context.Background()
	// The statement reads customers by the ids it finds, not the workspace.
	for _, p := range genericPlans(t, db, ws, "search", []string{postgres.SearchCustomersSQL}, [][]any{{ws, 11, []string{"", ""}, nil, nil}}) {
		if bad := p.Plan.readsWholeWorkspace(); bad != "" {
			t.Errorf("generic plan %s:\n%s", bad, p.Raw)
		}
	}

	cfg, err := pgx.ParseConfig(db.Pool.Config().ConnConfig.ConnString())
	if err != nil {
		t.Fatal(err)
	}
	var notices []string
	cfg.OnNotice = func(_ *pgconn.PgConn, n *pgconn.Notice) { notices = append(notices, n.Message) }
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	for _, s := range []string{`LOAD 'auto_explain'`, `SET auto_explain.log_min_duration = 0`,
		`SET auto_explain.log_nested_statements = on`, `SET auto_explain.log_level = notice`} {
		if _, err := conn.Exec(ctx, s); err != nil {
			t.Fatalf("%s: %v", s, err)
		}
	}
	var owner string
	if err := db.Pool.QueryRow(ctx, `SELECT max(search_text) FROM customers WHERE workspace_id = $1`, ws).Scan(&owner); err != nil {
		t.Fatal(err)
	}
	// "customer N cN@bench.example +1415..."
	email, phone := strings.Fields(owner)[2], strings.Fields(owner)[3]
	console := "(" + phone[2:5] + ") " + phone[5:8] + "-" + phone[8:]
	for _, q := range []string{email, console} {
		patterns := postgres.SearchPatterns(db, q)
		err = pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
			for _, s := range []string{`SET LOCAL ROLE c360_app`, `SET LOCAL plan_cache_mode = force_generic_plan`} {
				if _, err := tx.Exec(ctx, s); err != nil {
					return err
				}
			}
			if _, err := tx.Exec(ctx, `SELECT set_config('c360.workspace_id', $1, true)`, strconv.FormatInt(ws, 10)); err != nil {
				return err
			}
			notices = nil
			rows, err := tx.Query(ctx, postgres.SearchCustomersSQL, ws, 11, patterns, nil, nil)
			if err != nil {
				return err
			}
			found := 0
			for rows.Next() {
				found++
			}
			if err := rows.Err(); err != nil {
				return err
			}
			if found != 1 {
				t.Errorf("search for %q (patterns %q) found %d customers, want 1", q, patterns, found)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		plans := strings.Join(notices, "\n")
		if got := strings.Count(plans, "Index Scan on customers_search_idx"); got != len(patterns) {
			t.Errorf("the search for %q (patterns %q) reads the trigram index %d times, want once a pattern:\n%s", q, patterns, got, plans)
		}
	}
}

// crowd adds twelve small workspaces to db's, as a shared deployment has,
// each customer with a consent: from ten on, the planner takes
// "id = ANY($2)" to find a single row.
func crowd(t *testing.T, db *postgres.DB) {
	t.Helper()
	ctx := context.Background()
	for range 12 {
		other, _, _ := pgtest.Workspace(t, db)
		if _, err := seed.Run(ctx, db.Pool, other, seed.Options{Customers: 20, EventsPerCustomer: 1, MessagesPerConv: 1}); err != nil {
			t.Fatalf("seed: %v", err)
		}
		if _, err := db.Pool.Exec(ctx, `INSERT INTO consents (workspace_id, customer_id, channel, status)
			SELECT workspace_id, id, 'sms', 'opted_in' FROM customers WHERE workspace_id = $1`, other); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := db.Pool.Exec(ctx, `ANALYZE customers, conversations, consents`); err != nil {
		t.Fatal(err)
	}
}

// plannedStatement is a statement of a batch and its plan, or a setting
// of the batch's own (a planner setting for the statements that follow),
// which has none.
type plannedStatement struct {
	SQL     string
	Setting bool
	Plan    planNode
	Raw     []byte
}

// isSetting reports whether a batch's statement only changes a setting.
func isSetting(sql string) bool {
	return strings.HasPrefix(sql, "SET ") || strings.HasPrefix(sql, "SELECT set_config('enable_")
}

// genericPlans plans the statements of a batch in order, as the app role
// scoped to workspace ws: a SET statement is run (the batch's own settings
// apply to what follows, as in its transaction) and returned without a
// plan; each other statement is prepared and its generic plan explained.
func genericPlans(t *testing.T, db *postgres.DB, ws int64, name string, sqls []string, args [][]any) []plannedStatement {
	t.Helper()
	return explainBatch(t, db, ws, name, sqls, args, true)
}

// customPlans is genericPlans with each statement's plan made for its
// values, as PostgreSQL makes a prepared statement's first five.
func customPlans(t *testing.T, db *postgres.DB, ws int64, sqls []string, args [][]any) []plannedStatement {
	t.Helper()
	return explainBatch(t, db, ws, "", sqls, args, false)
}

func explainBatch(t *testing.T, db *postgres.DB, ws int64, name string, sqls []string, args [][]any, generic bool) []plannedStatement {
	t.Helper()
	ctx := context.Background()
	var out []plannedStatement
	var prepared []string
	err := pgx.BeginFunc(ctx, db.Pool, func(tx pgx.Tx) error {
		setup := []string{`SET LOCAL ROLE c360_app`}
		if generic {
			setup = append(setup, `SET LOCAL plan_cache_mode = force_generic_plan`)
		}
		for _, s := range setup {
			if _, err := tx.Exec(ctx, s); err != nil {
				return err
			}
		}
		if _, err := tx.Exec(ctx, `SELECT set_config('c360.workspace_id', $1, true)`, strconv.FormatInt(ws, 10)); err != nil {
			return err
		}
		for i, sql := range sqls {
			if isSetting(sql) {
				// A setting of the batch's own, for what follows.
				if _, err := tx.Exec(ctx, sql); err != nil {
					return err
				}
				out = append(out, plannedStatement{SQL: sql, Setting: true})
				continue
			}
			var raw []byte
			if generic {
				stmt := fmt.Sprintf("%s_%d", name, i)
				if _, err := tx.Exec(ctx, `PREPARE `+stmt+` AS `+sql); err != nil {
					return fmt.Errorf("%s: %w", sql, err)
				}
				prepared = append(prepared, stmt)
				// A generic plan does not depend on the values: NULL for each.
				nulls := strings.TrimSuffix(strings.Repeat("NULL, ", len(args[i])), ", ")
				if err := tx.QueryRow(ctx, `EXPLAIN (FORMAT JSON) EXECUTE `+stmt+`(`+nulls+`)`).Scan(&raw); err != nil {
					return err
				}
			} else {
				// The simple protocol puts the values in the text.
				a := append([]any{pgx.QueryExecModeSimpleProtocol}, args[i]...)
				if err := tx.QueryRow(ctx, `EXPLAIN (FORMAT JSON) `+sql, a...).Scan(&raw); err != nil {
					return fmt.Errorf("%s: %w", sql, err)
				}
			}
			var plans []struct{ Plan planNode }
			if err := json.Unmarshal(raw, &plans); err != nil {
				return err
			}
			out = append(out, plannedStatement{SQL: sql, Plan: plans[0].Plan, Raw: raw})
		}
		// Prepared statements outlive the transaction, on a connection
		// the pool hands out again (pgx's own cache keeps its statements).
		for _, name := range prepared {
			if _, err := tx.Exec(ctx, `DEALLOCATE `+name); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// planNode is a node of EXPLAIN (FORMAT JSON).
type planNode struct {
	NodeType     string     `json:"Node Type"`
	Relationship string     `json:"Parent Relationship"`
	Relation     string     `json:"Relation Name"`
	Index        string     `json:"Index Name"`
	IndexCond    string     `json:"Index Cond"`
	RecheckCond  string     `json:"Recheck Cond"`
	Plans        []planNode `json:"Plans"`
}

// scansOf returns the nodes under n (n included) that read table.
func (n planNode) scansOf(table string) []planNode {
	var out []planNode
	if n.Relation == table {
		out = append(out, n)
	}
	for _, c := range n.Plans {
		out = append(out, c.scansOf(table)...)
	}
	return out
}

// rescansArray names a nested loop under n whose inner side scans a
// function (unnest), or returns "".
func (n planNode) rescansArray() string {
	for _, c := range n.Plans {
		if n.NodeType == "Nested Loop" && c.Relationship == "Inner" && c.scansFunction() {
			return "Nested Loop over " + c.NodeType
		}
		if bad := c.rescansArray(); bad != "" {
			return bad
		}
	}
	return ""
}

func (n planNode) scansFunction() bool {
	if n.NodeType == "Function Scan" {
		return true
	}
	for _, c := range n.Plans {
		if c.Relationship != "SubPlan" && c.scansFunction() {
			return true
		}
	}
	return false
}

// searchesByArrayPerRow names a nested loop under n whose inner side
// searches an index by a whole array ("id = ANY (...)") for each outer
// row, or returns "".
func (n planNode) searchesByArrayPerRow() string {
	for _, c := range n.Plans {
		if n.NodeType == "Nested Loop" && c.Relationship == "Inner" {
			if s := c.arraySearch(); s != "" {
				return "loops over " + s
			}
		}
		if bad := c.searchesByArrayPerRow(); bad != "" {
			return bad
		}
	}
	return ""
}

func (n planNode) arraySearch() string {
	if strings.Contains(n.IndexCond, "ANY (") {
		return fmt.Sprintf("%s (%s) on %s by %s", n.NodeType, n.Index, n.Relation, n.IndexCond)
	}
	for _, c := range n.Plans {
		if c.Relationship == "SubPlan" || c.Relationship == "InitPlan" {
			continue
		}
		if s := c.arraySearch(); s != "" {
			return s
		}
	}
	return ""
}

// workspaceOnly matches an index condition on the workspace alone, given
// as a parameter (generic plans) or a value (custom plans), once or as a
// bitmap scan's index and recheck conditions.
var workspaceOnly = regexp.MustCompile(`^(\(workspace_id = (\$1|'\d+'::bigint)\))+$`)

// readsWholeWorkspace names a scan under n of a table, or of its index,
// bounded by nothing but the workspace, or returns "".
func (n planNode) readsWholeWorkspace() string {
	if (n.Relation != "" || n.Index != "") && n.NodeType != "ModifyTable" {
		cond := n.IndexCond + n.RecheckCond
		if n.NodeType == "Seq Scan" || cond == "" || workspaceOnly.MatchString(cond) {
			return fmt.Sprintf("reads the whole workspace (%s on %s%s, %q)", n.NodeType, n.Relation, n.Index, cond)
		}
	}
	for _, c := range n.Plans {
		if bad := c.readsWholeWorkspace(); bad != "" {
			return bad
		}
	}
	return ""
}

// A statement queued with a planner setting of its own, in a batch sent
// outside a transaction (a dataloader's read), runs without the server
// warning about it: SET LOCAL outside a transaction block warns in the
// server's log on every call, set_config(..., true) does not.
func TestPlannerSettingsOutsideATransactionDoNotWarn(t *testing.T) {
	var mu sync.Mutex
	var notices []string
	db := pgtest.Open(t, func(cfg *pgxpool.Config) {
		cfg.ConnConfig.OnNotice = func(_ *pgconn.PgConn, n *pgconn.Notice) {
			mu.Lock()
			defer mu.Unlock()
			notices = append(notices, n.Severity+": "+n.Message)
		}
	})
	ws, _, _ := pgtest.Workspace(t, db)
	ctx := context.Background()
	c := ingest1(t, db, ws, track("1", ids("user_id", "u1")))
	got, err := db.CustomersByIDs(ctx, ws, []int64{c.CustomerID})
	if err != nil || got[c.CustomerID] == nil {
		t.Fatalf("CustomersByIDs = %v, %v; want customer %d", got, err, c.CustomerID)
	}
	mu.Lock()
	defer mu.Unlock()
	for _, n := range notices {
		t.Errorf("server said %q", n)
	}
}
