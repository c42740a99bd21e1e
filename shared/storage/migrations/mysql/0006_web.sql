-- The web service: people's browser sessions, and their disputes of plays.

-- A session cookie holds a 256-bit secret; the table holds only its keyed
-- BLAKE3 digest (a copy of the table signs no one in).
CREATE TABLE web_sessions (
    digest     CHAR(64)    NOT NULL PRIMARY KEY,
    user_id    BIGINT      NOT NULL,
    csrf       CHAR(64)    NOT NULL,
    created_at DATETIME(3) NOT NULL,
    expires_at DATETIME(3) NOT NULL,
    KEY web_sessions_user (user_id),
    KEY web_sessions_expiry (expires_at),
    CONSTRAINT web_sessions_user_fk FOREIGN KEY (user_id) REFERENCES users (id) ON DELETE CASCADE
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

-- A musician's reason to think a play is wrong, for an administrator.
CREATE TABLE play_disputes (
    id          BIGINT        NOT NULL AUTO_INCREMENT PRIMARY KEY,
    play_id     BIGINT        NOT NULL,
    user_id     BIGINT        NOT NULL,
    reason      VARCHAR(2000) NOT NULL,
    state       ENUM('open', 'upheld', 'rejected') NOT NULL DEFAULT 'open',
    created_at  DATETIME(3)   NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
    resolved_at DATETIME(3)   NULL,
    UNIQUE KEY play_disputes_once (play_id, user_id),
    KEY play_disputes_state (state, id),
    CONSTRAINT play_disputes_play_fk FOREIGN KEY (play_id) REFERENCES results (id) ON DELETE CASCADE,
    CONSTRAINT play_disputes_user_fk FOREIGN KEY (user_id) REFERENCES users (id) ON DELETE CASCADE
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

-- The International Standard Recording Code of a catalogue track, when its
-- owner gives one (usage reports name it).
ALTER TABLE musics ADD COLUMN isrc CHAR(12) NULL;

-- The plays tables of the web pages: newest first within a scope.
CREATE INDEX results_started ON results (started_at, id);
