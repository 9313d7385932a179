-- Three-way conflict resolution: a hash of the source value civicsync last synced, per field
-- governed by a newest_wins policy. Hashes only, never values.
CREATE TABLE civicsync.field_base (
    flow     text NOT NULL,
    row_key  text NOT NULL,
    hashes   jsonb NOT NULL,
    PRIMARY KEY (flow, row_key)
);
