-- +goose Up
-- The service's role, c360_app, keeps only what it uses. 00006 granted it
-- SELECT, INSERT, UPDATE and DELETE on every table, and by default on
-- every table the migrating role creates after it, so it could also
-- insert and delete workspaces, write goose's version table, and would
-- have had full DML on any later table, tenant data or not.
--
-- workspaces: the app reads them (by slug, by id, their identity rules)
-- and updates them (provider settings, webhook secret rotation, identity
-- rules); a workspace is created in the owner's transaction
-- (CreateWorkspace) and never deleted by the service. goose_db_version:
-- the readiness check reads it as c360_app; only migrations, as the
-- owner, write it. Neither needs its id sequence.
REVOKE INSERT, DELETE, TRUNCATE, REFERENCES, TRIGGER ON workspaces FROM c360_app;
REVOKE INSERT, UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER ON goose_db_version FROM c360_app;
-- +goose StatementBegin
DO $$
BEGIN
    EXECUTE format('REVOKE ALL ON SEQUENCE %s FROM c360_app', pg_get_serial_sequence('workspaces', 'id'));
    EXECUTE format('REVOKE ALL ON SEQUENCE %s FROM c360_app', pg_get_serial_sequence('goose_db_version', 'id'));
END
$$;
-- +goose StatementEnd

-- A table a later migration creates grants c360_app what it needs itself,
-- as 00007 does for dead_letters: none is granted by default.
ALTER DEFAULT PRIVILEGES IN SCHEMA public REVOKE SELECT, INSERT, UPDATE, DELETE ON TABLES FROM c360_app;
ALTER DEFAULT PRIVILEGES IN SCHEMA public REVOKE USAGE, SELECT ON SEQUENCES FROM c360_app;

-- +goose Down
ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO c360_app;
ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT USAGE, SELECT ON SEQUENCES TO c360_app;
-- +goose StatementBegin
DO $$
BEGIN
    EXECUTE format('GRANT USAGE, SELECT ON SEQUENCE %s TO c360_app', pg_get_serial_sequence('workspaces', 'id'));
    EXECUTE format('GRANT USAGE, SELECT ON SEQUENCE %s TO c360_app', pg_get_serial_sequence('goose_db_version', 'id'));
END
$$;
-- +goose StatementEnd
GRANT SELECT, INSERT, UPDATE, DELETE ON goose_db_version TO c360_app;
GRANT INSERT, DELETE ON workspaces TO c360_app;
