-- +goose Up
-- The planner's statistics on workspace_id keep one most common value
-- instead of up to a hundred.
--
-- With a hundred, every workspace of a deployment with fewer than a hundred
-- is listed with its share of the rows, and a workspace created after the
-- last ANALYZE is taken to hold none: 1 row. The planner then reads, for
-- "workspace_id = $1 AND id = ANY($2)" or "(workspace_id, type, value) =",
-- every row of the workspace and filters them, since it expects one. A new
-- tenant's ingest, or an import into it, then scans its whole workspace in
-- every statement until the next ANALYZE (00008 brings that sooner, but a
-- busy table takes 2% of its rows to get there).
--
-- With one, only the largest workspace is listed, and any other, new ones
-- included, is estimated at the rest of the rows shared among the other
-- workspaces: never 1 row while others hold many, so lookups stay bounded
-- by their key (TestUnknownWorkspacePlansStayKeyLookups). The largest
-- workspace keeps its exact share, which whole-workspace reads (search,
-- pages) plan by. A deployment of a single workspace still expects nothing
-- of its second until ANALYZE.
ALTER TABLE customers            ALTER COLUMN workspace_id SET STATISTICS 1;
ALTER TABLE identities           ALTER COLUMN workspace_id SET STATISTICS 1;
ALTER TABLE events               ALTER COLUMN workspace_id SET STATISTICS 1;
ALTER TABLE customer_changes     ALTER COLUMN workspace_id SET STATISTICS 1;
ALTER TABLE conversations        ALTER COLUMN workspace_id SET STATISTICS 1;
ALTER TABLE messages             ALTER COLUMN workspace_id SET STATISTICS 1;
ALTER TABLE consents             ALTER COLUMN workspace_id SET STATISTICS 1;
ALTER TABLE observations         ALTER COLUMN workspace_id SET STATISTICS 1;
ALTER TABLE merges               ALTER COLUMN workspace_id SET STATISTICS 1;
ALTER TABLE customer_separations ALTER COLUMN workspace_id SET STATISTICS 1;
ALTER TABLE audit_log            ALTER COLUMN workspace_id SET STATISTICS 1;
ALTER TABLE dead_letters         ALTER COLUMN workspace_id SET STATISTICS 1;
-- ANALYZE reads a sample (30,000 rows a table), not the tables.
ANALYZE customers, identities, events, customer_changes, conversations, messages, consents,
        observations, merges, customer_separations, audit_log, dead_letters;

-- +goose Down
ALTER TABLE customers            ALTER COLUMN workspace_id SET STATISTICS -1;
ALTER TABLE identities           ALTER COLUMN workspace_id SET STATISTICS -1;
ALTER TABLE events               ALTER COLUMN workspace_id SET STATISTICS -1;
ALTER TABLE customer_changes     ALTER COLUMN workspace_id SET STATISTICS -1;
ALTER TABLE conversations        ALTER COLUMN workspace_id SET STATISTICS -1;
ALTER TABLE messages             ALTER COLUMN workspace_id SET STATISTICS -1;
ALTER TABLE consents             ALTER COLUMN workspace_id SET STATISTICS -1;
ALTER TABLE observations         ALTER COLUMN workspace_id SET STATISTICS -1;
ALTER TABLE merges               ALTER COLUMN workspace_id SET STATISTICS -1;
ALTER TABLE customer_separations ALTER COLUMN workspace_id SET STATISTICS -1;
ALTER TABLE audit_log            ALTER COLUMN workspace_id SET STATISTICS -1;
ALTER TABLE dead_letters         ALTER COLUMN workspace_id SET STATISTICS -1;
ANALYZE customers, identities, events, customer_changes, conversations, messages, consents,
        observations, merges, customer_separations, audit_log, dead_letters;
