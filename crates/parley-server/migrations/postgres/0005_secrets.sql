-- Shared key material for several nodes (docs/OPERATIONS.md "Key material"). Each row is one
-- named secret (franking keyring, admin token, ...) sealed with XChaCha20-Poly1305 under the
-- node master key, which is never stored here; the name is the associated data, so a blob
-- cannot be moved to another name. `version` starts at 1 and grows by one on every change
-- (compare-and-swap: a node replaces only the version it read).
CREATE TABLE secrets (
    name       TEXT   PRIMARY KEY,
    value      BYTEA  NOT NULL,
    version    BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
