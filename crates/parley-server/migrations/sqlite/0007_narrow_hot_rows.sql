-- Every send and every ack changes a device's queue length. Kept in `devices`, that counter
-- shared a row with the device's certificate and prekeys (about 2 KiB, two rows to a page), so
-- each commit rewrote one such page per device it touched, in the WAL and again at the
-- checkpoint. In a table of its own a counter row is a few bytes, and a commit's counters share
-- a page or two (docs/BENCHMARKS.md, part 2, S12).
CREATE TABLE device_queues (
    device_uid INTEGER PRIMARY KEY REFERENCES devices(uid) ON DELETE CASCADE,
    queued     INTEGER NOT NULL DEFAULT 0
);
INSERT INTO device_queues (device_uid, queued) SELECT uid, queued FROM devices;

DROP TRIGGER envelopes_queued_insert;
DROP TRIGGER envelopes_queued_delete;
ALTER TABLE devices DROP COLUMN queued;

CREATE TRIGGER devices_queue_row AFTER INSERT ON devices BEGIN
    INSERT INTO device_queues (device_uid) VALUES (NEW.uid);
END;
CREATE TRIGGER envelopes_queued_insert AFTER INSERT ON envelopes BEGIN
    UPDATE device_queues SET queued = queued + 1 WHERE device_uid = NEW.device_uid;
END;
CREATE TRIGGER envelopes_queued_delete AFTER DELETE ON envelopes BEGIN
    UPDATE device_queues SET queued = MAX(queued - 1, 0) WHERE device_uid = OLD.device_uid;
END;

-- The idempotency rows are only ever looked up by their key: stored WITHOUT ROWID, the key's
-- b-tree is the table, and a send writes two b-trees instead of three.
CREATE TABLE sent_messages_new (
    sender_uid  INTEGER NOT NULL,
    message_id  TEXT    NOT NULL,
    server_time INTEGER NOT NULL,
    PRIMARY KEY (sender_uid, message_id)
) WITHOUT ROWID;
INSERT INTO sent_messages_new (sender_uid, message_id, server_time)
    SELECT sender_uid, message_id, server_time FROM sent_messages;
DROP TABLE sent_messages;
ALTER TABLE sent_messages_new RENAME TO sent_messages;
CREATE INDEX sent_messages_by_time ON sent_messages (server_time);
