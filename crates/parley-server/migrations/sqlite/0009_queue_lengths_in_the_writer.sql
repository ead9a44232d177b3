-- Queue lengths are kept by the writer thread, the only writer of an embedded store, in memory:
-- each device's length is counted from `envelopes_by_device` the first time the writer needs it,
-- then follows the writer's own inserts and deletes once they commit. The triggers made every
-- send and every ack update a counter row as well (two more b-tree writes per message, and a
-- read of the counter before each insert; docs/BENCHMARKS.md, part 2, S17). A queue's length for
-- a reader is the count of its rows.
DROP TRIGGER envelopes_queued_insert;
DROP TRIGGER envelopes_queued_delete;
DROP TRIGGER devices_queue_row;
DROP TABLE device_queues;
