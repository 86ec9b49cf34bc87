-- +goose Up
-- Traits an event fills only where the customer has none (a provider's
-- profile name, say) are kept on the event too, so that a split, which
-- rebuilds each side's traits by replaying its events, fills them again.
ALTER TABLE events ADD COLUMN traits_if_absent jsonb;

-- +goose Down
ALTER TABLE events DROP COLUMN traits_if_absent;
