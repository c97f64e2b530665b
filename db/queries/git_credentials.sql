-- git_credentials: the secret (credentials) is sealed in Go with the row id
-- bound in; these queries only move ciphertext.

-- name: CreateGitCredential :one
INSERT INTO git_credentials (id, name, kind, credentials, public_key, fingerprint, username, allowed_hosts, known_hosts)
VALUES (sqlc.arg(id), sqlc.arg(name), sqlc.arg(kind), sqlc.arg(credentials), sqlc.narg(public_key), sqlc.narg(fingerprint), sqlc.narg(username),
        sqlc.arg(allowed_hosts)::text[], sqlc.arg(known_hosts))
RETURNING *;

-- name: GetGitCredential :one
SELECT * FROM git_credentials WHERE id = sqlc.arg(id);

-- name: GetGitCredentialByName :one
SELECT * FROM git_credentials WHERE name = sqlc.arg(name);

-- name: ListGitCredentials :many
-- Newest first; keyset paging on the ULID id.
SELECT * FROM git_credentials
WHERE (sqlc.narg(kind)::text IS NULL OR kind = sqlc.narg(kind))
  AND (sqlc.narg(before)::uuid IS NULL OR id < sqlc.narg(before))
ORDER BY id DESC
LIMIT sqlc.arg(lim);

-- name: UpdateGitCredentialSecret :one
-- Replaces the secret and the public parts that go with it; the kind stays.
UPDATE git_credentials
SET credentials = sqlc.arg(credentials), public_key = sqlc.narg(public_key),
    fingerprint = sqlc.narg(fingerprint), username = sqlc.narg(username)
WHERE id = sqlc.arg(id)
RETURNING *;

-- name: RenameGitCredential :one
UPDATE git_credentials SET name = sqlc.arg(name) WHERE id = sqlc.arg(id) RETURNING *;

-- name: TouchGitCredential :execrows
UPDATE git_credentials SET last_used_at = now() WHERE id = sqlc.arg(id);

-- name: DeleteGitCredential :execrows
DELETE FROM git_credentials WHERE id = sqlc.arg(id);

-- name: GetGitCredentialForUpdate :one
-- Locks the row while an app is attached (the first attach sets
-- allowed_hosts) or its pinned host keys change.
SELECT * FROM git_credentials WHERE id = sqlc.arg(id) FOR UPDATE;

-- name: SetGitCredentialAllowedHosts :one
UPDATE git_credentials SET allowed_hosts = sqlc.arg(allowed_hosts)::text[] WHERE id = sqlc.arg(id) RETURNING *;

-- name: SetGitCredentialKnownHosts :one
UPDATE git_credentials SET known_hosts = sqlc.arg(known_hosts) WHERE id = sqlc.arg(id) RETURNING *;

-- name: InsertGitCredentialShare :execrows
INSERT INTO git_credential_shares (git_credential_id, user_id)
VALUES (sqlc.arg(git_credential_id), sqlc.arg(user_id))
ON CONFLICT DO NOTHING;

-- name: DeleteGitCredentialShare :execrows
DELETE FROM git_credential_shares WHERE git_credential_id = sqlc.arg(git_credential_id) AND user_id = sqlc.arg(user_id);

-- name: GitCredentialSharedWith :one
SELECT EXISTS (
    SELECT 1 FROM git_credential_shares WHERE git_credential_id = sqlc.arg(git_credential_id) AND user_id = sqlc.arg(user_id)
) AS shared;

-- name: ListGitCredentialShareEmails :many
SELECT u.email FROM git_credential_shares s JOIN users u ON u.id = s.user_id
WHERE s.git_credential_id = sqlc.arg(git_credential_id)
ORDER BY u.email;
