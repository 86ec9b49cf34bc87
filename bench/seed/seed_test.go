package seed_test

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/c360dev/c360/bench/seed"
	"github.com/c360dev/c360/internal/pgtest"
	"github.com/c360dev/c360/postgres"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// TestSkewedTotals checks the shape of `bench seed` at the size and
// at a small one: the totals are 10 events and 2 messages per customer,
// one in ten customers is rich (25 events, a conversation of 12 messages),
// and RichCustomer names exactly those.
func TestSkewedTotals(t *testing.T) {
	for _, n := range []int{1000, 1_000_000} {
		o := seed.Skewed(n)
		if err := o.Check(); err != nil {
			t.Fatalf("%d: %v", n, err)
		}
		var events, conversations, messages, rich int
		for i := range n {
			e, conv, m := o.Shape(i)
			events += e
			messages += m
			if conv {
				conversations++
			}
			if e == 25 && conv && m == 12 {
				rich++
			}
			if m > 0 && !conv {
				t.Fatalf("%d: customer %d has %d messages and no conversation", n, i, m)
			}
		}
		if events != 10*n || messages != 2*n {
			t.Errorf("%d customers: %d events and %d messages, want %d and %d", n, events, messages, 10*n, 2*n)
		}
		if rich != n/10 || o.RichCustomers() != n/10 {
			t.Errorf("%d customers: %d rich (RichCustomers %d), want %d", n, rich, o.RichCustomers(), n/10)
		}
		we, wc, wm := o.Totals()
		if we != events || wc != conversations || wm != messages {
			t.Errorf("%d customers: Totals() = %d, %d, %d; counted %d, %d, %d", n, we, wc, wm, events, conversations, messages)
		}
		last := -1
		for k := range o.RichCustomers() {
			i := o.RichCustomer(k)
			if i <= last || i >= n {
				t.Fatalf("%d: RichCustomer(%d) = %d after %d", n, k, i, last)
			}
			if e, _, m := o.Shape(i); e != 25 || m != 12 {
				t.Fatalf("%d: RichCustomer(%d) = %d has %d events and %d messages", n, k, i, e, m)
			}
			last = i
		}
	}
}

// TestCheckRefuses lists the shapes Run refuses before writing anything.
func TestCheckRefuses(t *testing.T) {
	for _, tc := range []struct {
		name string
		o    seed.Options
		want string
	}{
		{"no customers", seed.Options{}, "at least 1 customer"},
		{"too many rich", seed.Options{Customers: 10, Rich: 11, EventsPerCustomer: 1}, "11 rich customers of 10"},
		{"rich need more events", seed.Options{Customers: 10, Rich: 5, EventsPerCustomer: 25, Events: 100}, "need 125 events"},
		{"rich need more messages", seed.Options{Customers: 10, Rich: 5, MessagesPerConv: 12, Messages: 50}, "need 60 messages"},
		{"all rich, totals beyond", seed.Options{Customers: 10, EventsPerCustomer: 2, Events: 30}, "all 10 customers are rich"},
	} {
		err := tc.o.Check()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: Check() = %v, want %q", tc.name, err, tc.want)
		}
		if _, err := seed.Run(context.Background(), nil, 1, tc.o); err == nil {
			t.Errorf("%s: Run accepted it", tc.name)
		}
	}
	for n := range 12 {
		if err := seed.Skewed(n + 1).Check(); err != nil {
			t.Errorf("Skewed(%d): %v", n+1, err)
		}
	}
}

// TestRunSeedsTheShape seeds a small skewed workspace and reads back, per
// customer, its identities, events, conversations and messages: each
// matches Shape, the totals match Totals, and the customer-360's pages of
// a rich customer (found by its phone) are full.
func TestRunSeedsTheShape(t *testing.T) {
	ctx := context.Background()
	db := pgtest.Open(t)
	ws, _, _ := pgtest.Workspace(t, db)
	o := seed.Skewed(1000)
	res, err := seed.Run(ctx, db.Pool, ws, o)
	if err != nil {
		t.Fatal(err)
	}
	rows, err := db.Pool.Query(ctx, `SELECT c.id - $2,
		  (SELECT count(*) FROM identities i WHERE i.workspace_id = c.workspace_id AND i.customer_id = c.id),
		  (SELECT count(*) FROM events e WHERE e.workspace_id = c.workspace_id AND e.customer_id = c.id),
		  (SELECT count(*) FROM conversations v WHERE v.workspace_id = c.workspace_id AND v.customer_id = c.id),
		  (SELECT count(*) FROM messages m JOIN conversations v ON v.workspace_id = m.workspace_id AND v.id = m.conversation_id
		    WHERE m.workspace_id = c.workspace_id AND m.customer_id = c.id AND v.customer_id = c.id)
		FROM customers c WHERE c.workspace_id = $1 ORDER BY c.id`, ws, res.FirstCustomer)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	n, events, conversations, messages := 0, 0, 0, 0
	for rows.Next() {
		var i, ids, e, v, m int
		if err := rows.Scan(&i, &ids, &e, &v, &m); err != nil {
			t.Fatal(err)
		}
		we, wconv, wm := o.Shape(i)
		wv := 0
		if wconv {
			wv = 1
		}
		if i != n || ids != 2 || e != we || v != wv || m != wm {
			t.Fatalf("customer %d (row %d): %d identities, %d events, %d conversations, %d messages; want 2, %d, %d, %d",
				i, n, ids, e, v, m, we, wv, wm)
		}
		n++
		events += e
		conversations += v
		messages += m
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	we, wv, wm := o.Totals()
	if n != 1000 || events != we || conversations != wv || messages != wm {
		t.Errorf("%d customers, %d events, %d conversations, %d messages; want 1000, %d, %d, %d", n, events, conversations, messages, we, wv, wm)
	}
	if events != 10_000 || messages != 2000 {
		t.Errorf("%d events and %d messages, want 10000 and 2000", events, messages)
	}
	for _, k := range []int{0, 1, o.RichCustomers() - 1} {
		var e, m int
		if err := db.Pool.QueryRow(ctx, `SELECT
			  (SELECT count(*) FROM events e WHERE e.workspace_id = i.workspace_id AND e.customer_id = i.customer_id),
			  (SELECT count(*) FROM messages m WHERE m.workspace_id = i.workspace_id AND m.customer_id = i.customer_id)
			FROM identities i WHERE i.workspace_id = $1 AND i.type = 'phone' AND i.value = $2`,
			ws, seed.Phone(o.RichCustomer(k))).Scan(&e, &m); err != nil {
			t.Fatalf("rich customer %d: %v", k, err)
		}
		if e != 25 || m != 12 {
			t.Errorf("rich customer %d (%s): %d events, %d messages; want 25 and 12", k, seed.Phone(o.RichCustomer(k)), e, m)
		}
	}
}

// TestCancelledSeedRestoresSearchIndex interrupts a seed after its first
// COPY, with the search index dropped: Run returns the cancellation, and
// the index every workspace's search uses is back, valid.
func TestCancelledSeedRestoresSearchIndex(t *testing.T) {
	db := pgtest.Open(t)
	ws, _, _ := pgtest.Workspace(t, db)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// Enough customers that the seed drops the index.
	o := seed.Skewed(dropping(t, db))
	o.Log = func(format string, args ...any) {
		if len(args) > 0 && args[0] == "customers" {
			cancel()
		}
	}
	_, err := seed.Run(ctx, db.Pool, ws, o)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Run = %v, want the cancellation", err)
	}
	var def string
	var valid bool
	if err := db.Pool.QueryRow(context.Background(), `SELECT pg_get_indexdef(i.indexrelid), i.indisvalid
		FROM pg_index i WHERE i.indexrelid = 'customers_search_idx'::regclass`).Scan(&def, &valid); err != nil {
		t.Fatalf("search index after a cancelled seed: %v", err)
	}
	if !valid || !strings.Contains(def, "gin (search_text gin_trgm_ops)") {
		t.Errorf("search index: %s (valid %v)", def, valid)
	}
	var events int
	if err := db.Pool.QueryRow(context.Background(), `SELECT count(*) FROM events WHERE workspace_id = $1`, ws).Scan(&events); err != nil || events != 0 {
		t.Errorf("%d events after the cancellation (%v): the seed went on", events, err)
	}
}

// customers counts the customers of every workspace.
func customers(t *testing.T, db *postgres.DB) int {
	t.Helper()
	var n int
	if err := db.Pool.QueryRow(context.Background(), `SELECT count(*) FROM customers`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// dropping returns a seed size that makes Run drop the search index
// beside the customers the database holds: at least a tenth of them all.
func dropping(t *testing.T, db *postgres.DB) int {
	return max(200, customers(t, db)/9+1)
}

// searchIndexes counts the indexes named customers_search_idx.
func searchIndexes(t *testing.T, db *postgres.DB) int {
	t.Helper()
	var n int
	if err := db.Pool.QueryRow(context.Background(),
		`SELECT count(*) FROM pg_indexes WHERE indexname = 'customers_search_idx'`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// dropped says whether the counted statements dropped the search index.
func dropped(c *pgtest.StatementCounter) bool {
	return strings.Contains(c.Statements(), "DROP INDEX IF EXISTS customers_search_idx")
}

// TestSmallSeedKeepsSearchIndex seeds a large workspace, which drops the
// search index and builds it again, then a tenant of 50 customers beside
// it, as bench webhooks seeds its tenants beside the query's million: the
// small seed never drops the index (it is there while its customers are
// copied, and no DROP is sent), so it does not pay for a build over every
// workspace's customers.
func TestSmallSeedKeepsSearchIndex(t *testing.T) {
	ctx := context.Background()
	counter := &pgtest.StatementCounter{}
	db := pgtest.Open(t, counter.Install)
	large, _, _ := pgtest.Workspace(t, db)
	if _, err := seed.Run(ctx, db.Pool, large, seed.Skewed(max(2000, customers(t, db)))); err != nil {
		t.Fatal(err)
	}
	if !dropped(counter) {
		t.Fatalf("a seed of half the customers kept the search index; statements:\n%s", counter.Statements())
	}
	counter.Reset()
	tenant, _, _ := pgtest.Workspace(t, db)
	during := -1
	o := seed.Options{Customers: 50, EventsPerCustomer: 2, MessagesPerConv: 2}
	o.Log = func(format string, args ...any) {
		if len(args) > 0 && args[0] == "customers" {
			during = searchIndexes(t, db)
		}
	}
	if _, err := seed.Run(ctx, db.Pool, tenant, o); err != nil {
		t.Fatal(err)
	}
	if during != 1 || dropped(counter) {
		t.Errorf("a 50-customer seed beside %d: %d search indexes after its COPY of customers; statements:\n%s",
			customers(t, db)-50, during, counter.Statements())
	}
	if got := searchIndexes(t, db); got != 1 {
		t.Errorf("%d search indexes after the small seed, want 1", got)
	}
}

// lockCustomers holds a ROW EXCLUSIVE lock on customers, as a writing
// transaction does, for d from now, on a connection of its own: CREATE
// INDEX waits for it. It returns a wait for the lock's release.
func lockCustomers(t *testing.T, d time.Duration) (wait func()) {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, pgtest.URL(t))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, `BEGIN; LOCK TABLE customers IN ROW EXCLUSIVE MODE`); err != nil {
		conn.Close(ctx)
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		time.Sleep(d)
		conn.Close(ctx) // ends the transaction, and its lock
	}()
	return func() { <-done }
}

// timeouts returns the option that gives a store's connections these
// statement and lock timeouts.
func timeouts(statement, lock time.Duration) postgres.Option {
	return func(c *pgxpool.Config) {
		c.ConnConfig.RuntimeParams["statement_timeout"] = fmtMillis(statement)
		c.ConnConfig.RuntimeParams["lock_timeout"] = fmtMillis(lock)
	}
}

func fmtMillis(d time.Duration) string { return strconv.FormatInt(d.Milliseconds(), 10) }

// TestRebuildOutlastsStatementTimeout seeds, on a store whose statements
// time out after 500 ms, while a writer holds customers for 2.5 s from
// the last COPY: the build of the search index waits for it longer than
// the statement timeout twice over, and the seed still ends with the
// index, as the build of a million customers' index (about 7 s) outlasts
// postgres.Open's 10 s timeout when the machine is busy.
func TestRebuildOutlastsStatementTimeout(t *testing.T) {
	ctx := context.Background()
	db := pgtest.Open(t, timeouts(500*time.Millisecond, 10*time.Second))
	ws, _, _ := pgtest.Workspace(t, db)
	o := seed.Skewed(dropping(t, db))
	var wait func()
	o.Log = func(format string, args ...any) {
		if len(args) > 0 && args[0] == "messages" {
			wait = lockCustomers(t, 2500*time.Millisecond)
		}
	}
	start := time.Now()
	_, err := seed.Run(ctx, db.Pool, ws, o)
	if wait == nil {
		t.Fatalf("the seed never copied its messages: %v", err)
	}
	wait()
	if err != nil {
		t.Fatalf("seed with the index build behind a 2.5 s lock: %v", err)
	}
	if got := searchIndexes(t, db); got != 1 {
		t.Errorf("%d search indexes after the seed, want 1", got)
	}
	if took := time.Since(start); took < 2500*time.Millisecond {
		t.Errorf("the seed took %v: its index build did not wait for the lock", took)
	}
}

// TestFailedRebuildSaysHowToMakeTheIndex makes both tries of the build
// fail (a writer holds customers past the lock timeout twice): Run
// returns an error that names the missing index and the statement that
// makes it.
func TestFailedRebuildSaysHowToMakeTheIndex(t *testing.T) {
	ctx := context.Background()
	db := pgtest.Open(t, timeouts(10*time.Second, 200*time.Millisecond))
	t.Cleanup(func() {
		// The tests after this one search and seed with the index.
		if _, err := db.Pool.Exec(ctx, `CREATE INDEX IF NOT EXISTS customers_search_idx ON customers USING gin (search_text gin_trgm_ops)`); err != nil {
			t.Error(err)
		}
	})
	ws, _, _ := pgtest.Workspace(t, db)
	o := seed.Skewed(dropping(t, db))
	var wait func()
	o.Log = func(format string, args ...any) {
		if len(args) > 0 && args[0] == "messages" {
			wait = lockCustomers(t, 2*time.Second)
		}
	}
	_, err := seed.Run(ctx, db.Pool, ws, o)
	if wait != nil {
		wait()
	}
	for _, want := range []string{"tried twice", "lock timeout", "customers_search_idx is missing",
		"make it with CREATE INDEX IF NOT EXISTS customers_search_idx ON customers USING gin (search_text gin_trgm_ops)"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Run = %v, want it to say %q", err, want)
		}
	}
	if got := searchIndexes(t, db); got != 0 {
		t.Errorf("%d search indexes after the failed builds: the error says there is none", got)
	}
}
