-- +goose Up
-- The audit log: reads of customer data by assistant keys, reads of unmasked
-- personal data by any key, and every merge, split, send and key change,
-- with the key that acted. Like every tenant table it leads its keys with
-- workspace_id (row-level security policies and Citus distribution hang on it).
-- No foreign key to api_keys: an entry outlives the key it names.
CREATE TABLE audit_log (
    workspace_id bigint NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    id           bigint GENERATED ALWAYS AS IDENTITY,
    at           timestamptz NOT NULL DEFAULT now(),
    -- NULL for the command line.
    key_id       bigint,
    -- "key <prefix>" or "cli": readable after the key is gone.
    actor        text NOT NULL,
    role         text,
    action       text NOT NULL,
    customer_id  bigint,
    fields       text[] NOT NULL DEFAULT '{}',
    detail       jsonb NOT NULL DEFAULT '{}',
    PRIMARY KEY (workspace_id, id)
);
-- auditLog pages newest first, for the workspace, one customer, or one action.
CREATE INDEX audit_log_at_idx ON audit_log (workspace_id, at DESC, id DESC);
CREATE INDEX audit_log_customer_idx ON audit_log (workspace_id, customer_id, at DESC, id DESC) WHERE customer_id IS NOT NULL;
CREATE INDEX audit_log_action_idx ON audit_log (workspace_id, action, at DESC, id DESC);

-- Listing a workspace's keys, newest first.
CREATE INDEX api_keys_workspace_idx ON api_keys (workspace_id, created_at DESC, id DESC);

-- +goose Down
DROP INDEX api_keys_workspace_idx;
DROP TABLE audit_log;
