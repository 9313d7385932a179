-- A CDC flow stopped by a schema change of its source (a mapped column dropped, renamed or retyped),
-- while the other flows of its slot go on: the position it resumes from (the slot is acknowledged
-- no further, so the source keeps the WAL), why it stopped, and the flow's config as it was then
-- (a restart with a changed config resumes it; with the same config it stays stopped).
CREATE TABLE civicsync.cdc_flow_stops (
    slot         text NOT NULL,
    flow         text NOT NULL,
    lsn          bigint NOT NULL,
    error        text NOT NULL,
    config_hash  text NOT NULL,
    new_types    jsonb NOT NULL DEFAULT '{}',
    stopped_at   timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (slot, flow)
);
