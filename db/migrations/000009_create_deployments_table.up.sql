-- 000009 deployments: durable deploy and rollback jobs. PostgreSQL is the
-- source of truth: queued -> dispatched -> running -> succeeded | failed |
-- canceled | timed_out. Every job carries a deadline (deadline_at) after which
-- the controller ends it; nothing stays queued or running forever.
-- Log lines are stored as numbered chunks in a table added by a later migration;
-- this row keeps the bookkeeping (log_bytes, log_truncated).

CREATE TABLE deployments (
    id                  uuid        PRIMARY KEY,
    app_id              uuid        NOT NULL REFERENCES apps (id) ON DELETE CASCADE,
    -- Who asked: the user behind the web session or API token. NULL for
    -- webhook and scheduled deploys, and after the user is deleted (history stays).
    user_id             uuid        REFERENCES users (id) ON DELETE SET NULL,
    triggered_by        text        NOT NULL,
    -- api_token: the token's id (ULID text); webhook: the provider's delivery
    -- id (X-GitHub-Delivery, X-Gitlab-Event-UUID), unique per app so each
    -- delivery is processed once.
    trigger_ref         text,
    environment         text        NOT NULL DEFAULT 'production',
    branch              text        NOT NULL,
    -- The requested commit (may be abbreviated), replaced by the full SHA the
    -- agent resolved; NULL until known when deploying a branch head.
    commit_sha          text,
    commit_message      text,
    commit_author       text,
    status              text        NOT NULL DEFAULT 'queued',
    -- Step that failed: fetch, checkout, link_shared, write_env, deploy_script,
    -- health_check, activate, reload, dispatch (free text: the agent names it).
    failed_step         text,
    exit_code           int,
    failure_reason      text,
    -- releases/<deployment ulid> under the app's deploy path.
    release_path        text,
    -- For a rollback: the earlier deployment of the same app whose kept
    -- release (and commit) this rollback re-activates (`berth rollback --to ID`).
    rollback_from_id    uuid,
    -- Snapshot of apps.timeout_seconds at enqueue.
    timeout_seconds     int         NOT NULL,
    -- Set at enqueue (bounds the wait in the queue), moved at dispatch to
    -- dispatched_at + timeout; the reaper ends jobs past it (timed_out, or
    -- failed "agent unreachable" after a grace).
    deadline_at         timestamptz NOT NULL,
    -- Cancel is asynchronous: recorded here, re-sent to the agent until it
    -- reports the job canceled.
    cancel_requested_at timestamptz,
    queued_at           timestamptz NOT NULL DEFAULT now(),
    dispatched_at       timestamptz,
    started_at          timestamptz,
    finished_at         timestamptz,
    log_bytes           bigint      NOT NULL DEFAULT 0,
    log_truncated       boolean     NOT NULL DEFAULT false,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),

    CONSTRAINT deployments_triggered_by_check CHECK (triggered_by IN ('user', 'api_token', 'webhook', 'rollback', 'schedule')),
    CONSTRAINT deployments_trigger_ref_check CHECK (triggered_by NOT IN ('api_token', 'webhook') OR trigger_ref IS NOT NULL),
    CONSTRAINT deployments_environment_check CHECK (environment IN ('production', 'staging')),
    CONSTRAINT deployments_status_check CHECK (status IN ('queued', 'dispatched', 'running', 'succeeded', 'failed', 'canceled', 'timed_out')),
    CONSTRAINT deployments_commit_sha_check CHECK (commit_sha ~ '^[0-9a-f]{4,64}$'),
    CONSTRAINT deployments_branch_check CHECK (branch <> ''),
    CONSTRAINT deployments_timeout_seconds_check CHECK (timeout_seconds > 0),
    CONSTRAINT deployments_log_bytes_check CHECK (log_bytes >= 0),
    -- Only a rollback points at another deployment (it may lose the pointer if
    -- that row is deleted, hence no reverse implication).
    CONSTRAINT deployments_rollback_from_check CHECK (rollback_from_id IS NULL OR (triggered_by = 'rollback' AND rollback_from_id <> id)),
    CONSTRAINT deployments_dispatched_check CHECK (status <> 'dispatched' OR dispatched_at IS NOT NULL),
    CONSTRAINT deployments_running_check CHECK (status <> 'running' OR started_at IS NOT NULL),
    CONSTRAINT deployments_finished_check CHECK (
        (status IN ('succeeded', 'failed', 'canceled', 'timed_out')) = (finished_at IS NOT NULL)
    ),
    -- Target of composite foreign keys that keep references within one app.
    CONSTRAINT deployments_id_app_id_key UNIQUE (id, app_id),
    -- Same app only; SET NULL (column list, PostgreSQL 15) clears just the pointer.
    CONSTRAINT deployments_rollback_from_fkey FOREIGN KEY (rollback_from_id, app_id)
        REFERENCES deployments (id, app_id) ON DELETE SET NULL (rollback_from_id)
);

CREATE INDEX deployments_created_at_idx ON deployments (created_at DESC);
CREATE INDEX deployments_app_id_created_at_idx ON deployments (app_id, created_at DESC);
CREATE INDEX deployments_status_idx ON deployments (status);
CREATE INDEX deployments_user_id_idx ON deployments (user_id);
CREATE INDEX deployments_rollback_from_id_idx ON deployments (rollback_from_id, app_id);
CREATE INDEX deployments_triggered_by_idx ON deployments (triggered_by);
CREATE INDEX deployments_environment_idx ON deployments (environment);
-- One deploy per app at a time: a second one waits in 'queued' until this
-- index lets the dispatcher move it to 'dispatched'.
CREATE UNIQUE INDEX deployments_one_active_per_app_key
    ON deployments (app_id) WHERE status IN ('dispatched', 'running');
-- The dispatcher's queue, oldest first per app.
CREATE INDEX deployments_queued_idx ON deployments (app_id, queued_at) WHERE status = 'queued';
-- The reaper's scan for unfinished jobs past their deadline.
CREATE INDEX deployments_deadline_at_idx ON deployments (deadline_at)
    WHERE status IN ('queued', 'dispatched', 'running');
-- Each webhook delivery creates at most one deployment.
CREATE UNIQUE INDEX deployments_webhook_delivery_key
    ON deployments (app_id, trigger_ref) WHERE triggered_by = 'webhook';

CREATE TRIGGER deployments_set_updated_at BEFORE UPDATE ON deployments
    FOR EACH ROW EXECUTE FUNCTION berth_set_updated_at();

-- apps.current_deployment_id must name a deployment of the same app. Deleting
-- that deployment clears only the pointer (SET NULL column list, PostgreSQL 15).
ALTER TABLE apps ADD CONSTRAINT apps_current_deployment_fkey
    FOREIGN KEY (current_deployment_id, id) REFERENCES deployments (id, app_id)
    ON DELETE SET NULL (current_deployment_id);
CREATE INDEX apps_current_deployment_id_idx ON apps (current_deployment_id, id);
