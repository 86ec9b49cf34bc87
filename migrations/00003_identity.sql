-- +goose Up
-- Customers split apart by an operator. Ingest never merges such a pair
-- again automatically; each side is matched through its survivor.
CREATE TABLE customer_separations (
    workspace_id bigint NOT NULL,
    customer_a   bigint NOT NULL,
    customer_b   bigint NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (workspace_id, customer_a, customer_b),
    CHECK (customer_a < customer_b)
);
CREATE INDEX customer_separations_b_idx ON customer_separations (workspace_id, customer_b);

-- Identifiers an event carried but resolution left out, with the reason
-- (limits, block lists, separations): the "why" behind a non-merge.
ALTER TABLE events ADD COLUMN dropped jsonb;

-- +goose Down
ALTER TABLE events DROP COLUMN dropped;
DROP TABLE customer_separations;
