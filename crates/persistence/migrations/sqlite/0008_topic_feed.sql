-- A cluster's change feed: see migrations/postgres/0007_topic_feed.sql.
CREATE TABLE weft_topic_feed (
    topic TEXT PRIMARY KEY,
    last_seq BIGINT NOT NULL
);

ALTER TABLE weft_topic_updates ADD COLUMN feed_seq BIGINT;

CREATE INDEX weft_topic_updates_feed ON weft_topic_updates (topic, feed_seq);
