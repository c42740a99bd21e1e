-- The web service: people's browser sessions, and their disputes of plays.

-- A session cookie holds a 256-bit secret; the table holds only its keyed
-- BLAKE3 digest (a copy of the table signs no one in).
CREATE TABLE web_sessions (
    digest     TEXT    NOT NULL PRIMARY KEY,
    user_id    INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    csrf       TEXT    NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
);
CREATE INDEX web_sessions_user ON web_sessions (user_id);
CREATE INDEX web_sessions_expiry ON web_sessions (expires_at);

-- A musician's reason to think a play is wrong, for an administrator.
CREATE TABLE play_disputes (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    play_id     INTEGER NOT NULL REFERENCES results (id) ON DELETE CASCADE,
    user_id     INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    reason      TEXT    NOT NULL,
    state       TEXT    NOT NULL DEFAULT 'open' CHECK (state IN ('open', 'upheld', 'rejected')),
    created_at  INTEGER NOT NULL,
    resolved_at INTEGER NULL,
    UNIQUE (play_id, user_id)
);
CREATE INDEX play_disputes_state ON play_disputes (state, id);

-- The International Standard Recording Code of a catalogue track, when its
-- owner gives one (usage reports name it).
ALTER TABLE musics ADD COLUMN isrc TEXT NULL;

-- The plays tables of the web pages: newest first within a scope.
CREATE INDEX results_started ON results (started_at, id);
