-- +goose Up
-- Tenant isolation in depth. The service reads and writes tenant tables as
-- the non-owner role c360_app, and every transaction sets the workspace it
-- acts for with set_config('c360.workspace_id', ..., true): a setting that
-- ends with the transaction, so a pooled connection never carries it over.
-- With FORCE, the policies bind the table owner too; only superusers and
-- BYPASSRLS roles (operators, backups) see across workspaces. A statement
-- without the setting sees no rows.

-- +goose StatementBegin
-- Roles are cluster-wide: another database of this cluster, or an
-- administrator, may have made it. Only a role that does not exist is
-- created, since PostgreSQL checks CREATEROLE before it checks whether the
-- role exists: an owner without CREATEROLE, to whom an administrator
-- granted c360_app, would fail with 42501 (docs/operations.md). Editing
-- this applied migration changes nothing for a database past it: goose
-- records versions, not the text it ran.
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'c360_app') THEN
        CREATE ROLE c360_app NOLOGIN;
    END IF;
EXCEPTION WHEN duplicate_object OR unique_violation THEN
    NULL; -- another database's migration made it meanwhile
END
$$;
-- +goose StatementEnd

-- The migrating role may become c360_app (SET ROLE) when it serves.
-- +goose StatementBegin
DO $$
BEGIN
    EXECUTE format('GRANT c360_app TO %I', current_user);
EXCEPTION WHEN OTHERS THEN
    RAISE NOTICE 'could not grant c360_app to %: %', current_user, SQLERRM;
END
$$;
-- +goose StatementEnd

GRANT USAGE ON SCHEMA public TO c360_app;
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO c360_app;
GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO c360_app;
ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO c360_app;
ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT USAGE, SELECT ON SEQUENCES TO c360_app;

-- The workspace of the current transaction; NULL when none is set (then no
-- tenant row matches).
CREATE FUNCTION c360_workspace() RETURNS bigint
    LANGUAGE sql STABLE PARALLEL SAFE
    AS $$ SELECT nullif(current_setting('c360.workspace_id', true), '')::bigint $$;

-- +goose StatementBegin
DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['customers', 'identities', 'events', 'conversations', 'messages', 'consents',
                             'customer_changes', 'merges', 'customer_separations', 'audit_log', 'observations']
    LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('ALTER TABLE %I FORCE ROW LEVEL SECURITY', t);
        EXECUTE format('CREATE POLICY tenant ON %I USING (workspace_id = c360_workspace()) WITH CHECK (workspace_id = c360_workspace())', t);
    END LOOP;
END
$$;
-- +goose StatementEnd

-- API keys are found by their public prefix before the workspace is known:
-- a transaction that names one prefix (c360.key_prefix) may read that key.
ALTER TABLE api_keys ENABLE ROW LEVEL SECURITY;
ALTER TABLE api_keys FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant ON api_keys USING (workspace_id = c360_workspace()) WITH CHECK (workspace_id = c360_workspace());
CREATE POLICY by_prefix ON api_keys FOR SELECT
    USING (prefix = nullif(current_setting('c360.key_prefix', true), ''));

-- workspaces is the tenant registry, not tenant data: webhooks find their
-- workspace by slug before anything else is known. It has no policy.

-- +goose Down
DROP POLICY by_prefix ON api_keys;
-- +goose StatementBegin
DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['customers', 'identities', 'events', 'conversations', 'messages', 'consents',
                             'customer_changes', 'merges', 'customer_separations', 'audit_log', 'observations', 'api_keys']
    LOOP
        EXECUTE format('DROP POLICY tenant ON %I', t);
        EXECUTE format('ALTER TABLE %I NO FORCE ROW LEVEL SECURITY', t);
        EXECUTE format('ALTER TABLE %I DISABLE ROW LEVEL SECURITY', t);
    END LOOP;
END
$$;
-- +goose StatementEnd
DROP FUNCTION c360_workspace();
