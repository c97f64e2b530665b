-- domains: host names routed to an app on its server. server_id is always
-- copied from the app (the composite foreign key keeps it so).

-- name: CreateDomain :one
-- Returns no row when the app does not exist.
INSERT INTO domains (
    id, app_id, server_id, hostname, is_primary, redirect_to, redirect_status, force_https,
    tls_mode, acme_directory_url, tls_cert_path, tls_key_path, tls_status, hsts, dns_provider_id
)
SELECT sqlc.arg(id)::uuid, a.id, a.server_id, sqlc.arg(hostname)::text, sqlc.arg(is_primary)::boolean,
       sqlc.narg(redirect_to)::text, sqlc.arg(redirect_status)::smallint, sqlc.arg(force_https)::boolean,
       sqlc.arg(tls_mode)::text, sqlc.narg(acme_directory_url)::text,
       sqlc.narg(tls_cert_path)::text, sqlc.narg(tls_key_path)::text,
       CASE WHEN sqlc.arg(tls_mode)::text = 'off' THEN 'disabled' ELSE 'pending' END,
       sqlc.arg(hsts)::boolean, sqlc.narg(dns_provider_id)::uuid
FROM apps a
WHERE a.id = sqlc.arg(app_id) AND a.deleted_at IS NULL
RETURNING *;

-- name: GetDomain :one
SELECT * FROM domains WHERE id = sqlc.arg(id);

-- name: GetDomainByHostname :one
SELECT * FROM domains WHERE hostname = sqlc.arg(hostname);

-- name: ListDomainsForApp :many
-- The primary first, then by host name.
SELECT * FROM domains WHERE app_id = sqlc.arg(app_id) ORDER BY is_primary DESC, hostname;

-- name: ListDomainsForServer :many
-- Every route the server's proxy serves, by host name.
SELECT * FROM domains WHERE server_id = sqlc.arg(server_id) ORDER BY hostname;

-- name: ListDomains :many
-- Newest first with optional filters; keyset paging.
SELECT * FROM domains
WHERE (sqlc.narg(app_id)::uuid IS NULL OR app_id = sqlc.narg(app_id))
  AND (sqlc.narg(server_id)::uuid IS NULL OR server_id = sqlc.narg(server_id))
  AND (sqlc.narg(status)::text IS NULL OR status = sqlc.narg(status))
  AND (sqlc.narg(tls_status)::text IS NULL OR tls_status = sqlc.narg(tls_status))
  AND (sqlc.narg(before)::uuid IS NULL OR id < sqlc.narg(before))
ORDER BY id DESC
LIMIT sqlc.arg(lim);

-- name: UpdateDomain :one
-- Replaces the routing and TLS settings. The route goes back to pending (the
-- agent must apply it); a changed TLS mode restarts TLS (disabled for off).
UPDATE domains SET
    redirect_to = sqlc.narg(redirect_to),
    redirect_status = sqlc.arg(redirect_status),
    force_https = sqlc.arg(force_https),
    acme_directory_url = sqlc.narg(acme_directory_url),
    tls_cert_path = sqlc.narg(tls_cert_path),
    tls_key_path = sqlc.narg(tls_key_path),
    tls_status = CASE WHEN sqlc.arg(tls_mode)::text = 'off' THEN 'disabled'
                      WHEN sqlc.arg(tls_mode)::text <> tls_mode THEN 'pending'
                      ELSE tls_status END,
    tls_mode = sqlc.arg(tls_mode)::text,
    hsts = sqlc.arg(hsts)::boolean,
    dns_provider_id = sqlc.narg(dns_provider_id)::uuid,
    status = 'pending',
    last_error = NULL
WHERE id = sqlc.arg(id)
RETURNING *;

-- name: ClearPrimaryDomain :exec
UPDATE domains SET is_primary = false WHERE app_id = sqlc.arg(app_id) AND is_primary;

-- name: SetPrimaryDomain :one
UPDATE domains SET is_primary = true WHERE id = sqlc.arg(id) RETURNING *;

-- name: SetDomainStatus :one
-- What the agent reports after applying the route.
UPDATE domains SET status = sqlc.arg(status), last_error = sqlc.narg(last_error)
WHERE id = sqlc.arg(id)
RETURNING *;

-- name: SetDomainTLS :one
-- What the agent reports about the certificate; unset fields are kept,
-- except last_error, which is replaced.
UPDATE domains SET
    tls_status = sqlc.arg(tls_status),
    tls_issuer = coalesce(sqlc.narg(tls_issuer), tls_issuer),
    tls_not_before = coalesce(sqlc.narg(tls_not_before)::timestamptz, tls_not_before),
    tls_expires_at = coalesce(sqlc.narg(tls_expires_at)::timestamptz, tls_expires_at),
    tls_last_attempt_at = coalesce(sqlc.narg(tls_last_attempt_at)::timestamptz, tls_last_attempt_at),
    tls_next_attempt_at = sqlc.narg(tls_next_attempt_at)::timestamptz,
    tls_last_error = sqlc.narg(tls_last_error)
WHERE id = sqlc.arg(id)
RETURNING *;

-- name: ListDomainsExpiringBefore :many
-- ACME certificates that expire before the cutoff, soonest first: the
-- renewal scan.
SELECT * FROM domains
WHERE tls_mode = 'acme' AND tls_expires_at < sqlc.arg(cutoff)::timestamptz
ORDER BY tls_expires_at, id
LIMIT sqlc.arg(lim);

-- name: ListDomainsTLSAttemptDue :many
-- Domains whose next issuance or renewal attempt is due.
SELECT * FROM domains
WHERE tls_next_attempt_at IS NOT NULL AND tls_next_attempt_at <= sqlc.arg(now)::timestamptz
ORDER BY tls_next_attempt_at, id
LIMIT sqlc.arg(lim);

-- name: DeleteDomain :execrows
DELETE FROM domains WHERE id = sqlc.arg(id);

-- name: ClaimDomainsTLSDue :many
-- The ACME and custom domains whose next certificate attempt is due, claimed
-- by this controller (FOR UPDATE SKIP LOCKED): their next attempt moves to
-- lease_until, so a controller that dies mid-issuance leaves them to be
-- tried again then, and no other controller takes them meanwhile.
WITH due AS MATERIALIZED (
    SELECT d.id FROM domains d
    WHERE d.tls_mode IN ('acme', 'custom') AND d.tls_next_attempt_at IS NOT NULL
      AND d.tls_next_attempt_at <= sqlc.arg(now)::timestamptz
    ORDER BY d.tls_next_attempt_at, d.id
    LIMIT sqlc.arg(lim)
    FOR UPDATE SKIP LOCKED
)
UPDATE domains u SET tls_next_attempt_at = sqlc.arg(lease_until)::timestamptz
FROM due WHERE u.id = due.id
RETURNING u.*;

-- name: SetDomainTLSAttempt :one
-- The whole outcome of an issuance, renewal or inspection.
UPDATE domains SET
    tls_status = sqlc.arg(tls_status),
    tls_issuer = sqlc.narg(tls_issuer),
    tls_not_before = sqlc.narg(tls_not_before)::timestamptz,
    tls_expires_at = sqlc.narg(tls_expires_at)::timestamptz,
    tls_last_attempt_at = sqlc.narg(tls_last_attempt_at)::timestamptz,
    tls_next_attempt_at = sqlc.narg(tls_next_attempt_at)::timestamptz,
    tls_last_error = sqlc.narg(tls_last_error),
    tls_certificate = sqlc.narg(tls_certificate),
    tls_serial = sqlc.narg(tls_serial),
    tls_failures = sqlc.arg(tls_failures),
    tls_ari_window_start = sqlc.narg(tls_ari_window_start)::timestamptz,
    tls_ari_window_end = sqlc.narg(tls_ari_window_end)::timestamptz,
    tls_ari_next_poll_at = sqlc.narg(tls_ari_next_poll_at)::timestamptz,
    tls_expiring_notified_at = CASE WHEN sqlc.narg(tls_serial)::text IS DISTINCT FROM tls_serial
                                    THEN NULL ELSE tls_expiring_notified_at END
WHERE id = sqlc.arg(id)
RETURNING *;

-- name: SetDomainNextAttempt :one
-- Asks for an attempt at a time (renew now, a new domain, a settings change).
UPDATE domains SET tls_next_attempt_at = sqlc.narg(at)::timestamptz,
                   tls_status = CASE WHEN tls_status = 'failed' AND sqlc.arg(reset)::boolean THEN 'pending' ELSE tls_status END
WHERE id = sqlc.arg(id)
RETURNING *;

-- name: SetDomainDNSProvider :one
UPDATE domains SET dns_provider_id = sqlc.narg(dns_provider_id)::uuid WHERE id = sqlc.arg(id) RETURNING *;

-- name: SetAppDomainsStatus :many
-- What the agent reported after applying the app's site, for the domains
-- the applied site held.
UPDATE domains SET status = sqlc.arg(status), last_error = sqlc.narg(last_error)
WHERE app_id = sqlc.arg(app_id) AND id = ANY (sqlc.arg(ids)::uuid[])
RETURNING *;

-- name: ExpireDomainCertificates :many
-- Certificates past their expiry are expired, never active.
UPDATE domains SET tls_status = 'expired'
WHERE tls_status IN ('active', 'failed') AND tls_expires_at <= sqlc.arg(now)::timestamptz
RETURNING *;

-- name: ClaimDomainsExpiring :many
-- Certificates within the warning window (window, or a third of the
-- certificate's lifetime when that is shorter: a 6-day certificate is
-- always within 14 days of expiry, and is late only once it should have
-- renewed) whose warning was not raised yet for this certificate; marked
-- raised in the same statement.
UPDATE domains SET tls_expiring_notified_at = sqlc.arg(now)::timestamptz
WHERE tls_mode IN ('acme', 'custom') AND tls_expires_at > sqlc.arg(now)::timestamptz
  AND tls_expires_at <= sqlc.arg(now)::timestamptz + LEAST(
        sqlc.arg(window_seconds)::bigint * interval '1 second',
        coalesce((tls_expires_at - tls_not_before) / 3, sqlc.arg(window_seconds)::bigint * interval '1 second'))
  AND tls_expiring_notified_at IS NULL
RETURNING *;

-- name: ListAllDomains :many
-- Every domain, soonest expiry first (no certificate last), then by name.
SELECT * FROM domains
WHERE (sqlc.narg(app_id)::uuid IS NULL OR app_id = sqlc.narg(app_id))
ORDER BY tls_expires_at NULLS LAST, hostname
LIMIT sqlc.arg(lim);

-- name: SetDeploymentParams :exec
UPDATE deployments SET params = sqlc.arg(params)::jsonb WHERE id = sqlc.arg(id);

-- name: SetDeploymentResultData :exec
UPDATE deployments SET result = sqlc.arg(result)::jsonb WHERE id = sqlc.arg(id);

-- name: GetDeploymentData :one
SELECT params, result FROM deployments WHERE id = sqlc.arg(id);

-- name: SetAppRouting :one
UPDATE apps SET upstream_url = sqlc.narg(upstream_url), static_root = sqlc.narg(static_root)
WHERE id = sqlc.arg(id) AND deleted_at IS NULL
RETURNING *;

-- name: ListAppsSiteBehindCertificates :many
-- Apps with an installed ACME certificate that the app's newest site job
-- does not carry (a certificate name on that host): the state a controller
-- that died between recording a certificate and queueing its site job
-- leaves. An app whose newest site job is not finished yet is left to it
-- (a queued job is built when sent, with the newest state). Per app, not
-- per domain: the newest site job's params (every host of the app) are
-- read once, and the hosts compared as arrays; the loop runs every tick.
WITH certs AS (
    SELECT d.app_id, array_agg(d.hostname::text) AS hosts
    FROM domains d
    JOIN apps a ON a.id = d.app_id AND a.deleted_at IS NULL
    WHERE d.tls_mode = 'acme' AND d.tls_serial IS NOT NULL
    GROUP BY d.app_id
)
SELECT c.app_id
FROM certs c
LEFT JOIN LATERAL (
    SELECT j.status, j.params FROM deployments j
    WHERE j.app_id = c.app_id AND j.kind = 'site'
    ORDER BY j.created_at DESC, j.id DESC
    LIMIT 1
) last ON true
WHERE (last.status IS NULL OR last.status NOT IN ('queued', 'dispatched', 'running'))
  AND NOT c.hosts <@ ARRAY(
      SELECT e ->> 'host' FROM jsonb_array_elements(coalesce(last.params -> 'site' -> 'domains', '[]'::jsonb)) e
      WHERE coalesce(e ->> 'certName', '') <> ''
  )
ORDER BY c.app_id
LIMIT sqlc.arg(lim);

-- name: ClaimDomainsARIDue :many
-- ACME certificates whose renewal information is due to be asked again,
-- claimed by this controller (FOR UPDATE SKIP LOCKED): the next poll moves
-- to lease_until, so no other controller asks meanwhile and one that dies
-- leaves the poll to be done again then.
WITH due AS MATERIALIZED (
    SELECT d.id FROM domains d
    WHERE d.tls_mode = 'acme' AND d.tls_certificate IS NOT NULL
      AND d.tls_ari_next_poll_at IS NOT NULL AND d.tls_ari_next_poll_at <= sqlc.arg(now)::timestamptz
    ORDER BY d.tls_ari_next_poll_at, d.id
    LIMIT sqlc.arg(lim)
    FOR UPDATE SKIP LOCKED
)
UPDATE domains u SET tls_ari_next_poll_at = sqlc.arg(lease_until)::timestamptz
FROM due WHERE u.id = due.id
RETURNING u.*;

-- name: SetDomainARI :one
-- A renewal-information poll's outcome for the certificate with serial
-- (none when it was replaced meanwhile): the window, when to ask again,
-- and, while the certificate is active and no attempt is under way, the
-- renewal time the window gives.
UPDATE domains SET
    tls_ari_window_start = coalesce(sqlc.narg(window_start)::timestamptz, tls_ari_window_start),
    tls_ari_window_end = coalesce(sqlc.narg(window_end)::timestamptz, tls_ari_window_end),
    tls_ari_next_poll_at = sqlc.arg(next_poll_at)::timestamptz,
    tls_next_attempt_at = CASE WHEN sqlc.narg(renew_at)::timestamptz IS NOT NULL AND tls_status = 'active'
                               THEN sqlc.narg(renew_at)::timestamptz ELSE tls_next_attempt_at END
WHERE id = sqlc.arg(id) AND tls_serial = sqlc.arg(serial)::text
RETURNING *;
