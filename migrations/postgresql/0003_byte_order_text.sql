-- Identifiers, names and states compare byte by byte (as in SQLite): their indexes then need no
-- locale's collation, which costs a string copy and a strcoll per comparison, and orders ids
-- the same on every database whatever its locale.
ALTER TABLE operations
    ALTER COLUMN id TYPE text COLLATE "C",
    ALTER COLUMN tenant TYPE text COLLATE "C",
    ALTER COLUMN kind TYPE text COLLATE "C",
    ALTER COLUMN status TYPE text COLLATE "C",
    ALTER COLUMN node TYPE text COLLATE "C";
ALTER TABLE events ALTER COLUMN operation_id TYPE text COLLATE "C";
ALTER TABLE idempotency_keys
    ALTER COLUMN tenant TYPE text COLLATE "C",
    ALTER COLUMN key TYPE text COLLATE "C",
    ALTER COLUMN operation_id TYPE text COLLATE "C";
ALTER TABLE api_keys
    ALTER COLUMN id TYPE text COLLATE "C",
    ALTER COLUMN tenant TYPE text COLLATE "C",
    ALTER COLUMN secret_hash TYPE text COLLATE "C";
