-- Consumer groups beside a queue's own: the recognition shards, each of which
-- reads every entry of the samples queue. `last_id` is the last entry handed
-- to the group; an entry the group holds unacknowledged is a row of
-- queue_group_pending. An entry leaves queue_entries once every group that
-- needs it has read and acknowledged it.
CREATE TABLE queue_groups (
    queue   TEXT    NOT NULL,
    grp     TEXT    NOT NULL,
    last_id INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (queue, grp)
) WITHOUT ROWID;

CREATE TABLE queue_group_pending (
    grp          TEXT    NOT NULL,
    entry_id     INTEGER NOT NULL,
    consumer     TEXT    NOT NULL,
    delivered_ms INTEGER NOT NULL,
    deliveries   INTEGER NOT NULL,
    PRIMARY KEY (grp, entry_id)
) WITHOUT ROWID;
CREATE INDEX queue_group_pending_due ON queue_group_pending (grp, delivered_ms);
CREATE INDEX queue_group_pending_entry ON queue_group_pending (entry_id);

-- Each recognition shard's answer for a sample (the first one stands); the
-- sample's raw result is decided once all the shards of its split answered.
CREATE TABLE shard_answers (
    sample_id   TEXT    NOT NULL,
    shards      INTEGER NOT NULL,
    shard       INTEGER NOT NULL,
    body        TEXT    NOT NULL,
    answered_ms INTEGER NOT NULL,
    PRIMARY KEY (sample_id, shards, shard)
) WITHOUT ROWID;
CREATE INDEX shard_answers_age ON shard_answers (answered_ms);
