-- users: two_factor_secret and recovery_codes are sealed in Go with the row
-- id bound in. Ordinary queries may return them (the store's converter drops
-- them); only the dedicated *TwoFactor* / *RecoveryCodes* queries write them.

-- name: CreateUser :one
-- disabled_at follows status, so the pair always satisfies users_disabled_at_check.
INSERT INTO users (id, email, name, password_hash, password_changed_at, role, status, disabled_at)
VALUES (
    sqlc.arg(id), sqlc.arg(email), sqlc.arg(name), sqlc.narg(password_hash),
    CASE WHEN sqlc.narg(password_hash)::text IS NOT NULL THEN now() END,
    sqlc.arg(role), sqlc.arg(status),
    CASE WHEN sqlc.arg(status)::text = 'disabled' THEN now() END
)
RETURNING *;

-- name: GetUser :one
SELECT * FROM users WHERE id = sqlc.arg(id);

-- name: GetUserByEmail :one
-- Served by users_email_lower_key.
SELECT * FROM users WHERE lower(email) = lower(sqlc.arg(email)::text);

-- name: ListUsers :many
-- Newest first; keyset paging on the ULID id.
SELECT * FROM users
WHERE (sqlc.narg(status)::text IS NULL OR status = sqlc.narg(status))
  AND (sqlc.narg(role)::text IS NULL OR role = sqlc.narg(role))
  AND (sqlc.narg(before)::uuid IS NULL OR id < sqlc.narg(before))
ORDER BY id DESC
LIMIT sqlc.arg(lim);

-- name: CountUsers :one
SELECT count(*) FROM users
WHERE (sqlc.narg(status)::text IS NULL OR status = sqlc.narg(status))
  AND (sqlc.narg(role)::text IS NULL OR role = sqlc.narg(role));

-- name: UpdateUserProfile :one
-- NULL leaves a field as it is.
UPDATE users
SET email = coalesce(sqlc.narg(email), email),
    name  = coalesce(sqlc.narg(name), name)
WHERE id = sqlc.arg(id)
RETURNING *;

-- name: SetUserRole :one
UPDATE users SET role = sqlc.arg(role) WHERE id = sqlc.arg(id) RETURNING *;

-- name: SetUserStatus :one
-- disabled_at follows status; it keeps its first value if already disabled.
-- Activating a user without a password violates users_active_password_check.
UPDATE users
SET status = sqlc.arg(status),
    disabled_at = CASE WHEN sqlc.arg(status)::text = 'disabled' THEN coalesce(disabled_at, now()) END
WHERE id = sqlc.arg(id)
RETURNING *;

-- name: SetUserPassword :one
UPDATE users
SET password_hash = sqlc.arg(password_hash), password_changed_at = now()
WHERE id = sqlc.arg(id)
RETURNING *;

-- name: AcceptUserInvite :one
-- An invited user's first password makes the account active, in one statement.
UPDATE users
SET password_hash = sqlc.arg(password_hash), password_changed_at = now(), status = 'active'
WHERE id = sqlc.arg(id) AND status = 'invited'
RETURNING *;

-- name: GetUserPasswordHash :one
SELECT password_hash FROM users WHERE id = sqlc.arg(id);

-- name: RecordUserLogin :exec
UPDATE users SET last_login_at = now(), last_login_ip = sqlc.narg(ip) WHERE id = sqlc.arg(id);

-- name: DeleteUser :execrows
DELETE FROM users WHERE id = sqlc.arg(id);

-- name: SetUserTwoFactorSecret :execrows
-- Starts (or restarts) an enrolment: the new secret is unconfirmed, so 2FA is
-- not enforced until ConfirmUserTwoFactor, and the replay counter starts over.
UPDATE users
SET two_factor_secret = sqlc.arg(secret),
    two_factor_confirmed_at = NULL,
    two_factor_last_used_step = NULL
WHERE id = sqlc.arg(id);

-- name: ConfirmUserTwoFactor :one
-- The confirming code's step is the first one used, so it cannot be replayed
-- at the next login.
UPDATE users
SET two_factor_confirmed_at = now(), two_factor_last_used_step = sqlc.arg(step)
WHERE id = sqlc.arg(id) AND two_factor_secret IS NOT NULL AND two_factor_confirmed_at IS NULL
RETURNING *;

-- name: DisableUserTwoFactor :one
UPDATE users
SET two_factor_secret = NULL, two_factor_confirmed_at = NULL, two_factor_last_used_step = NULL,
    recovery_codes = NULL, recovery_codes_generated_at = NULL
WHERE id = sqlc.arg(id)
RETURNING *;

-- name: GetUserTwoFactorSecret :one
SELECT two_factor_secret FROM users WHERE id = sqlc.arg(id);

-- name: UseUserTOTPStep :execrows
-- Compare-and-set on the highest accepted step: of two logins presenting the
-- same code, exactly one updates the row; the other is a replay.
UPDATE users
SET two_factor_last_used_step = sqlc.arg(step)
WHERE id = sqlc.arg(id)
  AND two_factor_secret IS NOT NULL
  AND (two_factor_last_used_step IS NULL OR two_factor_last_used_step < sqlc.arg(step));

-- name: SetUserRecoveryCodes :execrows
-- NULL clears them (and the generation time).
UPDATE users
SET recovery_codes = sqlc.narg(codes),
    recovery_codes_generated_at = CASE WHEN sqlc.narg(codes)::bytea IS NULL THEN NULL ELSE now() END
WHERE id = sqlc.arg(id);

-- name: GetUserRecoveryCodes :one
SELECT recovery_codes FROM users WHERE id = sqlc.arg(id);

-- name: LockUserRecoveryCodes :one
-- Inside a transaction: holds the row so two uses of one code serialise.
SELECT recovery_codes FROM users WHERE id = sqlc.arg(id) FOR UPDATE;

-- name: ReplaceUserRecoveryCodes :exec
-- Rewrites the remaining codes after one was used; keeps the generation time.
UPDATE users SET recovery_codes = sqlc.arg(codes) WHERE id = sqlc.arg(id);

-- name: LockActiveAdmins :many
-- Inside a transaction, before disabling (or demoting) an admin: holds the
-- active admins' rows, so two concurrent changes cannot both see "another
-- admin remains" and leave none. A waiting transaction re-reads the rows
-- after the first commits and no longer counts the one it disabled.
SELECT id FROM users WHERE role = 'admin' AND status = 'active' ORDER BY id FOR UPDATE;
