package postgres_test

import (
	"context"
	"fmt"
	"net/url"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/c360dev/c360"
	"github.com/c360dev/c360/internal/pgtest"
	"github.com/c360dev/c360/postgres"
)

// lockCustomer holds customer's row lock, as a merge of a large customer or
// another replica's group would, until the returned transaction ends (at
// the latest when the test does). pid is the transaction's backend.
func lockCustomer(t *testing.T, db *postgres.DB, ws, customer int64) (tx pgx.Tx, pid int) {
	t.Helper()
	ctx := context.Background()
	tx, err := db.Pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tx.Rollback(ctx) })
	if _, err := tx.Exec(ctx, `SELECT 1 FROM customers WHERE workspace_id = $1 AND id = $2 FOR UPDATE`, ws, customer); err != nil {
		t.Fatal(err)
	}
	if err := tx.QueryRow(ctx, `SELECT pg_backend_pid()`).Scan(&pid); err != nil {
		t.Fatal(err)
	}
	return tx, pid
}

// waitBlockedBy returns once a transaction waits for a lock that backend
// pid holds.
func waitBlockedBy(t *testing.T, db *postgres.DB, pid int) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		var n int
		if err := db.Pool.QueryRow(context.Background(),
			`SELECT count(*) FROM pg_stat_activity WHERE $1 = ANY(pg_blocking_pids(pid))`, pid).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n > 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no transaction waits for backend %d", pid)
		}
	}
}

// ingestAsync runs Ingest of ev in a goroutine; its error arrives on the
// channel returned.
func ingestAsync(db *postgres.DB, ws int64, ev *c360.Event) <-chan error {
	done := make(chan error, 1)
	go func() {
		_, err := db.Ingest(context.Background(), ws, []*c360.Event{ev})
		done <- err
	}()
	return done
}

// A request whose customer is locked past lock_timeout (55P03), or past
// statement_timeout (57014) when no lock_timeout is set, fails alone: the
// unrelated request grouped with it is stored. The group's lock wait ends
// as 55P03, a quarter of statement_timeout before it, and sends the group
// request by request, as an event fault does; only the request that times
// out again alone is answered UNAVAILABLE (503), and the others are tried
// together once more.
func TestGroupLockTimeoutFailsOnlyTheLockedRequest(t *testing.T) {
	for name, params := range map[string]url.Values{
		"lock_timeout":      {"lock_timeout": {"300"}},
		"statement_timeout": {"lock_timeout": {"0"}, "statement_timeout": {"300"}},
	} {
		t.Run(name, func(t *testing.T) { testGroupLockTimeout(t, params) })
	}
}

func testGroupLockTimeout(t *testing.T, params url.Values) {
	db := pgtest.OpenStore(t, params, postgres.IngestConfig{Workers: 1})
	ws, _, _ := pgtest.Workspace(t, db)
	ctx := context.Background()
	x := ingest1(t, db, ws, track("x-0", ids("user_id", "x"))).CustomerID
	tx, pid := lockCustomer(t, db, ws, x)

	x1 := ingestAsync(db, ws, track("x-1", ids("user_id", "x"))) // keeps the one worker busy
	waitBlockedBy(t, db, pid)
	x2 := ingestAsync(db, ws, track("x-2", ids("user_id", "x")))
	time.Sleep(10 * time.Millisecond)
	start := time.Now()
	y1 := ingestAsync(db, ws, track("y-1", ids("user_id", "y")))

	if err := <-y1; err != nil {
		t.Fatalf("y, unrelated to the locked customer: %v, want stored", err)
	}
	t.Logf("y stored after %v", time.Since(start))
	for name, ch := range map[string]<-chan error{"x-1": x1, "x-2": x2} {
		if err := <-ch; c360.ErrorCode(err) != c360.EUNAVAILABLE {
			t.Errorf("%s, its customer locked: %v, want UNAVAILABLE", name, err)
		}
	}
	if n := count(t, db, `SELECT count(*) FROM events WHERE workspace_id = $1 AND dedupe_key = 'y-1'`, ws); n != 1 {
		t.Errorf("y-1 stored %d times, want 1", n)
	}
	if n := count(t, db, `SELECT count(*) FROM events WHERE workspace_id = $1 AND dedupe_key IN ('x-1', 'x-2')`, ws); n != 0 {
		t.Errorf("%d of x's locked events stored, want 0", n)
	}
	tx.Rollback(ctx)
	for _, key := range []string{"x-1", "x-2"} {
		if got := ingest1(t, db, ws, track(key, ids("user_id", "x"))); got.CustomerID != x || got.Duplicate {
			t.Errorf("%s retried: %+v, want stored for customer %d", key, got, x)
		}
	}
}

// A locked customer with two requests in one group fails only its own
// requests. Group [x-2, x-3, y-1], x's row locked: x-2 alone times out; the
// rest would be tried together once more, and x-3 would hit the same lock
// and fail y-1, free, with it. x-3, which shares x-2's identity, is answered
// with x-2 at once instead, and y-1 is applied without it.
func TestGroupWithTwoRequestsOfALockedCustomerStoresTheFreeOne(t *testing.T) {
	db := pgtest.OpenStore(t, url.Values{"lock_timeout": {"300"}}, postgres.IngestConfig{Workers: 1})
	ws, _, _ := pgtest.Workspace(t, db)
	ctx := context.Background()
	x := ingest1(t, db, ws, track("x-0", ids("user_id", "x"))).CustomerID
	tx, pid := lockCustomer(t, db, ws, x)

	x1 := ingestAsync(db, ws, track("x-1", ids("user_id", "x"))) // keeps the one worker busy
	waitBlockedBy(t, db, pid)
	x2 := ingestAsync(db, ws, track("x-2", ids("user_id", "x")))
	time.Sleep(10 * time.Millisecond)
	x3 := ingestAsync(db, ws, track("x-3", ids("user_id", "x")))
	time.Sleep(10 * time.Millisecond)
	y1 := ingestAsync(db, ws, track("y-1", ids("user_id", "y")))

	if err := <-y1; err != nil {
		t.Errorf("y, unrelated to the locked customer: %v, want stored", err)
	}
	for name, ch := range map[string]<-chan error{"x-1": x1, "x-2": x2, "x-3": x3} {
		if err := <-ch; c360.ErrorCode(err) != c360.EUNAVAILABLE {
			t.Errorf("%s, its customer locked: %v, want UNAVAILABLE", name, err)
		}
	}
	if n := count(t, db, `SELECT count(*) FROM events WHERE workspace_id = $1 AND dedupe_key = 'y-1'`, ws); n != 1 {
		t.Errorf("y-1 stored %d times, want 1", n)
	}
	if n := count(t, db, `SELECT count(*) FROM events WHERE workspace_id = $1 AND dedupe_key IN ('x-1', 'x-2', 'x-3')`, ws); n != 0 {
		t.Errorf("%d of x's locked events stored, want 0", n)
	}
	tx.Rollback(ctx)
}

// A group waits for a locked customer only briefly (at most 500 ms, not
// the full lock_timeout), so the requests queued with it and behind it
// are held up that long; the locked request alone then waits its full
// lock_timeout and is stored if the lock is released in it.
func TestGroupWaitsBrieflyForALockedCustomer(t *testing.T) {
	const lockTimeout = 4 * time.Second
	db := pgtest.OpenStore(t, url.Values{"lock_timeout": {"4s"}}, postgres.IngestConfig{Workers: 1})
	ws, _, _ := pgtest.Workspace(t, db)
	ctx := context.Background()
	z := ingest1(t, db, ws, track("z-0", ids("user_id", "z"))).CustomerID
	x := ingest1(t, db, ws, track("x-0", ids("user_id", "x"))).CustomerID
	txZ, pidZ := lockCustomer(t, db, ws, z)
	txX, _ := lockCustomer(t, db, ws, x)

	z1 := ingestAsync(db, ws, track("z-1", ids("user_id", "z"))) // keeps the one worker busy
	waitBlockedBy(t, db, pidZ)
	y1 := ingestAsync(db, ws, track("y-1", ids("user_id", "y")))
	time.Sleep(20 * time.Millisecond)
	x1 := ingestAsync(db, ws, track("x-1", ids("user_id", "x")))
	time.Sleep(50 * time.Millisecond) // y-1 and x-1 wait in the queue, to be one group
	start := time.Now()
	txZ.Rollback(ctx)
	if err := <-z1; err != nil {
		t.Fatalf("z-1: %v", err)
	}
	if err := <-y1; err != nil {
		t.Fatalf("y-1, grouped with the locked x-1: %v, want stored", err)
	}
	if took := time.Since(start); took > lockTimeout/2 {
		t.Errorf("y-1 stored %v after its group started, want well under the %v lock_timeout", took, lockTimeout)
	}
	// x-1 now waits alone, with the full lock_timeout: past the group's
	// 500 ms, it is still waiting, and is stored once the lock goes.
	time.Sleep(700 * time.Millisecond)
	txX.Rollback(ctx)
	if err := <-x1; err != nil {
		t.Errorf("x-1, its lock released within lock_timeout: %v, want stored", err)
	}
	if n := count(t, db, `SELECT count(*) FROM events WHERE workspace_id = $1 AND dedupe_key IN ('x-1', 'y-1', 'z-1')`, ws); n != 3 {
		t.Errorf("%d of x-1, y-1, z-1 stored, want 3", n)
	}
}

// A lock wider than one customer (a migration's on the events table) fails
// every request of a group alone. After the first has waited the full
// lock_timeout, the others are tried once together, with the group's short
// wait, and all answered UNAVAILABLE: the queue behind is held up about one
// lock_timeout and twice the group's 500 ms, however many requests the
// group holds, not one wait per request (20 requests took 11 s so).
func TestGroupUnderAWideLockWaitsAboutOneLockTimeout(t *testing.T) {
	const lockTimeout, requests = time.Second, 20
	db := pgtest.OpenStore(t, url.Values{"lock_timeout": {"1s"}}, postgres.IngestConfig{Workers: 1})
	ws, _, _ := pgtest.Workspace(t, db)
	pgtest.LockEvents(t, db)

	busy := ingestAsync(db, ws, track("w-busy", ids("user_id", "w-busy"))) // keeps the one worker busy
	pgtest.WaitForLockWait(t, db, "events")
	group := queueGroup(db, ws, "w", requests)
	if err := <-busy; c360.ErrorCode(err) != c360.EUNAVAILABLE {
		t.Fatalf("the request ahead: %v, want UNAVAILABLE", err)
	}
	if took := answeredUnavailable(t, "w", group, "the events table locked"); took > 2*lockTimeout+lockTimeout/2 {
		t.Errorf("the group's %d requests answered in %v, want about one lock_timeout (%v), not one each", requests, took, lockTimeout)
	}
}

// A statement that outlasts statement_timeout (57014) with no lock in the
// way is the database being slow, not a customer held elsewhere: the group
// is answered UNAVAILABLE at once, not retried request by request, which
// would send the slow statement once per request and hold the queue one
// statement_timeout each (3.3 s for these 10 requests).
func TestGroupUnderASlowStatementFailsAtOnce(t *testing.T) {
	const statementTimeout, requests = 300 * time.Millisecond, 10
	db := pgtest.OpenStore(t, url.Values{"statement_timeout": {"300"}}, postgres.IngestConfig{Workers: 1})
	ws, _, _ := pgtest.Workspace(t, db)
	slowEventInserts(t, db, ws)

	busy := ingestAsync(db, ws, track("s-busy", ids("user_id", "s-busy"))) // keeps the one worker busy
	waitSleeping(t, db)
	group := queueGroup(db, ws, "s", requests)
	if err := <-busy; c360.ErrorCode(err) != c360.EUNAVAILABLE {
		t.Fatalf("the request ahead: %v, want UNAVAILABLE", err)
	}
	if took := answeredUnavailable(t, "s", group, "its insert slower than statement_timeout"); took > 3*statementTimeout {
		t.Errorf("the group's %d requests answered in %v, want about one statement_timeout (%v), not one each", requests, took, statementTimeout)
	}
	if n := count(t, db, `SELECT count(*) FROM events WHERE workspace_id = $1`, ws); n != 0 {
		t.Errorf("%d events stored, want 0", n)
	}
}

// slowEventInserts makes every insert into events in workspace ws take a
// second, as on a database too busy to answer, until the test ends.
func slowEventInserts(t *testing.T, db *postgres.DB, ws int64) {
	t.Helper()
	ctx := context.Background()
	if _, err := db.Pool.Exec(ctx, fmt.Sprintf(`CREATE FUNCTION test_slow_events() RETURNS trigger LANGUAGE plpgsql AS $$
		BEGIN
			IF current_setting('c360.workspace_id', true) = '%d' THEN
				PERFORM pg_sleep(1);
			END IF;
			RETURN NULL;
		END $$`, ws)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Pool.Exec(ctx, `DROP FUNCTION test_slow_events() CASCADE`) })
	if _, err := db.Pool.Exec(ctx, `CREATE TRIGGER test_slow_events BEFORE INSERT ON events
		FOR EACH STATEMENT EXECUTE FUNCTION test_slow_events()`); err != nil {
		t.Fatal(err)
	}
}

// waitSleeping returns once a statement of this database sleeps in
// pg_sleep (slowEventInserts' trigger).
func waitSleeping(t *testing.T, db *postgres.DB) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		var n int
		if err := db.Pool.QueryRow(context.Background(), `SELECT count(*) FROM pg_stat_activity
			WHERE wait_event = 'PgSleep' AND datname = current_database()`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n > 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("no statement sleeps in pg_sleep")
		}
	}
}

// queueGroup sends n requests, of the users prefix-0 to prefix-(n-1),
// while the one worker is busy, and lets them wait in its queue, to be
// taken as one group.
func queueGroup(db *postgres.DB, ws int64, prefix string, n int) []<-chan error {
	var group []<-chan error
	for i := range n {
		user := fmt.Sprintf("%s-%d", prefix, i)
		group = append(group, ingestAsync(db, ws, track(user, ids("user_id", user))))
	}
	time.Sleep(50 * time.Millisecond)
	return group
}

// answeredUnavailable waits for every request of a queueGroup, fails t for
// each one not answered UNAVAILABLE (why says why it must be), and returns
// how long the answers took.
func answeredUnavailable(t *testing.T, prefix string, group []<-chan error, why string) time.Duration {
	t.Helper()
	start := time.Now()
	for i, ch := range group {
		if err := <-ch; c360.ErrorCode(err) != c360.EUNAVAILABLE {
			t.Errorf("%s-%d, %s: %v, want UNAVAILABLE", prefix, i, why, err)
		}
	}
	return time.Since(start)
}

// A group waits for a lock at most groupLockWait (500 ms), never longer
// than the connections' own lock_timeout, and always a quarter of
// statement_timeout less than that, however the URL writes these settings
// (PostgreSQL reads them): a lock wait then fails as a lock wait (55P03),
// never as a slow statement (57014). A value PostgreSQL cannot read never
// reaches a group: the connection is refused.
func TestGroupLockTimeout(t *testing.T) {
	// The workspace is made on a store of the usual settings: a 2 ms
	// statement_timeout would cancel its creation on a busy machine.
	ws, _, _ := pgtest.Workspace(t, pgtest.Open(t))
	for _, tc := range []struct{ lock, stmt, want string }{
		{"5000", "10000", "500ms"},
		{"300", "10000", "300ms"},
		{"100ms", "", "100ms"},
		{"0.2s", "10s", "200ms"},
		{"5s", "10s", "500ms"},
		{"1min", "", "500ms"},
		{"0", "0", "500ms"}, // no timeout
		{"", "", "500ms"},   // c360's defaults, 5 s and 10 s
		{"0", "300", "225ms"},
		{"5000", "400ms", "300ms"},
		{"100", "400", "100ms"},
		{"5s", "0.5s", "375ms"},
		// (A fresh connection's first statement loads its catalog caches,
		// about 2 ms on a busy machine: a statement_timeout much below 10ms
		// cancels the reading itself.)
		{"5s", "10ms", "7ms"},
	} {
		params := url.Values{}
		if tc.lock != "" {
			params.Set("lock_timeout", tc.lock)
		}
		if tc.stmt != "" {
			params.Set("statement_timeout", tc.stmt)
		}
		db := pgtest.OpenStore(t, params, postgres.IngestConfig{})
		if got, err := db.GroupLockTimeout(context.Background(), ws); err != nil || got != tc.want {
			t.Errorf("lock_timeout %q, statement_timeout %q: a group waits %q (%v), want %s", tc.lock, tc.stmt, got, err, tc.want)
		}
	}
	db := pgtest.OpenStore(t, url.Values{"lock_timeout": {"soon"}, "statement_timeout": {"later"}}, postgres.IngestConfig{})
	if _, err := db.GroupLockTimeout(context.Background(), 1); err == nil {
		t.Errorf("lock_timeout %q: a group began, want the connection refused", "soon")
	}
}
