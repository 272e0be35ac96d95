-- A cluster's change feed: every per-edit row a worker stores gets the next
-- number of its topic's feed (feed_seq), so server-sent events and webhooks
-- read a topic's changes across partitions in one order with one cursor.
-- The counter row is updated first in the storing transaction and stays
-- locked until it commits, so numbers commit in order: a reader that sees
-- feed_seq N has seen every smaller number that will ever be stored.
-- Rows stored before this migration have no feed_seq and are not in the feed.
CREATE TABLE weft_topic_feed (
    topic TEXT PRIMARY KEY,
    last_seq BIGINT NOT NULL
);

ALTER TABLE weft_topic_updates ADD COLUMN feed_seq BIGINT;

CREATE INDEX weft_topic_updates_feed ON weft_topic_updates (topic, feed_seq);
