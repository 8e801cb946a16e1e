-- Secrets that every process on the database must share (the key that signs session cookies):
-- the first process to start stores its candidate, and every process uses the stored one.
CREATE TABLE shared_secrets (
    name          TEXT    PRIMARY KEY,
    value         TEXT    NOT NULL,
    created_at    INTEGER NOT NULL
) WITHOUT ROWID;
