-- name: CreateAgentCertificate :one
INSERT INTO agent_certificates (id, server_id, serial, issued_for, not_before, not_after, spki_sha256)
VALUES (sqlc.arg(id), sqlc.arg(server_id), sqlc.arg(serial), sqlc.arg(issued_for), sqlc.arg(not_before), sqlc.arg(not_after), sqlc.narg(spki_sha256))
RETURNING *;

-- name: GetAgentCertificateBySerial :one
SELECT * FROM agent_certificates WHERE serial = sqlc.arg(serial);

-- name: CheckAgentCertificate :one
-- What the controller checks on every agent connection: the serial was
-- issued to this server, is not revoked, and the server exists and is not
-- disabled. spki_sha256 is the key the serial was issued for; superseded
-- counts the server's older certificates still live, which a connection
-- with this (newer) one revokes.
SELECT (c.revoked_at IS NOT NULL)::boolean AS revoked, s.status AS server_status, c.spki_sha256,
       (SELECT count(*) FROM agent_certificates o
        WHERE o.server_id = c.server_id AND o.id < c.id AND o.revoked_at IS NULL)::bigint AS superseded
FROM agent_certificates c
JOIN servers s ON s.id = c.server_id
WHERE c.serial = sqlc.arg(serial) AND c.server_id = sqlc.arg(server_id);

-- name: RevokeAgentCertificatesForServer :execrows
UPDATE agent_certificates SET revoked_at = now(), revoke_reason = sqlc.arg(reason)
WHERE server_id = sqlc.arg(server_id) AND revoked_at IS NULL;

-- name: RevokeAgentCertificate :many
UPDATE agent_certificates SET revoked_at = now(), revoke_reason = sqlc.arg(reason)
WHERE serial = sqlc.arg(serial) AND revoked_at IS NULL
RETURNING server_id;

-- name: PinAgentCertificateKey :execrows
-- Records the key of a certificate issued before keys were recorded, on its
-- first connection (migration 000024); a recorded key is never replaced.
UPDATE agent_certificates SET spki_sha256 = sqlc.arg(spki_sha256)
WHERE serial = sqlc.arg(serial) AND server_id = sqlc.arg(server_id) AND spki_sha256 IS NULL;

-- name: RevokeSupersededAgentCertificates :many
-- A server's certificates older than the one now in use, revoked once the
-- renewed one has connected.
UPDATE agent_certificates o SET revoked_at = now(), revoke_reason = 'superseded by renewal'
FROM agent_certificates c
WHERE c.serial = sqlc.arg(serial) AND c.server_id = sqlc.arg(server_id)
  AND o.server_id = c.server_id AND o.id < c.id AND o.revoked_at IS NULL
RETURNING o.serial;

-- name: LockServerForRenewal :one
-- Taken first by a renewal and by disable/remove, so the two cannot
-- interleave: a renewal that waited for a disable sees it, and a disable
-- that waited for a renewal revokes what it issued.
SELECT s.status AS server_status, (c.revoked_at IS NOT NULL)::boolean AS revoked
FROM servers s
JOIN agent_certificates c ON c.server_id = s.id AND c.serial = sqlc.arg(serial)
WHERE s.id = sqlc.arg(server_id)
FOR UPDATE OF s;

-- name: LockServer :one
SELECT status FROM servers WHERE id = sqlc.arg(id) FOR UPDATE;

-- name: CountAgentRenewalsSince :one
SELECT count(*) FROM agent_certificates
WHERE server_id = sqlc.arg(server_id) AND issued_for = 'renew' AND created_at >= sqlc.arg(since)::timestamptz;

-- name: ListAgentCertificates :many
SELECT * FROM agent_certificates WHERE server_id = sqlc.arg(server_id) ORDER BY id DESC;
