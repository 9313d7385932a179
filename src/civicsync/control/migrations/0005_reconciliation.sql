-- Reconciliation (civicsync reconcile): one row per run, and every difference it found, by key.
-- Keys and column names only, never values: a value may be personal data, or a masked-away original.
CREATE TABLE civicsync.reconcile_runs (
    run_id        bigserial PRIMARY KEY,
    flow          text NOT NULL,
    started_at    timestamptz NOT NULL DEFAULT clock_timestamp(),
    finished_at   timestamptz,
    status        text NOT NULL CHECK (status IN ('running','equal','different','repaired','failed')),
    method        text,
    repair        boolean NOT NULL DEFAULT false,
    source_rows   bigint,
    target_rows   bigint,
    missing       bigint NOT NULL DEFAULT 0,
    extra         bigint NOT NULL DEFAULT 0,
    different     bigint NOT NULL DEFAULT 0,
    rejected      bigint NOT NULL DEFAULT 0,
    repaired      bigint NOT NULL DEFAULT 0,
    notes         text[] NOT NULL DEFAULT '{}',
    error         text
);
CREATE INDEX reconcile_runs_flow ON civicsync.reconcile_runs (flow, run_id DESC);

CREATE TABLE civicsync.reconcile_differences (
    run_id    bigint NOT NULL REFERENCES civicsync.reconcile_runs ON DELETE CASCADE,
    class     text NOT NULL CHECK (class IN ('missing','extra','different','rejected')),
    row_key   jsonb NOT NULL,
    columns   text[] NOT NULL DEFAULT '{}',
    repaired  boolean NOT NULL DEFAULT false
);
CREATE INDEX reconcile_differences_run ON civicsync.reconcile_differences (run_id, class);
