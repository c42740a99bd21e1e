-- Fencing tokens. A lease row now keeps its token after release (the row's
-- expiry is set in the past instead of the row being deleted), so that
-- tokens only grow; `fences` is the highest token that has written.
ALTER TABLE leases ADD COLUMN fence INTEGER NOT NULL DEFAULT 0;
CREATE TABLE fences (
    name  TEXT    PRIMARY KEY,
    token INTEGER NOT NULL
) WITHOUT ROWID;
