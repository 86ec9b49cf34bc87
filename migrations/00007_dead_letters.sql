-- +goose Up
-- Events that failed inside ingest for a reason of their own (a value
-- PostgreSQL refuses, a broken constraint, a bug), kept so that nothing a
-- provider was told is handled is lost: admins list them and replay them
-- once the cause is fixed (docs/operations.md). One row per event, found
-- again by the event's own exactly-once key when it fails again.
CREATE TABLE dead_letters (
    workspace_id      bigint NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    id                bigint GENERATED ALWAYS AS IDENTITY,
    source            text NOT NULL,
    dedupe_key        text NOT NULL,
    event_type        text NOT NULL,
    -- The canonical event as ingest received it. jsonb cannot hold a NUL
    -- character (a common poison), so NULs are shown here as U+FFFD and the
    -- exact JSON is kept in event_raw; NULL when the two are the same.
    event             jsonb NOT NULL,
    event_raw         bytea,
    -- The last failure, database detail included (admins only).
    error             text NOT NULL,
    attempts          integer NOT NULL DEFAULT 1 CHECK (attempts > 0),
    first_failed_at   timestamptz NOT NULL DEFAULT now(),
    last_failed_at    timestamptz NOT NULL DEFAULT now(),
    -- Set when a replay stored the event; a new failure clears it.
    replayed_at       timestamptz,
    replayed_event_id bigint,
    PRIMARY KEY (workspace_id, id),
    UNIQUE (workspace_id, source, dedupe_key)
);
-- deadLetters pages newest first; pending: only those not replayed.
CREATE INDEX dead_letters_page_idx ON dead_letters (workspace_id, first_failed_at DESC, id DESC);
CREATE INDEX dead_letters_pending_idx ON dead_letters (workspace_id, first_failed_at DESC, id DESC) WHERE replayed_at IS NULL;

-- Tenant isolation as for every tenant table (00006).
GRANT SELECT, INSERT, UPDATE, DELETE ON dead_letters TO c360_app;
GRANT USAGE, SELECT ON SEQUENCE dead_letters_id_seq TO c360_app;
ALTER TABLE dead_letters ENABLE ROW LEVEL SECURITY;
ALTER TABLE dead_letters FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant ON dead_letters USING (workspace_id = c360_workspace()) WITH CHECK (workspace_id = c360_workspace());

-- +goose Down
DROP TABLE dead_letters;
