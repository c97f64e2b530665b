-- 000023 deploy authorisation (issue 15): what decides that code runs as
-- root, where a git credential may be sent, which SSH host keys it trusts,
-- who vouched for a webhook secret, and replays of a signed body.

-- Running an app as root needs this per-server allowance, which only an
-- admin grants; the controller refuses a root app without it and tells the
-- agent (JobStart.allow_root), which refuses too.
ALTER TABLE servers ADD COLUMN allow_root boolean NOT NULL DEFAULT false;

-- The user whose deploy rights a webhook delivery borrows: a delivery is
-- refused once that user is disabled or lost the deploy role. SET NULL: a
-- deleted user's secret no longer deploys anything (NULL is refused too).
ALTER TABLE apps ADD COLUMN webhook_secret_set_by uuid REFERENCES users (id) ON DELETE SET NULL;
CREATE INDEX apps_webhook_secret_set_by_idx ON apps (webhook_secret_set_by);

-- The repository hosts (lowercase, no port) a credential may be sent to,
-- and the OpenSSH known_hosts lines its fetches trust (ssh only).
ALTER TABLE git_credentials ADD COLUMN allowed_hosts text[] NOT NULL DEFAULT '{}';
ALTER TABLE git_credentials ADD COLUMN known_hosts text NOT NULL DEFAULT '';

-- Existing credentials are bound to the hosts their apps already use, so an
-- upgrade keeps them working where they worked (https://host/..,
-- ssh://user@host:port/.., user@host:path).
UPDATE git_credentials c SET allowed_hosts = h.hosts
FROM (
    SELECT a.git_credential_id AS id, array_remove(array_agg(DISTINCT lower(
        CASE WHEN a.repository_url ~ '^[A-Za-z][A-Za-z0-9+.-]*://'
            THEN substring(a.repository_url FROM '^[A-Za-z][A-Za-z0-9+.-]*://(?:[^@/]*@)?([A-Za-z0-9.-]+)')
            ELSE substring(a.repository_url FROM '^(?:[^@/:]*@)?([A-Za-z0-9.-]+):')
        END)), NULL) AS hosts
    FROM apps a
    WHERE a.git_credential_id IS NOT NULL
    GROUP BY a.git_credential_id
) h
WHERE c.id = h.id;

-- A credential shared with a user (besides admins) may be attached to apps
-- by that user.
CREATE TABLE git_credential_shares (
    git_credential_id uuid        NOT NULL REFERENCES git_credentials (id) ON DELETE CASCADE,
    user_id           uuid        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at        timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (git_credential_id, user_id)
);
CREATE INDEX git_credential_shares_user_id_idx ON git_credential_shares (user_id);

-- SHA-256 of a delivery's body: the same signed body under a new delivery id
-- is a replay within the dedupe window (webhook.go).
ALTER TABLE webhook_deliveries ADD COLUMN body_digest bytea;
CREATE INDEX webhook_deliveries_body_digest_idx ON webhook_deliveries (app_id, provider, body_digest, created_at)
    WHERE body_digest IS NOT NULL;
