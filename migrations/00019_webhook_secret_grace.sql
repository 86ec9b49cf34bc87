-- +goose Up
-- A grace period for the chatbot webhook secret: `c360 workspace update
-- --rotate-webhook-secret --grace D` keeps the secret it replaces valid
-- until now() + D, so what the bot signs before it is given the new one is
-- still accepted (docs/security.md). One previous secret is kept: rotating
-- again during a grace replaces it with the then-current secret. Both NULL
-- when there is none (--grace 0, and every workspace before this release).
--
-- Adding nullable columns without a default rewrites nothing, and the
-- check reads the workspaces, a registry of a few rows: the ALTER holds
-- its lock for an instant. The previous release ignores the columns, so
-- it accepts the current secret alone, as it did.
ALTER TABLE workspaces
    ADD COLUMN previous_webhook_secret text,
    ADD COLUMN previous_webhook_secret_expires_at timestamptz,
    ADD CONSTRAINT workspaces_previous_webhook_secret_check
        CHECK ((previous_webhook_secret IS NULL) = (previous_webhook_secret_expires_at IS NULL));

-- +goose Down
-- Going down ends every grace at once: only the current secret is accepted.
ALTER TABLE workspaces
    DROP COLUMN previous_webhook_secret_expires_at,
    DROP COLUMN previous_webhook_secret;
