-- 000032 domains and ACME (issue 19): what the seed's domains table lacks.
--
-- The controller runs the ACME client (lego) with a CSR the site's agent
-- made, so certificate keys never leave the server; the agent answers
-- HTTP-01 through nginx. Everything the agent does for a domain is a job in
-- the deployments queue (kinds 'site' and 'acme'), so it shares dispatch,
-- deadlines, reconnect re-sends and the per-app order with deploys.

-- acme_accounts: one ACME account per (directory, email). The account key
-- is a secrets envelope (write-only; never shown).
CREATE TABLE acme_accounts (
    id               uuid        PRIMARY KEY,
    directory_url    text        NOT NULL,
    email            text        NOT NULL DEFAULT '',
    -- Sealed PEM of the account's ECDSA P-256 key.
    private_key      bytea       NOT NULL,
    -- The account URL the CA returned at registration (kid).
    registration_uri text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),

    CONSTRAINT acme_accounts_directory_url_check CHECK (directory_url ~ '^https://' AND length(directory_url) <= 2048),
    CONSTRAINT acme_accounts_email_check CHECK (length(email) <= 254)
);
CREATE UNIQUE INDEX acme_accounts_directory_url_email_key ON acme_accounts (directory_url, email);
CREATE TRIGGER acme_accounts_set_updated_at BEFORE UPDATE ON acme_accounts
    FOR EACH ROW EXECUTE FUNCTION berth_set_updated_at();

-- dns_providers: credentials for DNS-01 (wildcards), used by lego's DNS
-- providers. credentials is a sealed JSON object of the provider's
-- variables (write-only).
CREATE TABLE dns_providers (
    id          uuid        PRIMARY KEY,
    name        text        NOT NULL,
    -- lego's provider code (cloudflare, route53, httpreq, ...).
    provider    text        NOT NULL,
    credentials bytea       NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),

    CONSTRAINT dns_providers_name_check CHECK (name ~ '^[a-z0-9][a-z0-9_.-]{0,62}$'),
    CONSTRAINT dns_providers_provider_check CHECK (provider ~ '^[a-z0-9][a-z0-9_.-]{0,62}$')
);
CREATE UNIQUE INDEX dns_providers_name_key ON dns_providers (name);
CREATE TRIGGER dns_providers_set_updated_at BEFORE UPDATE ON dns_providers
    FOR EACH ROW EXECUTE FUNCTION berth_set_updated_at();

-- apps: where the site forwards to. upstream_url overrides the default
-- (http://127.0.0.1:<upstream_port> when the app has one): an http URL on
-- loopback or a unix socket (unix:/path). static_root serves files from a
-- directory relative to current instead.
ALTER TABLE apps ADD COLUMN upstream_url text;
ALTER TABLE apps ADD COLUMN static_root text;
ALTER TABLE apps ADD CONSTRAINT apps_upstream_url_check CHECK (
    upstream_url IS NULL OR (length(upstream_url) <= 1024 AND upstream_url ~ '^(https?://|unix:/)')
);
ALTER TABLE apps ADD CONSTRAINT apps_static_root_check CHECK (
    static_root IS NULL OR (length(static_root) <= 1024 AND static_root !~ '^/' AND static_root !~ '(^|/)\.\.(/|$)')
);

-- domains: DNS-01 provider (required for wildcards), the certificate the CA
-- last issued (public; ARI's certificate id and "replaces" come from it),
-- the failure count the retry backoff grows with, and when the 14-day
-- expiry warning was raised for the current certificate.
ALTER TABLE domains ADD COLUMN dns_provider_id uuid REFERENCES dns_providers (id) ON DELETE RESTRICT;
ALTER TABLE domains ADD COLUMN tls_certificate text;
ALTER TABLE domains ADD COLUMN tls_serial text;
ALTER TABLE domains ADD COLUMN tls_failures int NOT NULL DEFAULT 0;
-- Strict-Transport-Security on the HTTPS server, only when asked.
ALTER TABLE domains ADD COLUMN hsts boolean NOT NULL DEFAULT false;
ALTER TABLE domains ADD COLUMN tls_expiring_notified_at timestamptz;
-- ARI (RFC 9773): the window the CA suggested and when to ask again.
ALTER TABLE domains ADD COLUMN tls_ari_window_start timestamptz;
ALTER TABLE domains ADD COLUMN tls_ari_window_end timestamptz;
ALTER TABLE domains ADD CONSTRAINT domains_tls_certificate_check CHECK (tls_certificate IS NULL OR length(tls_certificate) <= 65536);
ALTER TABLE domains ADD CONSTRAINT domains_wildcard_dns_check CHECK (
    hostname !~ '^\*\.' OR tls_mode <> 'acme' OR dns_provider_id IS NOT NULL
);
CREATE INDEX domains_dns_provider_id_idx ON domains (dns_provider_id) WHERE dns_provider_id IS NOT NULL;

-- A deleted app's domains go with it: they are no longer routed and never
-- renewed again (the app's delete job removes its site from nginx).
CREATE FUNCTION berth_delete_app_domains() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM domains WHERE app_id = NEW.id;
    RETURN NEW;
END $$;
CREATE TRIGGER apps_delete_domains AFTER UPDATE OF deleted_at ON apps
    FOR EACH ROW WHEN (OLD.deleted_at IS NULL AND NEW.deleted_at IS NOT NULL)
    EXECUTE FUNCTION berth_delete_app_domains();

-- Domain jobs: 'site' renders and applies an app's nginx site from its
-- domains (built at dispatch, so a queued one always carries the newest
-- state); 'acme' is one step of an issuance on the agent (csr, present,
-- cleanup, install, inspect). params is the step's input and result what
-- the agent returned (CSR, certificate facts); neither holds a secret.
ALTER TABLE deployments DROP CONSTRAINT deployments_kind_check;
ALTER TABLE deployments ADD CONSTRAINT deployments_kind_check CHECK (kind IN ('deploy', 'delete', 'process', 'schedule', 'site', 'acme'));
ALTER TABLE deployments ADD COLUMN params jsonb;
ALTER TABLE deployments ADD COLUMN result jsonb;
ALTER TABLE deployments ADD CONSTRAINT deployments_params_check CHECK (params IS NULL OR octet_length(params::text) <= 262144);
ALTER TABLE deployments ADD CONSTRAINT deployments_result_check CHECK (result IS NULL OR octet_length(result::text) <= 262144);
