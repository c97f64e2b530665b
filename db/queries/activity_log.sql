-- activity_log: who did what to which subject. changes never holds secrets.

-- name: CreateActivity :one
INSERT INTO activity_log (id, user_id, actor_type, actor, action, subject_type, subject_id, subject_name,
                          changes, ip_address, user_agent)
VALUES (sqlc.arg(id), sqlc.narg(user_id), sqlc.arg(actor_type), sqlc.arg(actor), sqlc.arg(action),
        sqlc.narg(subject_type), sqlc.narg(subject_id), sqlc.narg(subject_name), sqlc.arg(changes)::jsonb,
        sqlc.narg(ip_address), sqlc.narg(user_agent))
RETURNING *;

-- name: ListActivity :many
-- The activity page and a subject's history: newest first, keyset paging on
-- the ULID id, every filter optional.
SELECT * FROM activity_log
WHERE (sqlc.narg(user_id)::uuid IS NULL OR user_id = sqlc.narg(user_id))
  AND (sqlc.narg(actor_type)::text IS NULL OR actor_type = sqlc.narg(actor_type))
  AND (sqlc.narg(action)::text IS NULL OR action = sqlc.narg(action))
  AND (sqlc.narg(subject_type)::text IS NULL OR subject_type = sqlc.narg(subject_type))
  AND (sqlc.narg(subject_id)::uuid IS NULL OR subject_id = sqlc.narg(subject_id))
  AND (sqlc.narg(since)::timestamptz IS NULL OR created_at >= sqlc.narg(since))
  AND (sqlc.narg(before)::uuid IS NULL OR id < sqlc.narg(before))
ORDER BY id DESC
LIMIT sqlc.arg(lim);
