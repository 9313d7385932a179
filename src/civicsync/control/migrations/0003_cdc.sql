-- CDC: the confirmed position of each replication slot, written in the same transaction as the
-- rows it covers; and dead letters that know which change they stand for.
CREATE TABLE civicsync.cdc_positions (
    slot         text PRIMARY KEY,
    lsn          bigint NOT NULL,
    commit_time  timestamptz,
    updated_at   timestamptz NOT NULL DEFAULT clock_timestamp()
);

ALTER TABLE civicsync.dead_letters
    ADD COLUMN op text,
    ADD COLUMN lsn bigint,
    ADD COLUMN next_attempt_at timestamptz;
