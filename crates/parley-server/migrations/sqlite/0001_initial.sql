-- Parley server schema, SQLite. Only public keys, hashes and ciphertext are stored.
CREATE TABLE accounts (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    username    TEXT    NOT NULL UNIQUE,
    account_key BLOB    NOT NULL,
    device_list BLOB    NOT NULL,
    created_at  INTEGER NOT NULL
);

CREATE TABLE devices (
    uid              INTEGER PRIMARY KEY AUTOINCREMENT,
    account_id       INTEGER NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    device_id        INTEGER NOT NULL,
    certificate      BLOB    NOT NULL,
    token_hash       BLOB    NOT NULL,
    signed_prekey    BLOB    NOT NULL,
    signed_prekey_at INTEGER NOT NULL,
    last_resort_kem  BLOB    NOT NULL,
    last_resort_at   INTEGER NOT NULL,
    queued           INTEGER NOT NULL DEFAULT 0,
    UNIQUE (account_id, device_id)
);

-- kind 1 = one-time X25519 prekey, 2 = signed one-time ML-KEM prekey
CREATE TABLE one_time_prekeys (
    device_uid INTEGER NOT NULL REFERENCES devices(uid) ON DELETE CASCADE,
    kind       INTEGER NOT NULL,
    key_id     INTEGER NOT NULL,
    prekey     BLOB    NOT NULL,
    PRIMARY KEY (device_uid, kind, key_id)
);

CREATE TABLE envelopes (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    device_uid    INTEGER NOT NULL,
    message_id    TEXT    NOT NULL,
    sender        TEXT    NOT NULL,
    sender_device INTEGER NOT NULL,
    server_time   INTEGER NOT NULL,
    ciphertext    BLOB    NOT NULL
);
CREATE INDEX envelopes_by_device ON envelopes (device_uid, id);
CREATE INDEX envelopes_by_time ON envelopes (server_time);

-- Idempotency of sends: (sender device, client message id) → when it was accepted.
CREATE TABLE sent_messages (
    sender_uid  INTEGER NOT NULL,
    message_id  TEXT    NOT NULL,
    server_time INTEGER NOT NULL,
    PRIMARY KEY (sender_uid, message_id)
);
CREATE INDEX sent_messages_by_time ON sent_messages (server_time);
