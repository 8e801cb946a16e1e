-- API keys: only a hash of each secret is kept. Every creation and revocation is stamped with
-- the next `key_version` (a counter, like `event_seq`), so that a process that caches keys
-- learns of revocations made by any process on the database by asking what changed since the
-- version it saw last.
CREATE TABLE api_keys (
    id            TEXT    PRIMARY KEY,
    tenant        TEXT    NOT NULL,
    role          TEXT    NOT NULL CHECK (role IN ('read', 'write', 'admin')),
    name          TEXT    NOT NULL,
    kinds         TEXT,                             -- JSON array of kinds; NULL: every kind
    secret_hash   TEXT    NOT NULL UNIQUE,
    created_at    INTEGER NOT NULL,                 -- ms since the epoch
    expires_at    INTEGER,                          -- NULL: never
    revoked_at    INTEGER,                          -- NULL: live
    version       INTEGER NOT NULL                  -- of its creation, then of its revocation
);
CREATE INDEX api_keys_live ON api_keys (tenant, created_at) WHERE revoked_at IS NULL;
CREATE INDEX api_keys_version ON api_keys (version);
INSERT INTO counters (name, value) VALUES ('key_version', 0);
