-- Deleted documents (the REST API's DELETE). A deletion is stored as a
-- snapshot of the empty document covering the deletion's log position,
-- with a tombstone: the v1 state vector of the deleted content, the
-- position of the deletion and when it happened. Later snapshots of the
-- document carry the tombstone forward, so clients holding the deleted
-- history are refused for as long as the document exists; the snapshot
-- fence (covers_seq / covers_offset only grow) keeps a late writer holding
-- the old content from bringing it back. NULL: never deleted.
ALTER TABLE weft_snapshots ADD COLUMN tombstone_sv BLOB;
ALTER TABLE weft_snapshots ADD COLUMN deleted_position INTEGER;
ALTER TABLE weft_snapshots ADD COLUMN deleted_at INTEGER;

ALTER TABLE weft_topic_snapshots ADD COLUMN tombstone_sv BLOB;
ALTER TABLE weft_topic_snapshots ADD COLUMN deleted_position INTEGER;
ALTER TABLE weft_topic_snapshots ADD COLUMN deleted_at INTEGER;
