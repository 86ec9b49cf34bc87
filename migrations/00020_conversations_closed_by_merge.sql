-- +goose Up
-- Whether a merge closed the conversation. A customer has one open
-- conversation per channel and thread, which ingest appends to; a merge
-- that brought the merged customer's open conversation beside the
-- survivor's own closes the merged one's (mergeSQL), so that the
-- survivor's next message does not land in the other person's thread. A
-- split that gives such a conversation back to a side without an open
-- one there reopens it: undoing a wrong merge gives each person their
-- conversations back as they were. A conversation closed otherwise
-- (erasure moves others' messages into closed ones) stays closed.
--
-- A constant default rewrites nothing (PostgreSQL 11 and later): the
-- ALTER holds its lock for an instant, however large conversations is.
-- The previous release ignores the column, and its merges leave it false.
ALTER TABLE conversations ADD COLUMN closed_by_merge boolean NOT NULL DEFAULT false;

-- +goose Down
ALTER TABLE conversations DROP COLUMN closed_by_merge;
