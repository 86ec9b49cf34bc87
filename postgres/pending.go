package postgres

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/c360dev/c360"
)

// pendingSweepBatch bounds the messages of one workspace one sweep reads.
const pendingSweepBatch = 500

// pendingSweepLock is the key of the advisory lock a full sweep (every
// workspace) holds, so that replicas whose full sweeps fall due
// together run one. Fixed, so that releases running side by side during a
// rolling deploy agree on it.
const pendingSweepLock int64 = 0x6333363070656e64 // "c360pend"

// recordSlack is how long after it takes its clock reading a record of an
// outbound message has certainly committed, retries included (each
// statement is cut off at 10 s): a workspace is kept among the recent
// senders that long past its last record's staleness, so no message a
// record committed late is left behind.
const recordSlack = time.Minute

// maxSweepErrors bounds the failures one sweep returns (the rest are
// counted): a database that is down fails every workspace's read.
const maxSweepErrors = 10

// recentSends holds the workspaces where this store recorded an outbound
// message lately, with the time of the last record, so that the minute
// sweep reads those alone, not every workspace: the messages an
// interrupted send of this process left pending are theirs. Those of a
// process that died are found by a full sweep (at start, then hourly).
type recentSends struct {
	mu   sync.Mutex
	last map[int64]time.Time
}

// note records a send recorded in workspace ws at at.
func (r *recentSends) note(ws int64, at time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.last == nil {
		r.last = map[int64]time.Time{}
	}
	if at.After(r.last[ws]) {
		r.last[ws] = at
	}
}

// workspaces returns the workspaces noted.
func (r *recentSends) workspaces() []int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]int64, 0, len(r.last))
	for ws := range r.last {
		out = append(out, ws)
	}
	return out
}

// forget drops ws if its last record was before before.
func (r *recentSends) forget(ws int64, before time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if last, ok := r.last[ws]; ok && last.Before(before) {
		delete(r.last, ws)
	}
}

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
// 00017): a sweep reads only what it moves, but it costs a query per
// workspace, so serve runs it rarely (SweepPending). A message that cannot
// be moved (its customer locked past the lock timeout) is skipped for the
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
	moved, _, err := db.sweepPending(ctx, workspaces, olderThan)
	return moved, err
}

// SweepRecentPendingMessages is SweepPendingMessages for the workspaces
// where this store recorded an outbound message lately (RecordOutbound),
// which the messages this process's interrupted sends left pending are in:
// with nothing sent, it reads nothing. A workspace is forgotten once a
// sweep has read it past its last record's staleness (and recordSlack).
func (db *DB) SweepRecentPendingMessages(ctx context.Context, olderThan time.Time) (int, error) {
	workspaces := db.recentSends.workspaces()
	moved, failed, err := db.sweepPending(ctx, workspaces, olderThan)
	for _, ws := range workspaces {
		if !failed[ws] && ctx.Err() == nil {
			db.recentSends.forget(ws, olderThan.Add(-recordSlack))
		}
	}
	return moved, err
}

// sweepPending moves the stale pending messages of workspaces, and returns
// how many moved and the workspaces where one could not be.
func (db *DB) sweepPending(ctx context.Context, workspaces []int64, olderThan time.Time) (int, map[int64]bool, error) {
	moved := 0
	failed := map[int64]bool{}
	var errs sweepErrors
	for _, ws := range workspaces {
		if err := ctx.Err(); err != nil {
			return moved, failed, errors.Join(errs.err(), err)
		}
		n, ok := db.sweepWorkspace(ctx, ws, olderThan, &errs)
		moved += n
		if !ok {
			failed[ws] = true
		}
	}
	return moved, failed, errs.err()
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

// sweepAllPending runs SweepPendingMessages under an advisory lock
// (pendingSweepLock), so that of the replicas whose full sweeps fall due
// together one reads every workspace; ran is false when another held the
// lock. The lock is a transaction's, held by a transaction of the owner
// pool left open for the sweep (it holds no snapshot between statements,
// so it holds back no vacuum): it ends with the transaction, or with its
// session if the process dies, with no unlock to fail, and it holds under
// a pooler's transaction pooling too, where a session lock could outlive
// its client on a pooled connection.
func (db *DB) sweepAllPending(ctx context.Context, olderThan time.Time) (moved int, ran bool, err error) {
	tx, err := db.Pool.Begin(ctx)
	if err != nil {
		return 0, false, interpretError(fmt.Errorf("begin the sweep's lock: %w", err))
	}
	defer tx.Rollback(context.WithoutCancel(ctx))
	var locked bool
	if err := tx.QueryRow(ctx, `SELECT pg_try_advisory_xact_lock($1)`, pendingSweepLock).Scan(&locked); err != nil {
		return 0, false, interpretError(fmt.Errorf("lock the sweep: %w", err))
	}
	if !locked {
		return 0, false, nil
	}
	moved, err = db.SweepPendingMessages(ctx, olderThan)
	return moved, true, err
}

// SweepPending sweeps the messages pending longer than c360.StalePending
// until ctx ends: every workspace at once (sweepAllPending) and then about
// every fullEvery (at random between three quarters and five quarters of
// it, so that replicas started together drift apart), and every every in
// between the workspaces where this process recorded a send lately
// (SweepRecentPendingMessages), which costs nothing when it sent nothing.
// A message left pending by a process that died is found by the next full
// sweep of any replica, at its start or within about fullEvery. A full
// sweep another replica is running is skipped (the recent one runs
// instead). A failed sweep is logged and tried again at the next tick.
func (db *DB) SweepPending(ctx context.Context, every, fullEvery time.Duration, log *slog.Logger) {
	if log == nil {
		log = slog.Default()
	}
	t := time.NewTicker(every)
	defer t.Stop()
	nextFull := time.Now()
	for {
		olderThan := db.Now().Add(-c360.StalePending)
		var (
			n   int
			ran bool
			err error
		)
		if !time.Now().Before(nextFull) {
			n, ran, err = db.sweepAllPending(ctx, olderThan)
			nextFull = time.Now().Add(fullEvery*3/4 + rand.N(fullEvery/2+1))
		}
		if !ran {
			recent, recentErr := db.SweepRecentPendingMessages(ctx, olderThan)
			n, err = n+recent, errors.Join(err, recentErr)
		}
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
