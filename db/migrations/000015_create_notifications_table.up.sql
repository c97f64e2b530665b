-- 000015 notifications: each user's in-app inbox (deploy failed, backup
-- failed, server offline, certificate expiring, ...). Delivery to other
-- channels (email, Slack, webhooks) is configured and tracked in tables added
-- by a later migration; this table is the in-app copy. Retention: 30 days,
-- weekly, read or not.

CREATE TABLE notifications (
    id         uuid        PRIMARY KEY,
    user_id    uuid        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    -- Dotted lowercase name, e.g. deployment.failed, backup.failed,
    -- server.offline, certificate.expiring.
    kind       text        NOT NULL,
    level      text        NOT NULL DEFAULT 'info',
    title      text        NOT NULL,
    body       text        NOT NULL DEFAULT '',
    -- Relative URL in the web UI, e.g. /deployments/01J...
    link       text,
    -- Coalesces repeats: at most one unread notification per user and key
    -- (e.g. 'server.offline:<server ulid>'); INSERT ... ON CONFLICT DO NOTHING.
    dedupe_key text,
    read_at    timestamptz,
    created_at timestamptz NOT NULL DEFAULT now(),

    CONSTRAINT notifications_kind_check CHECK (kind ~ '^[a-z][a-z0-9_]*(\.[a-z0-9_]+)*$'),
    CONSTRAINT notifications_level_check CHECK (level IN ('info', 'success', 'warning', 'error')),
    CONSTRAINT notifications_title_check CHECK (title <> '')
);

CREATE INDEX notifications_user_id_created_at_idx ON notifications (user_id, created_at DESC);
-- The unread badge and list.
CREATE INDEX notifications_user_id_unread_idx ON notifications (user_id, created_at DESC) WHERE read_at IS NULL;
CREATE UNIQUE INDEX notifications_unread_dedupe_key
    ON notifications (user_id, dedupe_key) WHERE read_at IS NULL AND dedupe_key IS NOT NULL;
CREATE INDEX notifications_kind_idx ON notifications (kind);
CREATE INDEX notifications_level_idx ON notifications (level);
CREATE INDEX notifications_created_at_idx ON notifications (created_at);
