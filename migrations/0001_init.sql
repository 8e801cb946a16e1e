-- Operations, their durable event log and idempotency keys.
CREATE TABLE operations (
    id            TEXT    NOT NULL UNIQUE,          -- ULID
    kind          TEXT    NOT NULL,
    status        TEXT    NOT NULL,
    input         TEXT    NOT NULL,                 -- JSON
    priority      INTEGER NOT NULL,
    max_attempts  INTEGER NOT NULL,
    timeout_s     REAL    NOT NULL,
    attempt       INTEGER NOT NULL DEFAULT 0,
    created_at    INTEGER NOT NULL,                 -- ms since the epoch
    started_at    INTEGER,
    finished_at   INTEGER,
    run_after     INTEGER NOT NULL DEFAULT 0,
    progress      TEXT,
    error         TEXT,
    result        BLOB,
    result_type   TEXT
);
CREATE INDEX operations_pending ON operations (status, priority DESC)
    WHERE status IN ('pending', 'running');
CREATE INDEX operations_finished ON operations (finished_at) WHERE finished_at IS NOT NULL;
CREATE INDEX operations_kind ON operations (kind, id);
CREATE INDEX operations_status ON operations (status, id);

CREATE TABLE events (
    seq           INTEGER PRIMARY KEY AUTOINCREMENT, -- global, never reused
    operation_id  TEXT    NOT NULL,
    type          TEXT    NOT NULL,
    data          TEXT    NOT NULL
);
CREATE INDEX events_operation ON events (operation_id, seq);

CREATE TABLE idempotency_keys (
    key           TEXT    PRIMARY KEY,
    request       TEXT    NOT NULL,                 -- canonical JSON of the request body
    operation_id  TEXT    NOT NULL,
    created_at    INTEGER NOT NULL
);
CREATE INDEX idempotency_created ON idempotency_keys (created_at);
CREATE INDEX idempotency_operation ON idempotency_keys (operation_id);
