-- 000016 activity_log: every state-changing action through the web UI or the
-- gRPC API (and the controller's own, as 'system'): who, what, on which
-- subject, what changed, from where. subject_id has no foreign key on purpose:
-- the log must outlive what it describes (subject_name keeps the label).
-- Retention: 90 days, weekly.

CREATE TABLE activity_log (
    id           uuid        PRIMARY KEY,
    -- The user behind the session or API token; NULL for webhook/system
    -- actions and after the user is deleted.
    user_id      uuid        REFERENCES users (id) ON DELETE SET NULL,
    actor_type   text        NOT NULL,
    -- Display string kept as it was: an email, 'token:<name>', 'webhook:github',
    -- 'system'.
    actor        text        NOT NULL,
    -- Dotted lowercase verb, e.g. app.created, deployment.started, server.removed.
    action       text        NOT NULL,
    -- e.g. server, app, deployment, domain, backup, user (lowercase).
    subject_type text,
    subject_id   uuid,
    subject_name text,
    -- {"field": {"old": ..., "new": ...}} for changed fields. Never secret
    -- values: an encrypted field appears as {"changed": true} only.
    changes      jsonb       NOT NULL DEFAULT '{}',
    ip_address   inet,
    user_agent   text,
    created_at   timestamptz NOT NULL DEFAULT now(),

    CONSTRAINT activity_log_actor_type_check CHECK (actor_type IN ('user', 'api_token', 'webhook', 'agent', 'system')),
    CONSTRAINT activity_log_action_check CHECK (action ~ '^[a-z][a-z0-9_]*(\.[a-z0-9_]+)*$'),
    CONSTRAINT activity_log_subject_check CHECK (subject_id IS NULL OR subject_type IS NOT NULL),
    CONSTRAINT activity_log_subject_type_check CHECK (subject_type ~ '^[a-z][a-z0-9_]*$'),
    CONSTRAINT activity_log_changes_check CHECK (jsonb_typeof(changes) = 'object')
);

CREATE INDEX activity_log_created_at_idx ON activity_log (created_at DESC);
CREATE INDEX activity_log_user_id_created_at_idx ON activity_log (user_id, created_at DESC);
CREATE INDEX activity_log_subject_idx ON activity_log (subject_type, subject_id, created_at DESC);
CREATE INDEX activity_log_action_created_at_idx ON activity_log (action, created_at DESC);
CREATE INDEX activity_log_actor_type_idx ON activity_log (actor_type);
