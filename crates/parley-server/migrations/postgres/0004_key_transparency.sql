-- Key transparency (docs/KT.md). The akd directory's storage: the tree (aZKS root record and
-- nodes, by akd's binary id) and every committed value state (label = username, value = the
-- hash of the account's identity key and device list). Public data only: the VRF and KT
-- signing keys live in the data folder, never here.
CREATE TABLE kt_nodes (
    id     BYTEA PRIMARY KEY,
    record BYTEA NOT NULL
);
CREATE TABLE kt_values (
    label     BYTEA  NOT NULL,
    epoch     BIGINT NOT NULL,
    version   BIGINT NOT NULL,
    value     BYTEA  NOT NULL,
    node_val  BYTEA  NOT NULL,
    node_len  BIGINT NOT NULL,
    PRIMARY KEY (label, epoch)
);
-- Every published epoch with its root and the server's signature over (epoch, root).
CREATE TABLE kt_epochs (
    epoch           BIGINT PRIMARY KEY,
    root            BYTEA  NOT NULL,
    signature       BYTEA  NOT NULL,
    published_at_ms BIGINT NOT NULL
);
-- Usernames whose directory entry must be (re)computed at the next epoch: written in the same
-- transaction as the account change (registration, deletion).
CREATE TABLE kt_dirty (
    seq      BIGSERIAL PRIMARY KEY,
    username TEXT      NOT NULL
);
INSERT INTO kt_dirty (username) SELECT username FROM accounts ORDER BY id;
