-- 000029 notifications service (issue 17): events, channels, rules and the
-- delivery outbox. An event is written in the transaction of the change it
-- reports (a transactional outbox); the fan-out in the same transaction
-- writes inbox rows (notifications) and one outbox row per (event, channel)
-- for the channels that send elsewhere. Delivery workers on any controller
-- claim due outbox rows with FOR UPDATE SKIP LOCKED and a lease.

CREATE TABLE notify_events (
    id            uuid        PRIMARY KEY,
    kind          text        NOT NULL,
    level         text        NOT NULL DEFAULT 'info',
    title         text        NOT NULL,
    body          text        NOT NULL DEFAULT '',
    -- The objects the event is about. No foreign keys: an event outlives
    -- the server or app it names.
    server_id     uuid,
    app_id        uuid,
    deployment_id uuid,
    -- Relative URL in the web UI.
    link          text,
    -- The condition the event opens (or, with resolves, closes), e.g.
    -- 'server.offline:<id>'.
    dedupe_key    text,
    resolves      boolean     NOT NULL DEFAULT false,
    created_at    timestamptz NOT NULL DEFAULT now(),

    CONSTRAINT notify_events_kind_check CHECK (kind ~ '^[a-z][a-z0-9_]*(\.[a-z0-9_]+)*$' AND length(kind) <= 100),
    CONSTRAINT notify_events_level_check CHECK (level IN ('info', 'warning', 'critical')),
    CONSTRAINT notify_events_title_check CHECK (title <> '' AND length(title) <= 300),
    CONSTRAINT notify_events_body_check CHECK (length(body) <= 8000),
    CONSTRAINT notify_events_resolves_check CHECK (NOT resolves OR dedupe_key IS NOT NULL)
);
CREATE INDEX notify_events_created_at_idx ON notify_events (created_at);

CREATE TABLE notify_channels (
    id                  uuid        PRIMARY KEY,
    name                text        NOT NULL,
    kind                text        NOT NULL,
    -- inbox and email: every active admin (the inbox's when the event fans
    -- out, email's addresses when the message is sent).
    to_admins           boolean     NOT NULL DEFAULT false,
    -- email: the addresses (not secret).
    recipients          text[]      NOT NULL DEFAULT '{}',
    -- slack, discord, webhook: the host of the URL, the only part shown.
    url_host            text,
    -- slack, discord, webhook: sealed JSON {"url": ..., "secret": ...}
    -- (secrets envelope, write-only).
    config              bytea,
    enabled             boolean     NOT NULL DEFAULT true,
    -- Deliveries per rolling hour before the rest is held for a digest.
    rate_limit_per_hour integer     NOT NULL DEFAULT 20,
    last_error          text,
    failing_since       timestamptz,
    last_delivered_at   timestamptz,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),

    CONSTRAINT notify_channels_name_key UNIQUE (name),
    CONSTRAINT notify_channels_name_check CHECK (name ~ '^[a-z0-9][a-z0-9_.-]{0,62}$'),
    CONSTRAINT notify_channels_kind_check CHECK (kind IN ('inbox', 'email', 'slack', 'discord', 'webhook')),
    CONSTRAINT notify_channels_config_check CHECK ((kind IN ('slack', 'discord', 'webhook')) = (config IS NOT NULL)),
    CONSTRAINT notify_channels_rate_check CHECK (rate_limit_per_hour BETWEEN 1 AND 10000)
);

CREATE TABLE notify_rules (
    id         uuid        PRIMARY KEY,
    channel_id uuid        NOT NULL REFERENCES notify_channels (id) ON DELETE CASCADE,
    -- Kind patterns: an exact kind, 'prefix.*' or '*'.
    events     text[]      NOT NULL,
    server_id  uuid        REFERENCES servers (id) ON DELETE CASCADE,
    app_id     uuid        REFERENCES apps (id) ON DELETE CASCADE,
    min_level  text        NOT NULL DEFAULT 'info',
    created_at timestamptz NOT NULL DEFAULT now(),

    CONSTRAINT notify_rules_events_check CHECK (cardinality(events) BETWEEN 1 AND 50),
    CONSTRAINT notify_rules_level_check CHECK (min_level IN ('info', 'warning', 'critical'))
);
CREATE INDEX notify_rules_channel_id_idx ON notify_rules (channel_id);
CREATE INDEX notify_rules_server_id_idx ON notify_rules (server_id);
CREATE INDEX notify_rules_app_id_idx ON notify_rules (app_id);

CREATE TABLE notify_outbox (
    -- Also the webhook-id: the idempotency key a receiver dedupes on.
    id              uuid        PRIMARY KEY,
    channel_id      uuid        NOT NULL REFERENCES notify_channels (id) ON DELETE CASCADE,
    -- NULL for a digest of held-back events.
    event_id        uuid        REFERENCES notify_events (id) ON DELETE CASCADE,
    dedupe_key      text,
    resolves        boolean     NOT NULL DEFAULT false,
    -- pending: to send; delivered; failed: gave up; merged: a repeat of
    -- something the channel already has (or a condition that closed
    -- before it was sent); held: over the rate limit, waits for a digest;
    -- digested: sent as part of the digest digest_id.
    status          text        NOT NULL DEFAULT 'pending',
    digest_id       uuid,
    -- A digest's message (event_id NULL).
    digest_title    text,
    digest_body     text,
    attempts        integer     NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    -- Set while a worker holds the row: another worker takes it over only
    -- after the lease ran out (the holder died).
    locked_until    timestamptz,
    last_error      text,
    delivered_at    timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now(),

    CONSTRAINT notify_outbox_event_channel_key UNIQUE (event_id, channel_id),
    CONSTRAINT notify_outbox_status_check CHECK (status IN ('pending', 'delivered', 'failed', 'merged', 'held', 'digested')),
    CONSTRAINT notify_outbox_message_check CHECK (event_id IS NOT NULL OR digest_title IS NOT NULL)
);
-- The claim: status = 'pending' ordered by next_attempt_at.
CREATE INDEX notify_outbox_status_idx ON notify_outbox (status, next_attempt_at);
CREATE INDEX notify_outbox_channel_key_idx ON notify_outbox (channel_id, dedupe_key, created_at DESC) WHERE dedupe_key IS NOT NULL;
CREATE INDEX notify_outbox_channel_created_idx ON notify_outbox (channel_id, created_at DESC);
CREATE INDEX notify_outbox_held_idx ON notify_outbox (channel_id) WHERE status = 'held';
CREATE INDEX notify_outbox_created_at_idx ON notify_outbox (created_at);

-- Defaults on a new install: failures, alerts and security events to every
-- admin's inbox. The email channel is added at first start when SMTP is
-- configured (the migration cannot know).
INSERT INTO notify_channels (id, name, kind, to_admins)
VALUES ('01900000-0000-7000-8000-000000000001', 'admins-inbox', 'inbox', true);
INSERT INTO notify_rules (id, channel_id, events)
VALUES ('01900000-0000-7000-8000-000000000002', '01900000-0000-7000-8000-000000000001',
        ARRAY['deployment.failed', 'deployment.timed_out', 'server.offline', 'server.online',
              'backup.failed', 'backup.verification_failed', 'certificate.*',
              'alert.firing', 'alert.resolved', 'security.*']);
