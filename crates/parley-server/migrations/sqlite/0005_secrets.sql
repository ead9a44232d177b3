-- Shared key material (docs/OPERATIONS.md "Key material"), used when the server is given a
-- master key. Each row is one named secret sealed with XChaCha20-Poly1305 under the node master
-- key, which is never stored here; the name is the associated data. `version` starts at 1 and
-- grows by one on every change (compare-and-swap).
CREATE TABLE secrets (
    name       TEXT    PRIMARY KEY,
    value      BLOB    NOT NULL,
    version    INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);
