-- Accounts and roles: operators, disabled users, API tokens, claims on music,
-- and the key that credentials are hashed with.

ALTER TABLE users
    MODIFY role ENUM('musician', 'admin', 'operator') NOT NULL,
    ADD COLUMN disabled BOOLEAN NOT NULL DEFAULT FALSE;

-- A token is `hnd_<public_id>_<secret>`: the public part finds the row, the
-- secret is checked against `digest`, a keyed BLAKE3 hash, in constant time.
CREATE TABLE api_tokens (
    id           BIGINT       NOT NULL AUTO_INCREMENT PRIMARY KEY,
    public_id    CHAR(16)     NOT NULL,
    user_id      BIGINT       NOT NULL,
    name         VARCHAR(255) NOT NULL,
    scope        ENUM('musician', 'admin', 'operator') NOT NULL,
    digest       CHAR(64)     NOT NULL,
    created_at   DATETIME(3)  NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
    last_used_at DATETIME(3)  NULL,
    revoked_at   DATETIME(3)  NULL,
    UNIQUE KEY api_tokens_public (public_id),
    KEY api_tokens_user (user_id),
    CONSTRAINT api_tokens_user_fk FOREIGN KEY (user_id) REFERENCES users (id) ON DELETE CASCADE
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

-- A second owner's upload of audio that already belongs to someone.
CREATE TABLE music_claims (
    id          BIGINT      NOT NULL AUTO_INCREMENT PRIMARY KEY,
    music_id    BIGINT      NOT NULL,
    claimant_id BIGINT      NOT NULL,
    state       ENUM('pending', 'granted', 'rejected') NOT NULL DEFAULT 'pending',
    created_at  DATETIME(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
    resolved_at DATETIME(3) NULL,
    UNIQUE KEY music_claims_once (music_id, claimant_id),
    KEY music_claims_state (state, id),
    CONSTRAINT music_claims_music_fk FOREIGN KEY (music_id) REFERENCES musics (id),
    CONSTRAINT music_claims_user_fk FOREIGN KEY (claimant_id) REFERENCES users (id) ON DELETE CASCADE
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

-- Keys made once per installation (the credential hashing key, unless
-- HENDU_AUTH_KEY gives one).
CREATE TABLE installation_keys (
    name       VARCHAR(64) NOT NULL PRIMARY KEY,
    key_hex    CHAR(64)    NOT NULL,
    created_at DATETIME(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;
