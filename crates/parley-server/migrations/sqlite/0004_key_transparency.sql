-- Key transparency (docs/KT.md). The akd directory's storage: the tree (aZKS root record and
-- nodes, by akd's binary id) and every committed value state (label = username, value = the
-- hash of the account's identity key and device list). Public data only: the VRF and KT
-- signing keys live in the data folder, never here.
CREATE TABLE kt_nodes (
    id     BLOB PRIMARY KEY,
    record BLOB NOT NULL
);
CREATE TABLE kt_values (
    label     BLOB    NOT NULL,
    epoch     INTEGER NOT NULL,
    version   INTEGER NOT NULL,
    value     BLOB    NOT NULL,
    node_val  BLOB    NOT NULL,
    node_len  INTEGER NOT NULL,
    PRIMARY KEY (label, epoch)
);
-- Every published epoch with its root and the server's signature over (epoch, root).
CREATE TABLE kt_epochs (
    epoch           INTEGER PRIMARY KEY,
    root            BLOB    NOT NULL,
    signature       BLOB    NOT NULL,
    published_at_ms INTEGER NOT NULL
);
-- Usernames whose directory entry must be (re)computed at the next epoch: written in the same
-- transaction as the account change (registration, deletion).
CREATE TABLE kt_dirty (
    seq      INTEGER PRIMARY KEY AUTOINCREMENT,
    username TEXT    NOT NULL
);
INSERT INTO kt_dirty (username) SELECT username FROM accounts ORDER BY id;
