-- 000018 api_tokens: bearer tokens for the gRPC admin API and the berth CLI.
-- Not one of the seed's 16 tables (the seed's product had only web sessions).
-- Only the SHA-256 of a token is stored: the token itself is shown once.

CREATE TABLE api_tokens (
    id           uuid        PRIMARY KEY,
    -- A token acts as its user: disabling or deleting the user kills it.
    user_id      uuid        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name         text        NOT NULL,
    token_hash   bytea       NOT NULL,
    -- read < write < deploy < admin, checked server-side on every RPC.
    scopes       text[]      NOT NULL DEFAULT '{admin}',
    expires_at   timestamptz,
    last_used_at timestamptz,
    last_used_ip inet,
    revoked_at   timestamptz,
    created_at   timestamptz NOT NULL DEFAULT now(),

    CONSTRAINT api_tokens_name_check CHECK (char_length(name) BETWEEN 1 AND 100),
    CONSTRAINT api_tokens_token_hash_check CHECK (octet_length(token_hash) = 32),
    CONSTRAINT api_tokens_scopes_check CHECK (
        cardinality(scopes) > 0 AND scopes <@ ARRAY['read', 'write', 'deploy', 'admin']::text[]),
    CONSTRAINT api_tokens_expires_at_check CHECK (expires_at IS NULL OR expires_at > created_at)
);

CREATE UNIQUE INDEX api_tokens_token_hash_key ON api_tokens (token_hash);
-- A user's token names are unique among the tokens still usable.
CREATE UNIQUE INDEX api_tokens_user_id_name_key ON api_tokens (user_id, name) WHERE revoked_at IS NULL;
CREATE INDEX api_tokens_user_id_idx ON api_tokens (user_id);
