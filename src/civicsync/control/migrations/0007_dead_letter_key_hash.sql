-- Dead letters are unique per (flow, key), but a btree entry holds at most ~2.7 kB: a long key (a
-- long text primary key) overflowed the index and stopped the CDC worker. The uniqueness is now on
-- a SHA-256 of the key's canonical text (jsonb output is canonical: keys sorted, one spelling),
-- (jsonb_send: a version byte and that text), which has a fixed size whatever the key's length.
ALTER TABLE civicsync.dead_letters DROP CONSTRAINT dead_letters_flow_row_key_key;
CREATE UNIQUE INDEX dead_letters_flow_key_hash
    ON civicsync.dead_letters (flow, sha256(jsonb_send(row_key)));
