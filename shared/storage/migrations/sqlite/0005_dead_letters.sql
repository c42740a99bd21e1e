-- Dead letters: queue entries taken out of their queue, delivered too often
-- without being acknowledged or refused by their consumer, kept until an
-- administrator requeues or discards them. `entry_id` is the id the entry had
-- in queue_entries.
CREATE TABLE dead_letters (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    queue      TEXT    NOT NULL,
    entry_id   INTEGER NOT NULL,
    payload    BLOB    NOT NULL,
    reason     TEXT    NOT NULL,
    deliveries INTEGER NOT NULL,
    dead_ms    INTEGER NOT NULL
);
CREATE INDEX dead_letters_queue ON dead_letters (queue, id);

-- Reconciliation: a sample is settled when its raw result is stored
-- (recognised_ms) or when it went to the dead letters (set_aside_ms); the
-- others, once older than the claim timeout, are queued again if the queue
-- lost them. Samples stored before this migration count as recognised.
ALTER TABLE sample_fingerprints ADD COLUMN recognised_ms INTEGER;
ALTER TABLE sample_fingerprints ADD COLUMN set_aside_ms INTEGER;
UPDATE sample_fingerprints SET recognised_ms = 0;
CREATE INDEX sample_fingerprints_unsettled ON sample_fingerprints (captured_ms)
    WHERE recognised_ms IS NULL AND set_aside_ms IS NULL;
