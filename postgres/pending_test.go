package postgres_test

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/c360dev/c360"
	"github.com/c360dev/c360/internal/pgtest"
	"github.com/c360dev/c360/postgres"
)

// recordPending records an outbound message in ws through db, age ago by
// db's clock, as a send whose server stopped before settling it leaves it:
// pending. It returns the message and its customer.
func recordPending(t *testing.T, db *postgres.DB, ws int64, phone string, age time.Duration) (*c360.Message, int64) {
	t.Helper()
	c := ingest1(t, db, ws, &c360.Event{Type: c360.EventIdentify, Source: "t", DedupeKey: "id-" + phone, OccurredAt: time.Now(), Identities: ids("phone", phone)}).CustomerID
	now := db.Now
	db.Now = func() time.Time { return now().Add(-age) }
	defer func() { db.Now = now }()
	m, _, err := db.RecordOutbound(context.Background(), ws, c360.OutboundRecord{CustomerID: c, Channel: "sms", To: phone, Body: "hi", SentBy: "agent", Source: "twilio", Key: "k-" + phone})
	if err != nil {
		t.Fatal(err)
	}
	return m, c
}

func messageStatus(t *testing.T, db *postgres.DB, ws, id int64) string {
	t.Helper()
	var s string
	if err := db.Pool.QueryRow(context.Background(), `SELECT status FROM messages WHERE workspace_id = $1 AND id = $2`, ws, id).Scan(&s); err != nil {
		t.Fatal(err)
	}
	return s
}

// lockTimeout shortens the pools' lock_timeout, so that a test of a lock
// wait takes a fraction of the 5 s default.
func lockTimeout(ms string) postgres.Option {
	return func(cfg *pgxpool.Config) { cfg.ConnConfig.RuntimeParams["lock_timeout"] = ms }
}

// A message the sweep cannot move (its customer locked in workspace A past
// the lock timeout) does not stop the sweep: workspace B's stale message
// is moved, and the failure is returned naming A's workspace and message,
// which a later sweep moves once the lock is gone.
func TestSweepGoesOnPastAWorkspaceThatFails(t *testing.T) {
	db := pgtest.Open(t, lockTimeout("200"))
	ctx := context.Background()
	stale := c360.StalePending + time.Minute
	wsA, _, _ := pgtest.Workspace(t, db)
	wsB, _, _ := pgtest.Workspace(t, db)
	mA, custA := recordPending(t, db, wsA, "+14155550191", stale)
	mB, _ := recordPending(t, db, wsB, "+14155550192", stale)

	tx, err := db.Pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	if _, err := tx.Exec(ctx, `SELECT 1 FROM customers WHERE workspace_id = $1 AND id = $2 FOR UPDATE`, wsA, custA); err != nil {
		t.Fatal(err)
	}
	n, err := db.SweepPendingMessages(ctx, db.Now().Add(-c360.StalePending))
	if want := fmt.Sprintf("workspace %d, message %d", wsA, mA.ID); err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("sweep = %d, %v; want the failure naming %q", n, err, want)
	}
	if s := messageStatus(t, db, wsB, mB.ID); s != c360.MessageUnconfirmed {
		t.Errorf("workspace B's stale message after the sweep: %s, want unconfirmed", s)
	}
	if s := messageStatus(t, db, wsA, mA.ID); s != c360.MessagePending {
		t.Errorf("workspace A's locked message after the sweep: %s, want pending", s)
	}
	tx.Rollback(ctx)
	if _, err := db.SweepPendingMessages(ctx, db.Now().Add(-c360.StalePending)); err != nil {
		t.Errorf("sweep after the lock is gone: %v", err)
	}
	if s := messageStatus(t, db, wsA, mA.ID); s != c360.MessageUnconfirmed {
		t.Errorf("workspace A's message after the lock is gone: %s, want unconfirmed", s)
	}
}

// The minute sweep reads only the workspaces where this store recorded a
// send lately: a message it recorded is moved once stale (by the store's
// clock), one another store (another replica) recorded is not, and is
// found by a full sweep. A workspace is forgotten once its last record is
// stale and swept, past a slack for records that commit late.
func TestMinuteSweepReadsTheWorkspacesThisStoreSentIn(t *testing.T) {
	db := pgtest.Open(t)
	other := pgtest.Open(t) // another replica
	ctx := context.Background()
	ws, _, _ := pgtest.Workspace(t, db)
	otherWS, _, _ := pgtest.Workspace(t, db)
	if got := db.RecentSendWorkspaces(); slices.Contains(got, ws) {
		t.Fatalf("recent workspaces before any send = %v", got)
	}

	fresh, _ := recordPending(t, db, ws, "+14155550193", 0)
	elsewhere, _ := recordPending(t, other, otherWS, "+14155550194", c360.StalePending+time.Hour)
	if n, err := db.SweepRecentPendingMessages(ctx, db.Now().Add(-c360.StalePending)); err != nil || n != 0 {
		t.Errorf("minute sweep before anything is stale = %d, %v; want 0", n, err)
	}
	if s := messageStatus(t, db, ws, fresh.ID); s != c360.MessagePending {
		t.Errorf("fresh message: %s, want pending", s)
	}

	// Two minutes and a second later, the message is stale: the minute
	// sweep moves it, and keeps the workspace for the slack.
	now := db.Now
	t.Cleanup(func() { db.Now = now })
	db.Now = func() time.Time { return now().Add(c360.StalePending + time.Second) }
	if n, err := db.SweepRecentPendingMessages(ctx, db.Now().Add(-c360.StalePending)); err != nil || n != 1 {
		t.Errorf("minute sweep once stale = %d, %v; want 1", n, err)
	}
	if s := messageStatus(t, db, ws, fresh.ID); s != c360.MessageUnconfirmed {
		t.Errorf("stale message after the minute sweep: %s, want unconfirmed", s)
	}
	if s := messageStatus(t, db, otherWS, elsewhere.ID); s != c360.MessagePending {
		t.Errorf("another replica's message after this one's minute sweep: %s, want pending (read by a full sweep only)", s)
	}
	if got := db.RecentSendWorkspaces(); !slices.Contains(got, ws) {
		t.Errorf("recent workspaces just after the sweep = %v, want %d kept for the slack", got, ws)
	}
	db.Now = func() time.Time { return now().Add(c360.StalePending + 2*time.Minute) }
	if _, err := db.SweepRecentPendingMessages(ctx, db.Now().Add(-c360.StalePending)); err != nil {
		t.Fatal(err)
	}
	if got := db.RecentSendWorkspaces(); slices.Contains(got, ws) {
		t.Errorf("recent workspaces past the slack = %v, want %d forgotten", got, ws)
	}

	if n, err := db.SweepPendingMessages(ctx, db.Now().Add(-c360.StalePending)); err != nil || n < 1 {
		t.Errorf("full sweep = %d, %v; want another replica's message moved", n, err)
	}
	if s := messageStatus(t, db, otherWS, elsewhere.ID); s != c360.MessageUnconfirmed {
		t.Errorf("another replica's message after a full sweep: %s, want unconfirmed", s)
	}
}

// Of replicas whose full sweeps fall due together, one runs it: the sweep
// holds an advisory lock, and one that finds it held skips.
func TestFullSweepRunsOnOneReplicaAtATime(t *testing.T) {
	db := pgtest.Open(t)
	other := pgtest.Open(t)
	ctx := context.Background()
	ws, _, _ := pgtest.Workspace(t, db)
	m, _ := recordPending(t, other, ws, "+14155550195", c360.StalePending+time.Minute)

	conn, err := other.Pool.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Release()
	if _, err := conn.Exec(ctx, `SELECT pg_advisory_lock($1)`, postgres.PendingSweepLock); err != nil {
		t.Fatal(err)
	}
	if n, ran, err := db.SweepAllPending(ctx, db.Now().Add(-c360.StalePending)); ran || n != 0 || err != nil {
		t.Errorf("full sweep while another runs = %d, ran %v, %v; want skipped", n, ran, err)
	}
	if s := messageStatus(t, db, ws, m.ID); s != c360.MessagePending {
		t.Errorf("message after a skipped sweep: %s, want pending", s)
	}
	if _, err := conn.Exec(ctx, `SELECT pg_advisory_unlock($1)`, postgres.PendingSweepLock); err != nil {
		t.Fatal(err)
	}
	if n, ran, err := db.SweepAllPending(ctx, db.Now().Add(-c360.StalePending)); !ran || n < 1 || err != nil {
		t.Errorf("full sweep = %d, ran %v, %v; want it run", n, ran, err)
	}
	if s := messageStatus(t, db, ws, m.ID); s != c360.MessageUnconfirmed {
		t.Errorf("message after the full sweep: %s, want unconfirmed", s)
	}
	// The lock was let go: the next full sweep runs too.
	if _, ran, err := db.SweepAllPending(ctx, db.Now().Add(-c360.StalePending)); !ran || err != nil {
		t.Errorf("next full sweep: ran %v, %v; want it run", ran, err)
	}
}

// SweepPending's first sweep, at start, reads every workspace: a message a
// replica that died left pending is moved without waiting for the hourly
// sweep.
func TestSweepPendingStartsWithAFullSweep(t *testing.T) {
	db := pgtest.Open(t)
	dead := pgtest.Open(t)
	ws, _, _ := pgtest.Workspace(t, db)
	m, _ := recordPending(t, dead, ws, "+14155550196", c360.StalePending+time.Minute)

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		db.SweepPending(ctx, time.Hour, time.Hour, slog.New(slog.DiscardHandler))
	}()
	defer func() {
		cancel()
		<-done
	}()
	deadline := time.Now().Add(10 * time.Second)
	for messageStatus(t, db, ws, m.ID) == c360.MessagePending {
		if time.Now().After(deadline) {
			t.Fatal("the message left pending by another replica is still pending 10 s after the sweep started")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Between full sweeps, a process that sent nothing sweeps nothing: where
// every tick read every workspace (a query each, on every replica), only
// the sweep at start lists them.
func TestSweepPendingReadsNothingWhenNothingWasSent(t *testing.T) {
	counter := &pgtest.StatementCounter{}
	db := pgtest.Open(t, counter.Install)
	pgtest.Workspace(t, db)
	pgtest.Workspace(t, db)
	counter.Reset()

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		db.SweepPending(ctx, 10*time.Millisecond, time.Hour, slog.New(slog.DiscardHandler))
	}()
	time.Sleep(300 * time.Millisecond) // some 30 ticks
	cancel()
	<-done

	var listings, reads int
	for _, s := range strings.Split(counter.Statements(), "\n") {
		switch {
		case strings.Contains(s, "FROM workspaces"):
			listings++
		case strings.Contains(s, "FROM messages"):
			reads++
		}
	}
	workspaces := count(t, db, `SELECT count(*) FROM workspaces`)
	if listings != 1 || reads > workspaces {
		t.Errorf("30 ticks listed the workspaces %d times and read pending messages %d times (%d workspaces); want 1 listing, at start, and a read per workspace at most:\n%s",
			listings, reads, workspaces, counter.Statements())
	}
}
