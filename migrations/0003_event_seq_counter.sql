-- Event ids are assigned by the store's writer from a counter instead of AUTOINCREMENT, which
-- cost an extra sqlite_sequence update on every event insert. Ids still never go back: the
-- counter starts above the newest stored event and above `event_seq`, the high-water mark
-- that every deletion of events records first.
CREATE TABLE counters (
    name   TEXT    PRIMARY KEY,
    value  INTEGER NOT NULL
) WITHOUT ROWID;
INSERT INTO counters (name, value)
    SELECT 'event_seq', coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'events'), 0);

CREATE TABLE events_by_seq (
    seq           INTEGER PRIMARY KEY,              -- global, increasing, never reused
    operation_id  TEXT    NOT NULL,
    type          TEXT    NOT NULL,
    data          TEXT    NOT NULL
);
INSERT INTO events_by_seq (seq, operation_id, type, data)
    SELECT seq, operation_id, type, data FROM events;
DROP TABLE events;
ALTER TABLE events_by_seq RENAME TO events;
CREATE INDEX events_operation ON events (operation_id, seq);
