-- git_credentials: the secret (credentials) is sealed in Go with the row id
-- bound in; these queries only move ciphertext.

-- name: CreateGitCredential :one
INSERT INTO git_credentials (id, name, kind, credentials, public_key, fingerprint, username)
VALUES (sqlc.arg(id), sqlc.arg(name), sqlc.arg(kind), sqlc.arg(credentials), sqlc.narg(public_key), sqlc.narg(fingerprint), sqlc.narg(username))
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
