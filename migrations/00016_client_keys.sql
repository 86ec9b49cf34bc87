-- +goose Up
-- The client role: a Segment write key meant for a browser or a mobile
-- app, where anyone can read it. Its calls link profiles only by the ids
-- they name (userId, anonymousId), never by the email or phone of their
-- traits (docs/security.md). Existing keys keep their roles: a write key
-- stays the secret, server-side key it was issued as.
--
-- api_keys holds one row per key, so checking the new constraint costs
-- nothing worth a NOT VALID step. The previous release, which does not
-- know the role, refuses a client key everywhere (its @hasRole lists and
-- its tracking API name no such role), so it can run meanwhile.
ALTER TABLE api_keys DROP CONSTRAINT api_keys_role_check,
    ADD CONSTRAINT api_keys_role_check CHECK (role IN ('admin', 'agent', 'assistant', 'write', 'client'));

-- +goose Down
-- A client key cannot become another role: a write key would trust what
-- anyone sends with it. Going down removes client keys.
DELETE FROM api_keys WHERE role = 'client';
ALTER TABLE api_keys DROP CONSTRAINT api_keys_role_check,
    ADD CONSTRAINT api_keys_role_check CHECK (role IN ('admin', 'agent', 'assistant', 'write'));
