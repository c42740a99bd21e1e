-- HENDU relational schema (paper, Figure 3): users, musics, radios, devices, results.
-- Times are UTC, to the millisecond.

CREATE TABLE users (
    id            BIGINT       NOT NULL AUTO_INCREMENT PRIMARY KEY,
    email         VARCHAR(254) NOT NULL,
    display_name  VARCHAR(255) NOT NULL,
    role          ENUM('musician', 'admin') NOT NULL,
    password_hash VARCHAR(255) NOT NULL,
    created_at    DATETIME(3)  NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
    UNIQUE KEY users_email (email)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

CREATE TABLE musics (
    id           BIGINT        NOT NULL AUTO_INCREMENT PRIMARY KEY,
    title        VARCHAR(255)  NOT NULL,
    artist       VARCHAR(255)  NULL,
    duration_ms  INT UNSIGNED  NOT NULL,
    blocks       INT UNSIGNED  NOT NULL,
    content_hash CHAR(64)      NOT NULL,
    source       VARCHAR(2048) NOT NULL,
    owner_id     BIGINT        NULL,
    state        ENUM('ingesting', 'ready', 'deleting', 'deleted') NOT NULL,
    created_at   DATETIME(3)   NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
    updated_at   DATETIME(3)   NOT NULL DEFAULT CURRENT_TIMESTAMP(3) ON UPDATE CURRENT_TIMESTAMP(3),
    UNIQUE KEY musics_content_hash (content_hash),
    KEY musics_state (state, id),
    KEY musics_owner (owner_id),
    CONSTRAINT musics_owner_fk FOREIGN KEY (owner_id) REFERENCES users (id) ON DELETE SET NULL
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

CREATE TABLE radios (
    id         BIGINT        NOT NULL AUTO_INCREMENT PRIMARY KEY,
    name       VARCHAR(255)  NOT NULL,
    stream_url VARCHAR(2048) NOT NULL,
    location   VARCHAR(255)  NULL,
    enabled    BOOLEAN       NOT NULL DEFAULT TRUE,
    created_at DATETIME(3)   NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
    UNIQUE KEY radios_name (name)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

CREATE TABLE devices (
    id          BIGINT       NOT NULL AUTO_INCREMENT PRIMARY KEY,
    imei        CHAR(15)     NOT NULL,
    name        VARCHAR(255) NOT NULL,
    location    VARCHAR(255) NULL,
    secret_hash VARCHAR(255) NOT NULL,
    enabled     BOOLEAN      NOT NULL DEFAULT TRUE,
    created_at  DATETIME(3)  NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
    UNIQUE KEY devices_imei (imei)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

-- The plays. A source is a radio or a device: exactly one of the two columns is set.
CREATE TABLE results (
    id              BIGINT       NOT NULL AUTO_INCREMENT PRIMARY KEY,
    music_id        BIGINT       NOT NULL,
    source_kind     ENUM('radio', 'device') NOT NULL,
    radio_id        BIGINT       NULL,
    device_id       BIGINT       NULL,
    location        VARCHAR(255) NULL,
    started_at      DATETIME(3)  NOT NULL,
    ended_at        DATETIME(3)  NOT NULL,
    score           DOUBLE       NOT NULL,
    idempotency_key VARCHAR(128) NOT NULL,
    created_at      DATETIME(3)  NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
    UNIQUE KEY results_idempotency (idempotency_key),
    KEY results_music_time (music_id, started_at),
    KEY results_radio_time (radio_id, started_at),
    KEY results_device_time (device_id, started_at),
    CONSTRAINT results_music_fk FOREIGN KEY (music_id) REFERENCES musics (id),
    CONSTRAINT results_radio_fk FOREIGN KEY (radio_id) REFERENCES radios (id),
    CONSTRAINT results_device_fk FOREIGN KEY (device_id) REFERENCES devices (id),
    CONSTRAINT results_one_source CHECK (
        (source_kind = 'radio' AND radio_id IS NOT NULL AND device_id IS NULL) OR
        (source_kind = 'device' AND device_id IS NOT NULL AND radio_id IS NULL)),
    CONSTRAINT results_ordered CHECK (ended_at >= started_at)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;
