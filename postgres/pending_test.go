package postgres_test

import (
	"context"
	"fmt"
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
