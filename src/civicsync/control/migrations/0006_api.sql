-- HTTP API keys (civicsync apikey create|list|revoke). The key itself is never stored: only its
-- SHA-256 and its key_id (the part between the first two underscores of the key, kept in clear to
-- find the row). A revoked key keeps its row so `apikey list` shows who had access and when.
CREATE TABLE civicsync.api_keys (
    key_id      text PRIMARY KEY,
    name        text NOT NULL,
    client      text NOT NULL,
    scopes      text[] NOT NULL,
    key_sha256  bytea NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    revoked_at  timestamptz
);
-- A name is unique among the keys in force (it may be reused after a revocation).
CREATE UNIQUE INDEX api_keys_active_name ON civicsync.api_keys (name) WHERE revoked_at IS NULL;
