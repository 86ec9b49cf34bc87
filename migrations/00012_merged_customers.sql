-- +goose NO TRANSACTION
-- +goose Up
-- A merge repoints the customers merged into the one it merges away
-- ("merged_into = $3"), so that one hop always reaches the survivor.
-- Without an index on merged_into that read every customer of the
-- workspace: 6 ms of a merge's 17 to 20 at 20k customers, and a table's
-- worth at a million. The index is partial: it holds merged customers
-- only, so only merges write it, never ingest's inserts and updates of
-- live customers. It is built CONCURRENTLY, as 00010's and 00011's are, so
-- writes go on meanwhile; the first statement drops what a run cut short
-- may have left.
DROP INDEX CONCURRENTLY IF EXISTS customers_merged_into_idx;
CREATE INDEX CONCURRENTLY customers_merged_into_idx ON customers (workspace_id, merged_into) WHERE merged_into IS NOT NULL;

-- +goose Down
DROP INDEX CONCURRENTLY IF EXISTS customers_merged_into_idx;
