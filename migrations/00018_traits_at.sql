-- +goose Up
-- The time an event's traits were dated at, when it is not the time the
-- event occurred: an event sent with a client key has its traits dated at
-- receipt (docs/security.md), so that a timestamp made up to 24 hours
-- ahead cannot outlast true updates. A split rebuilds each side's traits
-- by replaying its events, and must date them as ingest did. NULL (every
-- other event, and those stored before) means occurred_at.
--
-- Adding a nullable column without a default rewrites nothing: the
-- ALTER holds its lock for an instant, however large events is. The
-- previous release ignores the column.
ALTER TABLE events ADD COLUMN traits_at timestamptz;

-- +goose Down
ALTER TABLE events DROP COLUMN traits_at;
