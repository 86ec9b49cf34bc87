-- +goose Up
-- 00011's BRIN index on customer_changes.created_at reads only the
-- table's newest block ranges once they are summarized; a range that
-- filled after the index was built stayed unsummarized until a VACUUM of
-- the table, and a scan reads every unsummarized range whole. The table
-- is appended to, and autovacuum vacuums it for its inserts only after
-- 20% of its rows (PostgreSQL's default), so each hub sweep
-- (CustomersChangedSince) re-read the whole tail written since the last
-- VACUUM: up to 2 million rows at 10 million changes.
--
-- autosummarize asks autovacuum to summarize each range as soon as the
-- next one is written to. A range whose request autovacuum's work-item
-- queue could not take is summarized at the next VACUUM, which inserts
-- now bring after 2% of the table's rows (plus PostgreSQL's 1,000)
-- instead of the default 20%. brin_summarize_new_values summarizes the
-- ranges already unsummarized. Each takes only locks that let reads and
-- writes go on.
ALTER INDEX customer_changes_created_brin SET (autosummarize = on);
ALTER TABLE customer_changes SET (autovacuum_vacuum_insert_scale_factor = 0.02);
SELECT brin_summarize_new_values('customer_changes_created_brin');

-- +goose Down
ALTER INDEX customer_changes_created_brin RESET (autosummarize);
ALTER TABLE customer_changes RESET (autovacuum_vacuum_insert_scale_factor);
