-- +goose Up
-- Email identities stored before emails were brought to one Unicode form
-- (identity.Normalizer: fullwidth forms folded, NFC, the domain through
-- IDNA) are brought to it where SQL can: NFC (normalize(), PostgreSQL 13
-- and later) and the fullwidth letters and digits read as ASCII. A value
-- is rewritten only when no other email identity of its workspace holds
-- the result, and no other rewritten value gives the same one: two rows
-- that are one address are two customers already, which an operator
-- merges (mergeCustomers); the migration never merges nor fails on them.
-- The events of the identity's customer that carry the value, and their
-- drop records, are rewritten with it, so that a split still moves what
-- came through it (splitMoveSQL compares the stored forms).
--
-- Only non-ASCII values are read (octet_length <> char_length), a
-- workspace at a time through the identities' primary key, and only the
-- rows that change are written, the events through the index of their
-- customer: nothing is rewritten wholesale, no table lock is held beyond
-- the rows'. Not rewritten: values whose domain is stored in punycode
-- (xn--; IDNA has no SQL form), halfwidth katakana and hangul, rows that
-- collide (above), and the copies kept as history (the merge ledger, the
-- change feed, the audit log). See docs/identity.md#email-addresses.
-- +goose StatementBegin
DO $$
DECLARE
    w bigint;
BEGIN
    FOR w IN SELECT id FROM workspaces ORDER BY id LOOP
        -- identities and events are bound by row level security, the
        -- owner too (00006): the workspace is set as the service sets it.
        PERFORM set_config('c360.workspace_id', w::text, true);
        WITH canon AS (
            SELECT value AS old, customer_id,
                   normalize(translate(value, '０１２３４５６７８９ＡＢＣＤＥＦＧＨＩＪＫＬＭＮＯＰＱＲＳＴＵＶＷＸＹＺａｂｃｄｅｆｇｈｉｊｋｌｍｎｏｐｑｒｓｔｕｖｗｘｙｚ', '0123456789abcdefghijklmnopqrstuvwxyzabcdefghijklmnopqrstuvwxyz'), NFC) AS new
            FROM identities
            WHERE workspace_id = w AND type = 'email' AND octet_length(value) <> char_length(value)
        ), renamed AS (
            SELECT c.old, c.new, c.customer_id FROM canon c
            WHERE c.new <> c.old
              AND NOT EXISTS (SELECT 1 FROM identities o WHERE o.workspace_id = w AND o.type = 'email' AND o.value = c.new)
              AND NOT EXISTS (SELECT 1 FROM canon d WHERE d.new = c.new AND d.old <> c.old)
        ), ids AS (
            UPDATE identities i SET value = r.new FROM renamed r
            WHERE i.workspace_id = w AND i.type = 'email' AND i.value = r.old
            RETURNING r.old, r.new, r.customer_id
        )
        UPDATE events e SET
            identities = (
                SELECT jsonb_agg(coalesce(
                    (SELECT jsonb_set(x, '{value}', to_jsonb(m.new)) FROM ids m
                     WHERE x->>'type' = 'email' AND x->>'value' = m.old), x) ORDER BY n)
                FROM jsonb_array_elements(e.identities) WITH ORDINALITY AS t(x, n)),
            dropped = CASE WHEN jsonb_typeof(e.dropped) = 'array' AND jsonb_array_length(e.dropped) > 0 THEN (
                SELECT jsonb_agg(coalesce(
                    (SELECT 'email "' || m.new || '":' || substr(d, length('email "' || m.old || '":') + 1) FROM ids m
                     WHERE starts_with(d, 'email "' || m.old || '":')), d) ORDER BY n)
                FROM jsonb_array_elements_text(e.dropped) WITH ORDINALITY AS t(d, n))
                ELSE e.dropped END
        WHERE e.workspace_id = w AND e.customer_id IN (SELECT customer_id FROM ids)
          AND EXISTS (SELECT 1 FROM ids m
                      WHERE e.identities @> jsonb_build_array(jsonb_build_object('type', 'email', 'value', m.old)));
    END LOOP;
    PERFORM set_config('c360.workspace_id', '', true);
END
$$;
-- +goose StatementEnd

-- +goose Down
-- The forms the values had before are not kept: nothing to undo, and the
-- previous release reads the rewritten values as it reads any other.
SELECT 1;
