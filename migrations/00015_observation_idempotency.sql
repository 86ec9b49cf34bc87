-- +goose NO TRANSACTION
-- +goose Up
-- recordObservation's messageId: an assistant that retries after a lost
-- answer gives the same id, and the observation is stored once. The key
-- is the recorder's (recorded_by names the API key), as a Segment
-- messageId is its source's: two keys never collide on their ids. An
-- observation without a messageId (NULL; every row before this migration)
-- is never a repeat, since NULLs are distinct in a unique index.
--
-- The column is nullable without a default, so adding it rewrites
-- nothing, and the previous release, which does not name it, keeps
-- inserting. But the column comes with its CHECK, which PostgreSQL
-- verifies on every existing row while the ALTER holds ACCESS EXCLUSIVE
-- on observations: a scan of the whole table during which observations
-- are neither read nor written (377 ms at 3 million rows). Later
-- migrations add such a column bare, then the constraint NOT VALID, then
-- VALIDATE CONSTRAINT in a statement of its own (docs/operations.md).
-- The index is built CONCURRENTLY, as 00010's to 00012's are, so
-- recording goes on during the build; each statement can run again after
-- a run cut short (the DROP removes an invalid index such a run leaves).
ALTER TABLE observations ADD COLUMN IF NOT EXISTS message_id text CHECK (octet_length(message_id) BETWEEN 1 AND 256);
DROP INDEX CONCURRENTLY IF EXISTS observations_message_id_key;
CREATE UNIQUE INDEX CONCURRENTLY observations_message_id_key ON observations (workspace_id, recorded_by, message_id);

-- +goose Down
DROP INDEX CONCURRENTLY IF EXISTS observations_message_id_key;
ALTER TABLE observations DROP COLUMN IF EXISTS message_id;
