package postgres

import (
	"context"
	"slices"
	"time"
)

// PendingSweepLock is the key of the full sweep's advisory lock.
const PendingSweepLock = pendingSweepLock

// SweepAllPending runs the full sweep as SweepPending does, under its
// advisory lock; ran is false when another held the lock.
func (db *DB) SweepAllPending(ctx context.Context, olderThan time.Time) (moved int, ran bool, err error) {
	return db.sweepAllPending(ctx, olderThan)
}

// RecentSendWorkspaces returns the workspaces the minute sweep reads, sorted.
func (db *DB) RecentSendWorkspaces() []int64 {
	out := db.recentSends.workspaces()
	slices.Sort(out)
	return out
}
