-- Leases (Redis keys with an expiry on the servers): one holder per name.
CREATE TABLE leases (
    name       TEXT    PRIMARY KEY,
    holder     TEXT    NOT NULL,
    expires_ms INTEGER NOT NULL
) WITHOUT ROWID;

-- When each raw result was stored: the filter decides a quiet source's last
-- results once nothing new has arrived for a while.
ALTER TABLE raw_results ADD COLUMN stored_ms INTEGER NOT NULL DEFAULT 0;
