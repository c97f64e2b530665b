-- domains: host names routed to an app on its server. server_id is always
-- copied from the app (the composite foreign key keeps it so).

-- name: CreateDomain :one
-- Returns no row when the app does not exist.
INSERT INTO domains (
    id, app_id, server_id, hostname, is_primary, redirect_to, redirect_status, force_https,
    tls_mode, acme_directory_url, tls_cert_path, tls_key_path, tls_status
)
SELECT sqlc.arg(id)::uuid, a.id, a.server_id, sqlc.arg(hostname)::text, sqlc.arg(is_primary)::boolean,
       sqlc.narg(redirect_to)::text, sqlc.arg(redirect_status)::smallint, sqlc.arg(force_https)::boolean,
       sqlc.arg(tls_mode)::text, sqlc.narg(acme_directory_url)::text,
       sqlc.narg(tls_cert_path)::text, sqlc.narg(tls_key_path)::text,
       CASE WHEN sqlc.arg(tls_mode)::text = 'off' THEN 'disabled' ELSE 'pending' END
FROM apps a
WHERE a.id = sqlc.arg(app_id)
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
