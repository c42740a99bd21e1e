-- A 30 s block's packed peaks take 0.5-3 KB. A WITHOUT ROWID table keeps at
-- most about 1 KB of a row on its b-tree page (4 KB pages) and moves the rest
-- to an overflow page of its own, so most blocks took a whole extra page and
-- the file grew to three or four times the peaks it held. A rowid table keeps
-- rows of up to about 4 KB on the page.
CREATE TABLE music_fingerprints_rowid (
    music_id     INTEGER NOT NULL,
    block        INTEGER NOT NULL,
    start_frame  INTEGER NOT NULL,
    end_frame    INTEGER NOT NULL,
    track_frames INTEGER NOT NULL,
    peaks        BLOB    NOT NULL,
    PRIMARY KEY (music_id, block)
);
INSERT INTO music_fingerprints_rowid
    SELECT music_id, block, start_frame, end_frame, track_frames, peaks FROM music_fingerprints;
DROP TABLE music_fingerprints;
ALTER TABLE music_fingerprints_rowid RENAME TO music_fingerprints;
