-- Three-way bases, compact: the key as text (C collation), the field hashes as an int4 array in
-- the order civicsync.field_base_layout records per flow (a changed layout discards old bases).
DROP TABLE civicsync.field_base;
CREATE TABLE civicsync.field_base (
    flow     text NOT NULL,
    row_key  text COLLATE "C" NOT NULL,
    hashes   int4[] NOT NULL,
    PRIMARY KEY (flow, row_key)
);
CREATE TABLE civicsync.field_base_layout (
    flow    text PRIMARY KEY,
    fields  text[] NOT NULL
);
