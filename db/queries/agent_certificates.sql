-- name: CreateAgentCertificate :one
INSERT INTO agent_certificates (id, server_id, serial, issued_for, not_before, not_after)
VALUES (sqlc.arg(id), sqlc.arg(server_id), sqlc.arg(serial), sqlc.arg(issued_for), sqlc.arg(not_before), sqlc.arg(not_after))
RETURNING *;

-- name: GetAgentCertificateBySerial :one
SELECT * FROM agent_certificates WHERE serial = sqlc.arg(serial);

-- name: CheckAgentCertificate :one
-- What the controller checks on every agent connection: the serial was
-- issued to this server, is not revoked, and the server exists and is not
-- disabled.
SELECT (c.revoked_at IS NOT NULL)::boolean AS revoked, s.status AS server_status
FROM agent_certificates c
JOIN servers s ON s.id = c.server_id
WHERE c.serial = sqlc.arg(serial) AND c.server_id = sqlc.arg(server_id);

-- name: RevokeAgentCertificatesForServer :execrows
UPDATE agent_certificates SET revoked_at = now(), revoke_reason = sqlc.arg(reason)
WHERE server_id = sqlc.arg(server_id) AND revoked_at IS NULL;

-- name: RevokeAgentCertificate :execrows
UPDATE agent_certificates SET revoked_at = now(), revoke_reason = sqlc.arg(reason)
WHERE serial = sqlc.arg(serial) AND revoked_at IS NULL;

-- name: ListAgentCertificates :many
SELECT * FROM agent_certificates WHERE server_id = sqlc.arg(server_id) ORDER BY id DESC;
