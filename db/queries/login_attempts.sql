-- login_attempts: the login trail and the throttling windows.

-- name: CreateLoginAttempt :one
INSERT INTO login_attempts (id, user_id, email, ip_address, user_agent, stage, result, reason)
VALUES (sqlc.arg(id), sqlc.narg(user_id), sqlc.arg(email), sqlc.narg(ip_address), sqlc.narg(user_agent),
        sqlc.arg(stage), sqlc.arg(result), sqlc.narg(reason))
RETURNING *;

-- name: CountLoginFailuresByEmail :one
-- Failed attempts for an account since a time (lower(email) index), and the
-- latest one, from which the caller computes the growing delay. Throttled
-- attempts do not count: waiting out a delay must not lengthen it.
-- last_failure_at is meaningless when failures is 0 (sqlc cannot type a
-- nullable max).
SELECT count(*) AS failures, coalesce(max(created_at), 'epoch')::timestamptz AS last_failure_at
FROM login_attempts
WHERE lower(email) = lower(sqlc.arg(email)::text)
  AND created_at >= sqlc.arg(since)::timestamptz
  AND result = 'failed';

-- name: CountLoginFailuresByIP :one
SELECT count(*) AS failures, coalesce(max(created_at), 'epoch')::timestamptz AS last_failure_at
FROM login_attempts
WHERE ip_address = sqlc.arg(ip)::inet
  AND created_at >= sqlc.arg(since)::timestamptz
  AND result = 'failed';

-- name: ListLoginAttempts :many
-- Newest first; keyset paging on the ULID id.
SELECT * FROM login_attempts
WHERE (sqlc.narg(user_id)::uuid IS NULL OR user_id = sqlc.narg(user_id))
  AND (sqlc.narg(email)::text IS NULL OR lower(email) = lower(sqlc.narg(email)))
  AND (sqlc.narg(ip)::inet IS NULL OR ip_address = sqlc.narg(ip))
  AND (sqlc.narg(result)::text IS NULL OR result = sqlc.narg(result))
  AND (sqlc.narg(since)::timestamptz IS NULL OR created_at >= sqlc.narg(since))
  AND (sqlc.narg(before)::uuid IS NULL OR id < sqlc.narg(before))
ORDER BY id DESC
LIMIT sqlc.arg(lim);

-- name: CreateLoginAttemptAt :one
-- CreateLoginAttempt with the time given by the caller: the accounts service
-- counts its throttling windows on its own clock (injectable in tests), so
-- the rows it counts must carry that clock's time.
INSERT INTO login_attempts (id, user_id, email, ip_address, user_agent, stage, result, reason, created_at)
VALUES (sqlc.arg(id), sqlc.narg(user_id), sqlc.arg(email), sqlc.narg(ip_address), sqlc.narg(user_agent),
        sqlc.arg(stage), sqlc.arg(result), sqlc.narg(reason), sqlc.arg(created_at))
RETURNING *;

-- name: CountPasswordResetRequests :one
-- Accepted password reset requests since a time for an email (any case) or
-- from an address, and the oldest of them, from which the caller says when
-- the window frees up. oldest_at is meaningless when requests is 0.
SELECT count(*) AS requests, coalesce(min(created_at), 'epoch')::timestamptz AS oldest_at
FROM login_attempts
WHERE stage = 'password_reset'
  AND result = 'succeeded'
  AND created_at >= sqlc.arg(since)::timestamptz
  AND (lower(email) = lower(sqlc.narg(email)::text) OR ip_address = sqlc.narg(ip)::inet);

-- name: LockPasswordResetWindow :exec
-- Serialises reset requests for one key (an email or an address) for the
-- transaction, so a burst cannot all pass the count before any is recorded.
SELECT pg_advisory_xact_lock(hashtextextended('password_reset:' || sqlc.arg(key)::text, 0));
