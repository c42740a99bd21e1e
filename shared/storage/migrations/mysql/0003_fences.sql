-- Fencing tokens: the highest lease token that has written for a name (a
-- filter's source). A write carrying a lower token comes from a holder
-- whose lease expired and was taken over, and is refused.
CREATE TABLE fences (
    name  VARCHAR(255) NOT NULL PRIMARY KEY,
    token BIGINT       NOT NULL
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;
