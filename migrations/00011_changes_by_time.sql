-- +goose NO TRANSACTION
-- +goose Up
-- A replica that hears "every customer of this workspace may have changed"
-- (a notification that overflowed, or a LISTEN connection that was lost
-- and made again) finds which customers changed since a time, for the
-- workspace-wide streams it serves. Change rows are appended in about the
-- order of their created_at, so a BRIN index answers that by reading only
-- the table's newest block ranges, and costs ingest next to nothing. It is
-- built CONCURRENTLY, as 00010's index is, so writes go on meanwhile; the
-- first statement drops what a run cut short may have left.
DROP INDEX CONCURRENTLY IF EXISTS customer_changes_created_brin;
CREATE INDEX CONCURRENTLY customer_changes_created_brin ON customer_changes USING brin (created_at);

-- +goose Down
DROP INDEX CONCURRENTLY IF EXISTS customer_changes_created_brin;
