-- The schema of the PostgreSQL backend: operations with their results, the global event log,
-- idempotency keys, API keys and shared secrets (as in the SQLite schema), and the nodes that
-- share the database with the leases they hold.

-- Counters: `event_seq` hands out event ids, `key_version` stamps API key changes. A
-- transaction that writes events takes their ids from `event_seq` as its last statement
-- before COMMIT, and holds the row's lock until the commit is visible: ids are taken in commit
-- order, so that a reader that sees an event sees every event with a smaller id.
CREATE TABLE counters (
    name   text   PRIMARY KEY,
    value  bigint NOT NULL
);
INSERT INTO counters (name, value) VALUES ('event_seq', 0), ('key_version', 0);

CREATE TABLE operations (
    row_id            bigint  GENERATED ALWAYS AS IDENTITY PRIMARY KEY,  -- insertion order
    id                text    NOT NULL UNIQUE,                           -- ULID
    tenant            text    NOT NULL,
    kind              text    NOT NULL,
    status            text    NOT NULL
        CHECK (status IN ('pending', 'running', 'succeeded', 'failed', 'canceled')),
    input             text    NOT NULL,                                  -- JSON
    priority          integer NOT NULL,
    max_attempts      integer NOT NULL,
    timeout_s         double precision NOT NULL,
    attempt           integer NOT NULL DEFAULT 0,
    created_at        bigint  NOT NULL,                                  -- ms since the epoch
    started_at        bigint,
    finished_at       bigint,
    run_after         bigint  NOT NULL DEFAULT 0,
    progress          text,
    error             text,
    result            bytea,
    result_type       text,
    cancel_requested  boolean NOT NULL DEFAULT false,
    -- The node that runs the current attempt: with `attempt`, the attempt's fencing token.
    node              text
);
-- Claims walk pending operations by priority, then age.
CREATE INDEX operations_claim ON operations (priority DESC, row_id) WHERE status = 'pending';
-- The next delayed retry to wake up for.
CREATE INDEX operations_due ON operations (run_after) WHERE status = 'pending';
-- Per-kind concurrency counts the running ones of a kind; the rescue finds a node's.
CREATE INDEX operations_running ON operations (kind, node) WHERE status = 'running';
CREATE INDEX operations_tenant ON operations (tenant, id);
CREATE INDEX operations_kind ON operations (tenant, kind, id);
CREATE INDEX operations_status ON operations (status, tenant, id) WHERE status <> 'succeeded';

CREATE TABLE events (
    seq           bigint PRIMARY KEY,                -- global, increasing in commit order
    operation_id  text   NOT NULL,
    type          text   NOT NULL,
    data          text   NOT NULL
);
CREATE INDEX events_operation ON events (operation_id, seq);

CREATE TABLE idempotency_keys (
    tenant        text   NOT NULL,
    key           text   NOT NULL,
    request       text   NOT NULL,                   -- canonical JSON of the request body
    operation_id  text   NOT NULL,
    created_at    bigint NOT NULL,
    PRIMARY KEY (tenant, key)
);
CREATE INDEX idempotency_created ON idempotency_keys (created_at);
CREATE INDEX idempotency_operation ON idempotency_keys (operation_id);

CREATE TABLE api_keys (
    id            text    PRIMARY KEY,
    tenant        text    NOT NULL,
    role          text    NOT NULL CHECK (role IN ('read', 'write', 'admin')),
    name          text    NOT NULL,
    kinds         text,                              -- JSON array of kinds; NULL: every kind
    secret_hash   text    NOT NULL UNIQUE,
    created_at    bigint  NOT NULL,
    expires_at    bigint,
    revoked_at    bigint,
    version       bigint  NOT NULL                   -- of its creation, then of its revocation
);
CREATE INDEX api_keys_live ON api_keys (tenant, created_at) WHERE revoked_at IS NULL;
CREATE INDEX api_keys_version ON api_keys (version);

CREATE TABLE shared_secrets (
    name          text   PRIMARY KEY,
    value         bytea  NOT NULL,                   -- any bytes
    created_at    bigint NOT NULL
);

-- The nodes on the database: each heart-beats; one whose heart-beat is older than the node
-- timeout is taken for dead, and its running operations are taken over. Times are the
-- database's clock, the same for every node.
CREATE TABLE nodes (
    id            text        PRIMARY KEY,
    host          text        NOT NULL,
    pid           integer     NOT NULL,
    started_at    timestamptz NOT NULL DEFAULT now(),
    heartbeat_at  timestamptz NOT NULL DEFAULT now()
);

-- Submissions each node admitted per tenant under a submit_rate quota, counted from the node's
-- start: every node adds its own and debits its local token bucket with what the others added.
CREATE TABLE submission_counts (
    node          text        NOT NULL,
    tenant        text        NOT NULL,
    admitted      bigint      NOT NULL,
    PRIMARY KEY (node, tenant)
);

-- Leases: what one node at a time does (the purge, the rescue of dead nodes' operations).
CREATE TABLE leases (
    name          text        PRIMARY KEY,
    node          text        NOT NULL,
    expires_at    timestamptz NOT NULL
);
