package postgres

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/c360dev/c360"
)

// pendingSweepBatch bounds the messages of one workspace one sweep reads.
const pendingSweepBatch = 500

// maxSweepErrors bounds the failures one sweep returns (the rest are
// counted): a database that is down fails every workspace's read.
const maxSweepErrors = 10

// sweepErrors joins the failures of one sweep, at most maxSweepErrors of
// them, and counts the rest.
type sweepErrors struct {
	errs    []error
	dropped int
}

func (s *sweepErrors) add(err error) {
	if len(s.errs) < maxSweepErrors {
		s.errs = append(s.errs, err)
	} else {
		s.dropped++
	}
}

func (s *sweepErrors) err() error {
	if s.dropped > 0 {
		return errors.Join(append(s.errs, fmt.Errorf("and %d more failures", s.dropped))...)
	}
	return errors.Join(s.errs...)
}

// SweepPendingMessages moves every outbound message still pending that was
// recorded before olderThan, in every workspace, to unconfirmed, and
// returns how many moved on (to unconfirmed, or further if a callback came
// meanwhile).
// Such a message's send ended without recording its outcome (its server
// stopped mid-send, or the record failed), so nothing else will settle it:
// the provider may or may not have taken it. The move is a status update
// like any other (SettleOutbound, forward only, with its change), so a
// status callback that comes later still moves the message on, and one
// that came first is not undone.
//
// Messages are read workspace by workspace, under each one's row-level
// security, through the partial index of pending messages (migration
// 00017): a sweep reads only what it moves. A message that cannot be
// moved (its customer locked past the lock timeout) is skipped for the
// rest of the sweep, and the sweep goes on with the others and the next
// workspaces; the failures are returned joined, each naming its workspace
// and message (never its body), for SweepPending to log.
func (db *DB) SweepPendingMessages(ctx context.Context, olderThan time.Time) (int, error) {
	rows, err := db.Pool.Query(ctx, `SELECT id FROM workspaces ORDER BY id`)
	if err != nil {
		return 0, interpretError(fmt.Errorf("list workspaces: %w", err))
	}
	workspaces, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	if err != nil {
		return 0, interpretError(fmt.Errorf("list workspaces: %w", err))
	}
	return db.sweepPending(ctx, workspaces, olderThan)
}

// sweepPending moves the stale pending messages of workspaces, and returns
// how many moved.
func (db *DB) sweepPending(ctx context.Context, workspaces []int64, olderThan time.Time) (int, error) {
	moved := 0
	var errs sweepErrors
	for _, ws := range workspaces {
		if err := ctx.Err(); err != nil {
			return moved, errors.Join(errs.err(), err)
		}
		n, _ := db.sweepWorkspace(ctx, ws, olderThan, &errs)
		moved += n
	}
	return moved, errs.err()
}

// sweepWorkspace moves the stale pending messages of workspace ws, adding
// its failures to errs, and returns how many moved and whether all were.
func (db *DB) sweepWorkspace(ctx context.Context, ws int64, olderThan time.Time, errs *sweepErrors) (int, bool) {
	moved, ok := 0, true
	skipped := []int64{} // not nil: = ANY(NULL) would match nothing, and NOT it nothing either
	for {
		rows, err := db.as(ws).Query(ctx, `
			SELECT id FROM messages
			WHERE workspace_id = $1 AND status = 'pending' AND direction = 'outbound' AND created_at < $2
			  AND NOT id = ANY($4::bigint[])
			ORDER BY created_at, id LIMIT $3`, ws, olderThan, pendingSweepBatch, skipped)
		var ids []int64
		if err == nil {
			ids, err = pgx.CollectRows(rows, pgx.RowTo[int64])
		}
		if err != nil {
			errs.add(fmt.Errorf("workspace %d: find pending messages: %w", ws, interpretError(err)))
			return moved, false
		}
		movedNow := 0
		for _, id := range ids {
			m, err := db.SettleOutbound(ctx, ws, id, c360.OutboundOutcome{Status: c360.MessageUnconfirmed})
			switch {
			case c360.ErrorCode(err) == c360.ENOTFOUND:
				continue // erased meanwhile
			case err != nil:
				errs.add(fmt.Errorf("workspace %d, message %d: %w", ws, id, err))
				skipped, ok = append(skipped, id), false
				if ctx.Err() != nil {
					return moved, false
				}
				continue
			}
			if m.Status != c360.MessagePending {
				movedNow++
			}
		}
		moved += movedNow
		// A full batch may have more behind it, unless none of it
		// moved: reading it again would find the same messages.
		if len(ids) < pendingSweepBatch || movedNow == 0 {
			return moved, ok
		}
	}
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
		}
		if n > 0 {
			log.Warn("messages left pending by an interrupted send are now unconfirmed", "messages", n)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
