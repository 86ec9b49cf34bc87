-- +goose Up
-- Tenant tables are analyzed after 2% of their rows change (plus 1,000),
-- not PostgreSQL's default 10% (plus 50). Statistics taken before a
-- workspace existed make the planner expect one row for it, and lookups by
-- workspace_id and key then filter every row of the workspace until the
-- next ANALYZE (docs/operations.md). A new workspace that grows quickly on
-- a large cluster stays under 10% of a table for a long time; at 2% it is
-- seen within a minute or so of autovacuum's nap.
ALTER TABLE customers        SET (autovacuum_analyze_scale_factor = 0.02, autovacuum_analyze_threshold = 1000);
ALTER TABLE identities       SET (autovacuum_analyze_scale_factor = 0.02, autovacuum_analyze_threshold = 1000);
ALTER TABLE events           SET (autovacuum_analyze_scale_factor = 0.02, autovacuum_analyze_threshold = 1000);
ALTER TABLE customer_changes SET (autovacuum_analyze_scale_factor = 0.02, autovacuum_analyze_threshold = 1000);
ALTER TABLE conversations    SET (autovacuum_analyze_scale_factor = 0.02, autovacuum_analyze_threshold = 1000);
ALTER TABLE messages         SET (autovacuum_analyze_scale_factor = 0.02, autovacuum_analyze_threshold = 1000);

-- +goose Down
ALTER TABLE customers        RESET (autovacuum_analyze_scale_factor, autovacuum_analyze_threshold);
ALTER TABLE identities       RESET (autovacuum_analyze_scale_factor, autovacuum_analyze_threshold);
ALTER TABLE events           RESET (autovacuum_analyze_scale_factor, autovacuum_analyze_threshold);
ALTER TABLE customer_changes RESET (autovacuum_analyze_scale_factor, autovacuum_analyze_threshold);
ALTER TABLE conversations    RESET (autovacuum_analyze_scale_factor, autovacuum_analyze_threshold);
ALTER TABLE messages         RESET (autovacuum_analyze_scale_factor, autovacuum_analyze_threshold);
