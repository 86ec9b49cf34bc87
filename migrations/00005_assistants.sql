-- +goose Up
-- Facts assistants and agents learned about a customer ("prefers WhatsApp
-- after 6pm"), with provenance. They move with the customer on a merge.
CREATE TABLE observations (
    workspace_id     bigint NOT NULL,
    id               bigint GENERATED ALWAYS AS IDENTITY,
    customer_id      bigint NOT NULL,
    text             text NOT NULL CHECK (octet_length(text) BETWEEN 1 AND 4096),
    source           text NOT NULL DEFAULT '',
    confidence       double precision CHECK (confidence BETWEEN 0 AND 1),
    -- The API key that recorded it ("key <prefix>") and its role.
    recorded_by      text NOT NULL,
    recorded_by_role text NOT NULL,
    verified         boolean NOT NULL DEFAULT false,
    verified_by      text,
    verified_at      timestamptz,
    created_at       timestamptz NOT NULL DEFAULT now(),
    -- Past it the observation is hidden from lists and context, but kept.
    expires_at       timestamptz,
    PRIMARY KEY (workspace_id, id),
    FOREIGN KEY (workspace_id, customer_id) REFERENCES customers (workspace_id, id)
);
-- Context and Customer.observations read a customer's observations verified
-- first, newest first.
CREATE INDEX observations_customer_idx ON observations (workspace_id, customer_id, verified DESC, created_at DESC, id DESC);

-- +goose Down
DROP TABLE observations;
