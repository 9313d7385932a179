-- civicsync's own control schema, in every database civicsync writes to.
-- The schema itself and civicsync.schema_migrations are created by the migration runner.

-- One row per batch run attempt series (a run may take several attempts).
CREATE TABLE civicsync.runs (
    run_id         bigserial PRIMARY KEY,
    flow           text NOT NULL,
    started_at     timestamptz NOT NULL DEFAULT clock_timestamp(),
    finished_at    timestamptz,
    status         text NOT NULL CHECK (status IN ('running','succeeded','failed')),
    attempts       integer NOT NULL DEFAULT 1,
    rows_read      bigint NOT NULL DEFAULT 0,
    rows_written   bigint NOT NULL DEFAULT 0,
    rows_deleted   bigint NOT NULL DEFAULT 0,
    rows_rejected  bigint NOT NULL DEFAULT 0,
    conflicts      bigint NOT NULL DEFAULT 0,
    error          text
);
CREATE INDEX runs_flow_started ON civicsync.runs (flow, started_at DESC);

-- Position of each incremental flow; written in the same transaction as the rows it covers.
CREATE TABLE civicsync.watermarks (
    flow        text PRIMARY KEY,
    value       text NOT NULL,
    run_id      bigint,
    updated_at  timestamptz NOT NULL DEFAULT clock_timestamp()
);

-- Every conflict the field-ownership policy decided. No values, only their ages: the values
-- may be personal data and already live in the table they belong to.
CREATE TABLE civicsync.conflicts (
    conflict_id     bigserial PRIMARY KEY,
    flow            text NOT NULL,
    run_id          bigint,
    row_key         jsonb NOT NULL,
    field           text NOT NULL,
    policy          text NOT NULL,
    source_version  timestamptz,
    target_version  timestamptz,
    winner          text NOT NULL CHECK (winner IN ('source','target')),
    decided_at      timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX conflicts_flow ON civicsync.conflicts (flow, decided_at);

-- Source rows that broke a flow's rules. Only the key and the error are kept (never the row:
-- it may hold personal data); a replay re-reads the row from the source by its key.
CREATE TABLE civicsync.dead_letters (
    dead_letter_id  bigserial PRIMARY KEY,
    flow            text NOT NULL,
    row_key         jsonb NOT NULL,
    error_kind      text NOT NULL,
    error           text NOT NULL,
    attempts        integer NOT NULL DEFAULT 1,
    status          text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending','replayed','discarded')),
    first_seen      timestamptz NOT NULL DEFAULT clock_timestamp(),
    last_seen       timestamptz NOT NULL DEFAULT clock_timestamp(),
    UNIQUE (flow, row_key)
);
