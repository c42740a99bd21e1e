-- no-transaction
-- Accounts and roles: operators, disabled users, API tokens, claims on music,
-- and the key that credentials are hashed with.
--
-- The users table is rebuilt to widen its role CHECK. Foreign keys are off
-- while it is (with them on, dropping the old table would null every
-- music's owner); that needs a migration outside sqlx's transaction, so
-- this one runs its own.
PRAGMA foreign_keys = OFF;
BEGIN IMMEDIATE;

CREATE TABLE users_new (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    email         TEXT    NOT NULL UNIQUE,
    display_name  TEXT    NOT NULL,
    role          TEXT    NOT NULL CHECK (role IN ('musician', 'admin', 'operator')),
    password_hash TEXT    NOT NULL,
    created_at    INTEGER NOT NULL,
    disabled      INTEGER NOT NULL DEFAULT 0
);
INSERT INTO users_new (id, email, display_name, role, password_hash, created_at)
    SELECT id, email, display_name, role, password_hash, created_at FROM users;
DROP TABLE users;
ALTER TABLE users_new RENAME TO users;

CREATE TABLE api_tokens (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    public_id    TEXT    NOT NULL UNIQUE,
    user_id      INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name         TEXT    NOT NULL,
    scope        TEXT    NOT NULL CHECK (scope IN ('musician', 'admin', 'operator')),
    digest       TEXT    NOT NULL,
    created_at   INTEGER NOT NULL,
    last_used_at INTEGER,
    revoked_at   INTEGER
);
CREATE INDEX api_tokens_user ON api_tokens (user_id);

CREATE TABLE music_claims (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    music_id    INTEGER NOT NULL REFERENCES musics (id),
    claimant_id INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    state       TEXT    NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'granted', 'rejected')),
    created_at  INTEGER NOT NULL,
    resolved_at INTEGER,
    UNIQUE (music_id, claimant_id)
);
CREATE INDEX music_claims_state ON music_claims (state, id);

CREATE TABLE installation_keys (
    name       TEXT    PRIMARY KEY,
    key_hex    TEXT    NOT NULL,
    created_at INTEGER NOT NULL
) WITHOUT ROWID;

PRAGMA foreign_key_check;
COMMIT;
PRAGMA foreign_keys = ON;
