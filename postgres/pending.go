package postgres

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/c360dev/c360"
)

// pendingSweepBatch bounds the messages of one workspace one sweep reads.
const pendingSweepBatch = 500

// SweepPendingMessages moves every outbound message still pending that was
// recorded before olderThan to unconfirmed, and returns how many moved on
// (to unconfirmed, or further if a callback came meanwhile).
// Such a message's send ended without recording its outcome (its server
// stopped mid-send, or the record failed), so nothing else will settle it:
// the provider may or may not have taken it. The move is a status update
// like any other (SettleOutbound, forward only, with its change), so a
// status callback that comes later still moves the message on, and one
// that came first is not undone.
//
// Messages are read workspace by workspace, under each one's row-level
// security, through the partial index of pending messages (migration
// 00017): a sweep reads only what it moves.
func (db *DB) SweepPendingMessages(ctx context.Context, olderThan time.Time) (int, error) {
	rows, err := db.Pool.Query(ctx, `SELECT id FROM workspaces ORDER BY id`)
	if err != nil {
		return 0, interpretError(fmt.Errorf("list workspaces: %w", err))
	}
	workspaces, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	if err != nil {
		return 0, interpretError(fmt.Errorf("list workspaces: %w", err))
	}
	moved := 0
	for _, ws := range workspaces {
		for {
			rows, err := db.as(ws).Query(ctx, `
				SELECT id FROM messages
				WHERE workspace_id = $1 AND status = 'pending' AND direction = 'outbound' AND created_at < $2
				ORDER BY created_at, id LIMIT $3`, ws, olderThan, pendingSweepBatch)
			if err != nil {
				return moved, interpretError(fmt.Errorf("find pending messages: %w", err))
			}
			ids, err := pgx.CollectRows(rows, pgx.RowTo[int64])
			if err != nil {
				return moved, interpretError(fmt.Errorf("find pending messages: %w", err))
			}
			movedNow := 0
			for _, id := range ids {
				m, err := db.SettleOutbound(ctx, ws, id, c360.OutboundOutcome{Status: c360.MessageUnconfirmed})
				if c360.ErrorCode(err) == c360.ENOTFOUND {
					continue // erased meanwhile
				} else if err != nil {
					return moved, err
				}
				if m.Status != c360.MessagePending {
					movedNow++
				}
			}
			moved += movedNow
			// A full batch may have more behind it, unless none of it
			// moved: reading it again would find the same messages.
			if len(ids) < pendingSweepBatch || movedNow == 0 {
				break
			}
		}
	}
	return moved, nil
}

// SweepPending runs SweepPendingMessages at once and then every interval,
// for the messages pending longer than c360.StalePending, until ctx ends.
// A failed sweep is logged and tried again at the next tick.
func (db *DB) SweepPending(ctx context.Context, every time.Duration, log *slog.Logger) {
	if log == nil {
		log = slog.Default()
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		n, err := db.SweepPendingMessages(ctx, db.Now().Add(-c360.StalePending))
		switch {
		case ctx.Err() != nil:
			return
		case err != nil:
			log.Error("sweep pending messages", "error", err)
		case n > 0:
			log.Warn("messages left pending by an interrupted send are now unconfirmed", "messages", n)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
