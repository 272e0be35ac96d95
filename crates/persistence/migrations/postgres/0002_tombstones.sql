-- Deleted documents: see migrations/sqlite/0003_tombstones.sql. A deletion
-- is the empty document's snapshot carrying a tombstone (the v1 state
-- vector of the deleted content, the deletion's log position, when).
ALTER TABLE weft_snapshots ADD COLUMN tombstone_sv BYTEA;
ALTER TABLE weft_snapshots ADD COLUMN deleted_position BIGINT;
ALTER TABLE weft_snapshots ADD COLUMN deleted_at BIGINT;

ALTER TABLE weft_topic_snapshots ADD COLUMN tombstone_sv BYTEA;
ALTER TABLE weft_topic_snapshots ADD COLUMN deleted_position BIGINT;
ALTER TABLE weft_topic_snapshots ADD COLUMN deleted_at BIGINT;
