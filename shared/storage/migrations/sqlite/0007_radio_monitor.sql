-- The radio monitor: a station's country and operator, what the replica
-- listening to it last reported, the gaps in its sample sequence, and the
-- stream title a sample was heard under.
ALTER TABLE radios ADD COLUMN country TEXT;
ALTER TABLE radios ADD COLUMN owner_id INTEGER REFERENCES users (id) ON DELETE SET NULL;
ALTER TABLE radios ADD COLUMN updated_at INTEGER NOT NULL DEFAULT 0;

CREATE TABLE radio_status (
    radio_id        INTEGER PRIMARY KEY REFERENCES radios (id) ON DELETE CASCADE,
    state           TEXT    NOT NULL,
    detail          TEXT,
    since           INTEGER NOT NULL,
    holder          TEXT,
    codec           TEXT,
    title           TEXT,
    bytes_per_s     REAL    NOT NULL DEFAULT 0,
    reconnects      INTEGER NOT NULL DEFAULT 0,
    samples         INTEGER NOT NULL DEFAULT 0,
    silence_s       REAL    NOT NULL DEFAULT 0,
    last_sample_end INTEGER,
    updated_at      INTEGER NOT NULL
);

CREATE TABLE radio_gaps (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    radio_id   INTEGER NOT NULL REFERENCES radios (id) ON DELETE CASCADE,
    started_at INTEGER NOT NULL,
    ended_at   INTEGER NOT NULL,
    reason     TEXT    NOT NULL,
    UNIQUE (radio_id, started_at)
);

ALTER TABLE sample_fingerprints ADD COLUMN title TEXT;
