-- 000021 webhook_deliveries: every push-event delivery the webhook endpoint
-- accepted (signature or token verified), keyed by the provider's delivery
-- id, so a replayed delivery is recognised and processed once, including
-- the ones that deployed nothing (another branch).

CREATE TABLE webhook_deliveries (
    id            uuid        PRIMARY KEY,
    -- CASCADE: deliveries mean nothing without their app.
    app_id        uuid        NOT NULL REFERENCES apps (id) ON DELETE CASCADE,
    provider      text        NOT NULL,
    -- X-GitHub-Delivery or X-Gitlab-Event-UUID.
    delivery_id   text        NOT NULL,
    -- The pushed branch ('' when the event was not a branch push).
    ref           text        NOT NULL DEFAULT '',
    -- deployed, ignored_branch, ignored_event.
    result        text        NOT NULL,
    -- SET NULL: the delivery record outlives a deleted deployment.
    deployment_id uuid        REFERENCES deployments (id) ON DELETE SET NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),

    CONSTRAINT webhook_deliveries_provider_check CHECK (provider IN ('github', 'gitlab')),
    CONSTRAINT webhook_deliveries_delivery_id_check CHECK (delivery_id <> '' AND length(delivery_id) <= 200),
    CONSTRAINT webhook_deliveries_result_check CHECK (result IN ('deployed', 'ignored_branch', 'ignored_event'))
);

CREATE UNIQUE INDEX webhook_deliveries_delivery_key ON webhook_deliveries (app_id, provider, delivery_id);
CREATE INDEX webhook_deliveries_deployment_id_idx ON webhook_deliveries (deployment_id);
CREATE INDEX webhook_deliveries_created_at_idx ON webhook_deliveries (created_at);
CREATE INDEX webhook_deliveries_result_idx ON webhook_deliveries (result);
