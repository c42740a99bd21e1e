-- HENDU's embedded store: the relational tables of the server schema, the
-- documents kept in MongoDB on servers, and the work queue kept in Redis.
-- Times are Unix milliseconds (UTC), in columns named as in the MySQL schema.

CREATE TABLE users (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    email         TEXT    NOT NULL UNIQUE,
    display_name  TEXT    NOT NULL,
    role          TEXT    NOT NULL CHECK (role IN ('musician', 'admin')),
    password_hash TEXT    NOT NULL,
    created_at    INTEGER NOT NULL
);

CREATE TABLE musics (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    title        TEXT    NOT NULL,
    artist       TEXT,
    duration_ms  INTEGER NOT NULL,
    blocks       INTEGER NOT NULL,
    content_hash TEXT    NOT NULL UNIQUE,
    source       TEXT    NOT NULL,
    owner_id     INTEGER REFERENCES users (id) ON DELETE SET NULL,
    state        TEXT    NOT NULL CHECK (state IN ('ingesting', 'ready', 'deleting', 'deleted')),
    created_at   INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL
);
CREATE INDEX musics_state ON musics (state, id);

CREATE TABLE radios (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    name       TEXT    NOT NULL UNIQUE,
    stream_url TEXT    NOT NULL,
    location   TEXT,
    enabled    INTEGER NOT NULL DEFAULT 1,
    created_at INTEGER NOT NULL
);

CREATE TABLE devices (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    imei        TEXT    NOT NULL UNIQUE,
    name        TEXT    NOT NULL,
    location    TEXT,
    secret_hash TEXT    NOT NULL,
    enabled     INTEGER NOT NULL DEFAULT 1,
    created_at  INTEGER NOT NULL
);

CREATE TABLE results (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    music_id        INTEGER NOT NULL REFERENCES musics (id),
    source_kind     TEXT    NOT NULL CHECK (source_kind IN ('radio', 'device')),
    radio_id        INTEGER REFERENCES radios (id),
    device_id       INTEGER REFERENCES devices (id),
    location        TEXT,
    started_at      INTEGER NOT NULL,
    ended_at        INTEGER NOT NULL CHECK (ended_at >= started_at),
    score           REAL    NOT NULL,
    idempotency_key TEXT    NOT NULL UNIQUE,
    created_at      INTEGER NOT NULL,
    CHECK ((source_kind = 'radio' AND radio_id IS NOT NULL AND device_id IS NULL) OR
           (source_kind = 'device' AND device_id IS NOT NULL AND radio_id IS NULL))
);
CREATE INDEX results_music_time ON results (music_id, started_at);
CREATE INDEX results_radio_time ON results (radio_id, started_at);
CREATE INDEX results_device_time ON results (device_id, started_at);

CREATE TABLE music_fingerprints (
    music_id     INTEGER NOT NULL,
    block        INTEGER NOT NULL,
    start_frame  INTEGER NOT NULL,
    end_frame    INTEGER NOT NULL,
    track_frames INTEGER NOT NULL,
    peaks        BLOB    NOT NULL,
    PRIMARY KEY (music_id, block)
) WITHOUT ROWID;

CREATE TABLE sample_fingerprints (
    id          TEXT    PRIMARY KEY,
    source_kind TEXT    NOT NULL,
    source_id   INTEGER NOT NULL,
    location    TEXT,
    captured_ms INTEGER NOT NULL,
    duration_ms INTEGER NOT NULL,
    peaks       BLOB    NOT NULL
);
CREATE INDEX sample_fingerprints_source ON sample_fingerprints (source_kind, source_id, captured_ms);

CREATE TABLE raw_results (
    sample_id   TEXT    PRIMARY KEY,
    source_kind TEXT    NOT NULL,
    source_id   INTEGER NOT NULL,
    captured_ms INTEGER NOT NULL,
    body        TEXT    NOT NULL
);
CREATE INDEX raw_results_source ON raw_results (source_kind, source_id, captured_ms);

-- Music binaries in chunks, so that large files stream in and out.
CREATE TABLE music_binaries (
    music_id INTEGER NOT NULL,
    chunk    INTEGER NOT NULL,
    name     TEXT    NOT NULL,
    data     BLOB    NOT NULL,
    PRIMARY KEY (music_id, chunk)
) WITHOUT ROWID;

-- The work queue: entries, and per entry the delivery that is pending.
CREATE TABLE queue_entries (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    queue        TEXT    NOT NULL,
    payload      BLOB    NOT NULL,
    consumer     TEXT,
    delivered_ms INTEGER,
    deliveries   INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX queue_entries_waiting ON queue_entries (queue, deliveries, id);
CREATE INDEX queue_entries_pending ON queue_entries (queue, delivered_ms);
