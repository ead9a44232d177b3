-- Safety without plaintext (docs/SAFETY.md): age class, who has messaged whom, blocks.
ALTER TABLE accounts ADD COLUMN minor INTEGER NOT NULL DEFAULT 0;

-- One row per ordered pair once `from_account` has sent to `to_account`. `initiated` = 1 when
-- that send opened a new conversation (neither side had written before): those rows count
-- toward the per-account limit on new conversations.
CREATE TABLE conversations (
    from_account INTEGER NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    to_account   INTEGER NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    created_at   INTEGER NOT NULL,
    initiated    INTEGER NOT NULL,
    PRIMARY KEY (from_account, to_account)
);
CREATE INDEX conversations_initiated ON conversations (from_account, initiated, created_at);
CREATE INDEX conversations_to ON conversations (to_account);

CREATE TABLE blocks (
    blocker    INTEGER NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    blocked    INTEGER NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (blocker, blocked)
);
CREATE INDEX blocks_blocked ON blocks (blocked);
