-- Parley server schema, PostgreSQL. Only public keys, hashes and ciphertext are stored.
CREATE TABLE accounts (
    id          BIGSERIAL PRIMARY KEY,
    username    TEXT   NOT NULL UNIQUE,
    account_key BYTEA  NOT NULL,
    device_list BYTEA  NOT NULL,
    created_at  BIGINT NOT NULL
);

CREATE TABLE devices (
    uid              BIGSERIAL PRIMARY KEY,
    account_id       BIGINT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    device_id        BIGINT NOT NULL,
    certificate      BYTEA  NOT NULL,
    token_hash       BYTEA  NOT NULL,
    signed_prekey    BYTEA  NOT NULL,
    signed_prekey_at BIGINT NOT NULL,
    last_resort_kem  BYTEA  NOT NULL,
    last_resort_at   BIGINT NOT NULL,
    queued           BIGINT NOT NULL DEFAULT 0,
    UNIQUE (account_id, device_id)
);

-- kind 1 = one-time X25519 prekey, 2 = signed one-time ML-KEM prekey
CREATE TABLE one_time_prekeys (
    device_uid BIGINT NOT NULL REFERENCES devices(uid) ON DELETE CASCADE,
    kind       BIGINT NOT NULL,
    key_id     BIGINT NOT NULL,
    prekey     BYTEA  NOT NULL,
    PRIMARY KEY (device_uid, kind, key_id)
);

CREATE TABLE envelopes (
    id            BIGSERIAL PRIMARY KEY,
    device_uid    BIGINT NOT NULL,
    message_id    TEXT   NOT NULL,
    sender        TEXT   NOT NULL,
    sender_device BIGINT NOT NULL,
    server_time   BIGINT NOT NULL,
    ciphertext    BYTEA  NOT NULL
);
CREATE INDEX envelopes_by_device ON envelopes (device_uid, id);
CREATE INDEX envelopes_by_time ON envelopes (server_time);

CREATE TABLE sent_messages (
    sender_uid  BIGINT NOT NULL,
    message_id  TEXT   NOT NULL,
    server_time BIGINT NOT NULL,
    PRIMARY KEY (sender_uid, message_id)
);
CREATE INDEX sent_messages_by_time ON sent_messages (server_time);
