-- The radio monitor: a station's country and operator, what the replica
-- listening to it last reported, and the gaps in its sample sequence.
ALTER TABLE radios
    ADD COLUMN country    CHAR(2)     NULL,
    ADD COLUMN owner_id   BIGINT      NULL,
    ADD COLUMN updated_at DATETIME(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
    ADD CONSTRAINT radios_owner_fk FOREIGN KEY (owner_id) REFERENCES users (id) ON DELETE SET NULL;

CREATE TABLE radio_status (
    radio_id        BIGINT        NOT NULL PRIMARY KEY,
    state           VARCHAR(32)   NOT NULL,
    detail          VARCHAR(1024) NULL,
    since           DATETIME(3)   NOT NULL,
    holder          VARCHAR(255)  NULL,
    codec           VARCHAR(64)   NULL,
    title           VARCHAR(1024) NULL,
    bytes_per_s     DOUBLE        NOT NULL DEFAULT 0,
    reconnects      BIGINT        NOT NULL DEFAULT 0,
    samples         BIGINT        NOT NULL DEFAULT 0,
    silence_s       DOUBLE        NOT NULL DEFAULT 0,
    last_sample_end DATETIME(3)   NULL,
    updated_at      DATETIME(3)   NOT NULL,
    CONSTRAINT radio_status_radio_fk FOREIGN KEY (radio_id) REFERENCES radios (id) ON DELETE CASCADE
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

CREATE TABLE radio_gaps (
    id         BIGINT       NOT NULL AUTO_INCREMENT PRIMARY KEY,
    radio_id   BIGINT       NOT NULL,
    started_at DATETIME(3)  NOT NULL,
    ended_at   DATETIME(3)  NOT NULL,
    reason     VARCHAR(255) NOT NULL,
    UNIQUE KEY radio_gaps_once (radio_id, started_at),
    CONSTRAINT radio_gaps_radio_fk FOREIGN KEY (radio_id) REFERENCES radios (id) ON DELETE CASCADE
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;
