-- +goose Up
-- Fragment search (customers(query:)) by the trigram index.
--
-- Under row-level security PostgreSQL evaluates a condition on a row
-- before the policy has passed it only when the condition is leakproof.
-- LIKE is not, so the app role's search could never use the trigram index
-- customers_search_idx: it read every live customer of the workspace and
-- matched each (8 ms at 20k customers, seconds at a million).
--
-- c360_search_customers runs as this function's owner, the migrating role,
-- and returns the ids of one page of the workspace's live customers whose
-- search text is LIKE the pattern, newest first, after the keyset cursor
-- (after_at, after_id) when one is given. It reads only the workspace of
-- the transaction's own setting (c360_workspace()), as the policy does: a
-- caller cannot name another workspace. The page read joins its ids to
-- customers as the app role, under the policy again.
--
-- Where the owner bypasses row-level security (a superuser, or a role
-- with BYPASSRLS), the pattern is matched by the index. Where it does not
-- (the tables force their policies on the owner), the policy binds the
-- function too, and the search reads the workspace as before: as correct,
-- no faster (docs/operations.md).
--
-- Each call plans its query for its pattern (EXECUTE): a rare fragment is
-- found by the trigram index, a common one by walking the page index
-- until the page is full.
-- +goose StatementBegin
CREATE FUNCTION c360_search_customers(pattern text, n integer, after_at timestamptz, after_id bigint)
    RETURNS SETOF bigint
    LANGUAGE plpgsql STABLE SECURITY DEFINER ROWS 100
    SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    IF after_at IS NULL THEN
        RETURN QUERY EXECUTE
            'SELECT c.id FROM public.customers c
             WHERE c.workspace_id = public.c360_workspace() AND c.merged_into IS NULL AND c.search_text LIKE $1
             ORDER BY c.created_at DESC, c.id DESC LIMIT $2'
            USING pattern, n;
    ELSE
        RETURN QUERY EXECUTE
            'SELECT c.id FROM public.customers c
             WHERE c.workspace_id = public.c360_workspace() AND c.merged_into IS NULL AND c.search_text LIKE $1
               AND (c.created_at, c.id) < ($3, $4)
             ORDER BY c.created_at DESC, c.id DESC LIMIT $2'
            USING pattern, n, after_at, after_id;
    END IF;
END
$fn$;
-- +goose StatementEnd
REVOKE ALL ON FUNCTION c360_search_customers(text, integer, timestamptz, bigint) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION c360_search_customers(text, integer, timestamptz, bigint) TO c360_app;

-- +goose Down
DROP FUNCTION c360_search_customers(text, integer, timestamptz, bigint);
