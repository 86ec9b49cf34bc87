-- +goose Up
-- pg_trgm powers customers(query:) fragment search over name, email and phone.
CREATE EXTENSION IF NOT EXISTS pg_trgm;

CREATE TABLE workspaces (
    id                           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    slug                         text NOT NULL UNIQUE CHECK (slug ~ '^[a-z0-9][a-z0-9-]{0,62}$'),
    name                         text NOT NULL DEFAULT '',
    -- Used to compute HMACs, so it cannot be hashed.
    webhook_secret               text NOT NULL,
    twilio_account_sid           text NOT NULL DEFAULT '',
    twilio_auth_token            text NOT NULL DEFAULT '',
    twilio_sms_from              text NOT NULL DEFAULT '',
    twilio_whatsapp_from         text NOT NULL DEFAULT '',
    twilio_messaging_service_sid text NOT NULL DEFAULT '',
    whatsapp_app_secret          text NOT NULL DEFAULT '',
    whatsapp_verify_token        text NOT NULL DEFAULT '',
    -- Identity resolution rules (limits, priority, blocked values); NULL means the defaults.
    identity_rules               jsonb,
    created_at                   timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE api_keys (
    workspace_id bigint NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    id           bigint GENERATED ALWAYS AS IDENTITY,
    -- The public part of the key, shown in listings and used to find the row.
    prefix       text NOT NULL UNIQUE,
    -- SHA-256 of the whole key; keys are 256-bit random, so a slow hash adds nothing.
    hash         bytea NOT NULL,
    role         text NOT NULL CHECK (role IN ('admin', 'agent', 'assistant', 'write')),
    scopes       text[] NOT NULL DEFAULT '{}',
    created_at   timestamptz NOT NULL DEFAULT now(),
    last_used_at timestamptz,
    revoked_at   timestamptz,
    PRIMARY KEY (workspace_id, id)
);

CREATE TABLE customers (
    workspace_id bigint NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    id           bigint GENERATED ALWAYS AS IDENTITY,
    traits       jsonb NOT NULL DEFAULT '{}',
    -- Per trait: {"source": ..., "at": ...}; recency decides trait merges.
    trait_meta   jsonb NOT NULL DEFAULT '{}',
    version      bigint NOT NULL DEFAULT 0,
    -- Set when this customer was merged away; lookups follow it to the survivor.
    merged_into  bigint,
    -- Lowercased name, emails and phones for fragment search (trigram index).
    search_text  text NOT NULL DEFAULT '',
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (workspace_id, id)
);
CREATE INDEX customers_search_idx ON customers USING gin (search_text gin_trgm_ops);
-- Keyset pagination of live customers, newest first.
CREATE INDEX customers_page_idx ON customers (workspace_id, created_at DESC, id DESC) WHERE merged_into IS NULL;

CREATE TABLE identities (
    workspace_id bigint NOT NULL,
    type         text NOT NULL CHECK (type ~ '^[a-z][a-z0-9_.:-]*$'),
    value        text NOT NULL,
    customer_id  bigint NOT NULL,
    source       text NOT NULL DEFAULT '',
    first_seen   timestamptz NOT NULL DEFAULT now(),
    last_seen    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (workspace_id, type, value),
    FOREIGN KEY (workspace_id, customer_id) REFERENCES customers (workspace_id, id)
);
CREATE INDEX identities_customer_idx ON identities (workspace_id, customer_id);

CREATE TABLE events (
    workspace_id bigint NOT NULL,
    id           bigint GENERATED ALWAYS AS IDENTITY,
    customer_id  bigint,
    type         text NOT NULL,
    name         text,
    properties   jsonb NOT NULL DEFAULT '{}',
    traits       jsonb,
    context      jsonb,
    identities   jsonb NOT NULL DEFAULT '[]',
    source       text NOT NULL,
    -- The source's own id (Segment messageId, Twilio MessageSid): exactly-once key.
    dedupe_key   text NOT NULL,
    occurred_at  timestamptz NOT NULL,
    received_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (workspace_id, id),
    UNIQUE (workspace_id, source, dedupe_key)
);
CREATE INDEX events_customer_idx ON events (workspace_id, customer_id, occurred_at DESC, id DESC);

CREATE TABLE conversations (
    workspace_id    bigint NOT NULL,
    id              bigint GENERATED ALWAYS AS IDENTITY,
    customer_id     bigint NOT NULL,
    channel         text NOT NULL CHECK (channel IN ('sms', 'whatsapp', 'chat')),
    status          text NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'closed')),
    -- For chat, the bot's session; empty for phone channels (one thread per channel).
    thread_key      text NOT NULL DEFAULT '',
    last_message_at timestamptz,
    last_inbound_at timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (workspace_id, id),
    FOREIGN KEY (workspace_id, customer_id) REFERENCES customers (workspace_id, id)
);
CREATE INDEX conversations_customer_idx ON conversations (workspace_id, customer_id, (coalesce(last_message_at, created_at)) DESC, id DESC);

CREATE TABLE messages (
    workspace_id    bigint NOT NULL,
    id              bigint GENERATED ALWAYS AS IDENTITY,
    conversation_id bigint NOT NULL,
    customer_id     bigint NOT NULL,
    event_id        bigint,
    channel         text NOT NULL,
    direction       text NOT NULL CHECK (direction IN ('inbound', 'outbound')),
    body            text,
    media_urls      text[] NOT NULL DEFAULT '{}',
    status          text NOT NULL,
    provider_id     text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (workspace_id, id),
    FOREIGN KEY (workspace_id, conversation_id) REFERENCES conversations (workspace_id, id)
);
CREATE INDEX messages_conversation_idx ON messages (workspace_id, conversation_id, created_at DESC, id DESC);
-- Status callbacks find the message by the provider's id.
CREATE UNIQUE INDEX messages_provider_idx ON messages (workspace_id, provider_id) WHERE provider_id IS NOT NULL;

CREATE TABLE consents (
    workspace_id bigint NOT NULL,
    customer_id  bigint NOT NULL,
    channel      text NOT NULL,
    status       text NOT NULL CHECK (status IN ('opted_in', 'opted_out')),
    source       text,
    updated_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (workspace_id, customer_id, channel),
    FOREIGN KEY (workspace_id, customer_id) REFERENCES customers (workspace_id, id)
);

-- The change feed: one row per committed change of a customer, versions consecutive.
CREATE TABLE customer_changes (
    workspace_id bigint NOT NULL,
    customer_id  bigint NOT NULL,
    version      bigint NOT NULL,
    kind         text NOT NULL,
    diff         jsonb NOT NULL DEFAULT '{}',
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (workspace_id, customer_id, version)
);

-- Every merge and split: who survived, who was merged, and why.
CREATE TABLE merges (
    workspace_id  bigint NOT NULL,
    id            bigint GENERATED ALWAYS AS IDENTITY,
    kind          text NOT NULL CHECK (kind IN ('merge', 'split')),
    survivor_id   bigint NOT NULL,
    merged_id     bigint NOT NULL,
    identity_type text,
    identity_value text,
    event_id      bigint,
    reason        text NOT NULL DEFAULT '',
    actor         text NOT NULL DEFAULT '',
    created_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (workspace_id, id)
);
CREATE INDEX merges_survivor_idx ON merges (workspace_id, survivor_id);
CREATE INDEX merges_merged_idx ON merges (workspace_id, merged_id);

-- +goose Down
DROP TABLE merges;
DROP TABLE customer_changes;
DROP TABLE consents;
DROP TABLE messages;
DROP TABLE conversations;
DROP TABLE events;
DROP TABLE identities;
DROP TABLE customers;
DROP TABLE api_keys;
DROP TABLE workspaces;
