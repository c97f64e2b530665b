-- acme_accounts and dns_providers: the controller's ACME client state.

-- name: GetACMEAccount :one
SELECT * FROM acme_accounts WHERE directory_url = sqlc.arg(directory_url) AND email = sqlc.arg(email);

-- name: CreateACMEAccount :one
-- A concurrent creation of the same account keeps the first.
INSERT INTO acme_accounts (id, directory_url, email, private_key)
VALUES (sqlc.arg(id), sqlc.arg(directory_url), sqlc.arg(email), sqlc.arg(private_key))
ON CONFLICT (directory_url, email) DO NOTHING
RETURNING *;

-- name: SetACMEAccountRegistration :exec
UPDATE acme_accounts SET registration_uri = sqlc.arg(registration_uri) WHERE id = sqlc.arg(id);

-- name: CreateDNSProvider :one
INSERT INTO dns_providers (id, name, provider, credentials)
VALUES (sqlc.arg(id), sqlc.arg(name), sqlc.arg(provider), sqlc.arg(credentials))
RETURNING *;

-- name: GetDNSProvider :one
SELECT * FROM dns_providers WHERE id = sqlc.arg(id);

-- name: GetDNSProviderByName :one
SELECT * FROM dns_providers WHERE name = sqlc.arg(name);

-- name: ListDNSProviders :many
SELECT * FROM dns_providers ORDER BY name;

-- name: DeleteDNSProvider :execrows
DELETE FROM dns_providers WHERE id = sqlc.arg(id);
