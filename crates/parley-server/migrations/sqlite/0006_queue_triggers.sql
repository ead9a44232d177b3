-- The per-device queue length (`devices.queued`, which bounds a queue) follows its envelopes
-- inside SQLite: a send and an ack each save a statement (one round trip to the database
-- thread) in the group commit (docs/BENCHMARKS.md, part 2, S3).
UPDATE devices SET queued = (SELECT COUNT(*) FROM envelopes WHERE device_uid = devices.uid);
CREATE TRIGGER envelopes_queued_insert AFTER INSERT ON envelopes BEGIN
    UPDATE devices SET queued = queued + 1 WHERE uid = NEW.device_uid;
END;
CREATE TRIGGER envelopes_queued_delete AFTER DELETE ON envelopes BEGIN
    UPDATE devices SET queued = MAX(queued - 1, 0) WHERE uid = OLD.device_uid;
END;
