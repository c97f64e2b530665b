-- 000008 apps: applications deployed from git onto one server, zero downtime
-- (releases/<deployment ulid>, shared paths, an atomic `current` symlink).
-- current_deployment_id gets its foreign key in 000009, once deployments exists.

CREATE TABLE apps (
    id                           uuid        PRIMARY KEY,
    -- RESTRICT: removing a server never silently destroys the apps on it
    -- (their environment secrets exist nowhere else); delete or move them first.
    server_id                    uuid        NOT NULL REFERENCES servers (id) ON DELETE RESTRICT,
    -- RESTRICT: deleting a credential still in use would only break the next
    -- deploy of a private repository; refuse and name the apps instead.
    git_credential_id            uuid        REFERENCES git_credentials (id) ON DELETE RESTRICT,
    -- Addressed by name in the CLI, globally unique; a lowercase slug, safe
    -- in paths (default deploy path /srv/berth/NAME).
    name                         text        NOT NULL,
    repository_url               text        NOT NULL,
    branch                       text        NOT NULL DEFAULT 'main',
    deploy_path                  text        NOT NULL,
    -- Unix user that owns the releases and runs the deploy script and app.
    run_as_user                  text        NOT NULL DEFAULT 'berth',
    -- Run with bash from the new release directory.
    deploy_script                text        NOT NULL DEFAULT '',
    health_check_command         text,
    health_check_url             text,
    health_check_timeout_seconds int         NOT NULL DEFAULT 30,
    -- Run after `current` is switched (deploy and rollback), e.g. a
    -- `systemctl reload` or php-fpm reload.
    reload_command               text,
    releases_to_keep             int         NOT NULL DEFAULT 5,
    -- Paths relative to the release directory, symlinked into <deploy_path>/shared.
    shared_paths                 text[]      NOT NULL DEFAULT '{}',
    timeout_seconds              int         NOT NULL DEFAULT 1800,
    -- Encrypted (same envelope as the seed's encrypted fields): the webhook
    -- secret must be recoverable to verify GitHub HMAC signatures and GitLab
    -- tokens. NULL: the webhook endpoint refuses this app.
    webhook_secret               bytea,
    -- Encrypted JSON objects of variables: common ones, overlaid by the environment's.
    env_vars                     bytea,
    env_production               bytea,
    env_staging                  bytea,
    -- The deployment whose release `current` points at (FK added in 000009).
    current_deployment_id        uuid,
    created_at                   timestamptz NOT NULL DEFAULT now(),
    updated_at                   timestamptz NOT NULL DEFAULT now(),

    CONSTRAINT apps_name_check CHECK (name ~ '^[a-z0-9][a-z0-9._-]{0,62}$'),
    CONSTRAINT apps_repository_url_check CHECK (repository_url <> ''),
    CONSTRAINT apps_branch_check CHECK (branch <> ''),
    CONSTRAINT apps_deploy_path_check CHECK (deploy_path ~ '^/.' AND deploy_path !~ '(^|/)\.\.(/|$)'),
    CONSTRAINT apps_run_as_user_check CHECK (run_as_user ~ '^[a-z_][a-z0-9_-]{0,31}$'),
    CONSTRAINT apps_health_check_timeout_check CHECK (health_check_timeout_seconds BETWEEN 1 AND 3600),
    CONSTRAINT apps_releases_to_keep_check CHECK (releases_to_keep >= 1),
    CONSTRAINT apps_timeout_seconds_check CHECK (timeout_seconds BETWEEN 1 AND 86400),
    -- Target of domains' composite foreign key (app_id, server_id), which keeps
    -- a domain on the same server as its app.
    CONSTRAINT apps_id_server_id_key UNIQUE (id, server_id)
);

CREATE UNIQUE INDEX apps_name_key ON apps (name);
-- Two apps on one server must not share a directory.
CREATE UNIQUE INDEX apps_server_id_deploy_path_key ON apps (server_id, deploy_path);
CREATE INDEX apps_git_credential_id_idx ON apps (git_credential_id);

CREATE TRIGGER apps_set_updated_at BEFORE UPDATE ON apps
    FOR EACH ROW EXECUTE FUNCTION berth_set_updated_at();
