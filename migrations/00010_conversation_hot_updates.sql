-- +goose NO TRANSACTION
-- +goose Up
-- Every inbound or outbound message moves its conversation's
-- last_message_at. With that column in conversations_customer_idx, each
-- of those updates wrote a new entry into both of the table's indexes (an
-- update is HOT, heap-only, only when no indexed column changes): the
-- costliest statement of a webhook (BENCHMARKS.md). The index now keys a
-- customer's conversations by id alone; reads that list them by last
-- activity sort that customer's conversations, which are few, instead of
-- reading them in index order. The free space left on each page lets the
-- updated row stay on its page, which HOT also needs (for pages written
-- from now on).
--
-- The indexes are built and dropped CONCURRENTLY, outside a transaction, so
-- ingest keeps writing conversations meanwhile (docs/operations.md). Each
-- statement may be run again: a run cut short leaves at worst an index of
-- the new name, possibly invalid, which the first statement drops.
DROP INDEX CONCURRENTLY IF EXISTS conversations_customer_id_idx;
CREATE INDEX CONCURRENTLY conversations_customer_id_idx ON conversations (workspace_id, customer_id, id DESC);
DROP INDEX CONCURRENTLY IF EXISTS conversations_customer_idx;
ALTER TABLE conversations SET (fillfactor = 80);

-- +goose Down
ALTER TABLE conversations RESET (fillfactor);
DROP INDEX CONCURRENTLY IF EXISTS conversations_customer_idx;
CREATE INDEX CONCURRENTLY conversations_customer_idx ON conversations (workspace_id, customer_id, (coalesce(last_message_at, created_at)) DESC, id DESC);
DROP INDEX CONCURRENTLY IF EXISTS conversations_customer_id_idx;
