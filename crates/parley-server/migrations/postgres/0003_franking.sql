-- Message franking (docs/PROTOCOL.md §12). The commitment TF, the server tag RF and the key id
-- travel with each envelope and are deleted with it (ack, expiry, block, account deletion): the
-- server keeps no other per-message franking state. The franking keys are never stored here.
ALTER TABLE envelopes ADD COLUMN franking_tag BYTEA NOT NULL DEFAULT ''::bytea;
ALTER TABLE envelopes ADD COLUMN server_tag BYTEA NOT NULL DEFAULT ''::bytea;
ALTER TABLE envelopes ADD COLUMN franking_kid BIGINT NOT NULL DEFAULT 0;

-- Moderation: a suspended account cannot send; warnings count `warn` decisions.
ALTER TABLE accounts ADD COLUMN suspended BIGINT NOT NULL DEFAULT 0;
ALTER TABLE accounts ADD COLUMN warnings BIGINT NOT NULL DEFAULT 0;

-- Abuse reports. `report` is the encoded franked report: it holds the plaintext the reporter
-- chose to disclose (that is the point of a report). Usernames, not account ids: a report
-- outlives the accounts it names.
CREATE TABLE reports (
    id             BIGSERIAL PRIMARY KEY,
    reporter       TEXT   NOT NULL,
    sender         TEXT   NOT NULL,
    reason         TEXT   NOT NULL,
    report         BYTEA  NOT NULL,
    created_at_ms  BIGINT NOT NULL,
    status         TEXT   NOT NULL DEFAULT 'open'
                   CHECK (status IN ('open', 'dismiss', 'warn', 'suspend')),
    resolved_at_ms BIGINT
);
CREATE INDEX reports_by_status ON reports (status, id);
