-- +goose NO TRANSACTION
-- +goose Up
-- sendMessage records a message as pending before it asks the provider,
-- and records the outcome after. One still pending long after its send
-- ended (its server stopped mid-send, or the outcome could not be
-- recorded) has an unknown outcome, and a sweep moves it to unconfirmed
-- (postgres.SweepPendingMessages). This index holds only the pending
-- messages, a handful at any time, so the sweep reads nothing else. It is
-- built CONCURRENTLY, as 00010's index is, so writes go on meanwhile; the
-- first statement drops what a run cut short may have left.
DROP INDEX CONCURRENTLY IF EXISTS messages_pending_idx;
CREATE INDEX CONCURRENTLY messages_pending_idx ON messages (workspace_id, created_at) WHERE status = 'pending';

-- +goose Down
DROP INDEX CONCURRENTLY IF EXISTS messages_pending_idx;
