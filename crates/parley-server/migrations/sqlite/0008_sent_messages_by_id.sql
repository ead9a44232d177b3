-- Idempotency records keyed by (message id, sender device) instead of (sender device, message
-- id). Clients make message ids that begin with the time (parley-client: milliseconds since the
-- epoch, then random bits), so new records go to the end of the key's b-tree: a commit writes
-- one or two of its leaf pages, however many devices sent in it. Keyed by sender first, each
-- sending device's records had a range of their own, and a commit rewrote one leaf page per
-- device in it (docs/BENCHMARKS.md, part 2, S15). The lookup of a retry names both columns
-- and is served by either order.
CREATE TABLE sent_messages_new (
    sender_uid  INTEGER NOT NULL,
    message_id  TEXT    NOT NULL,
    server_time INTEGER NOT NULL,
    PRIMARY KEY (message_id, sender_uid)
) WITHOUT ROWID;
INSERT INTO sent_messages_new (sender_uid, message_id, server_time)
    SELECT sender_uid, message_id, server_time FROM sent_messages;
DROP TABLE sent_messages;
ALTER TABLE sent_messages_new RENAME TO sent_messages;
CREATE INDEX sent_messages_by_time ON sent_messages (server_time);

-- Records are no longer grouped by sender, so a deleted account's records are not deleted
-- with it: its devices are listed here, and the housekeeping removes their records a bounded
-- slice at a time, in passes over the table in key order (`sent_purge_pass`). A device leaves
-- the list after the first pass that started after it was added has ended.
CREATE TABLE sent_purge (
    sender_uid INTEGER PRIMARY KEY,
    -- the pass after whose end no record of this device is left
    last_pass  INTEGER NOT NULL
);
CREATE TABLE sent_purge_pass (
    id     INTEGER PRIMARY KEY CHECK (id = 1),
    -- the pass under way, or the next one
    pass   INTEGER NOT NULL,
    -- the key up to which this pass has looked; '' when it has not started
    cursor TEXT    NOT NULL
);
INSERT INTO sent_purge_pass (id, pass, cursor) VALUES (1, 0, '');
