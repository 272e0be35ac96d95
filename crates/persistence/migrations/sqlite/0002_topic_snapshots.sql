-- Documents folded from a Kafka topic by the persistence worker (cluster
-- mode): per topic and document, the state and the partition offset it
-- covers. Apart from weft_snapshots, whose positions are the embedded
-- log's sequence numbers.
CREATE TABLE weft_topic_snapshots (
    topic         TEXT    NOT NULL,
    doc           TEXT    NOT NULL,
    state         BLOB    NOT NULL,
    state_vector  BLOB    NOT NULL,
    partition_id  INTEGER NOT NULL,
    covers_offset INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL,
    PRIMARY KEY (topic, doc)
);
