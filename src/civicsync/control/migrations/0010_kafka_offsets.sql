-- Kafka consumer positions of `civicsync apply --group`, stored in the target database and written
-- in the same transaction as the rows they cover: exactly once in effect. `next_offset` is the offset
-- of the next record to apply. A worker updates a row only where it still holds the offset it last
-- read or wrote (a compare-and-set); a worker that lost the partition in a rebalance finds the row
-- advanced by the new owner, its update matches nothing, and its whole transaction rolls back (fenced).
CREATE TABLE civicsync.kafka_offsets (
    group_id     text NOT NULL,
    topic        text NOT NULL,
    partition    integer NOT NULL,
    next_offset  bigint NOT NULL,
    owner        text NOT NULL,
    epoch        bigint NOT NULL DEFAULT 1,
    updated_at   timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (group_id, topic, partition)
);
