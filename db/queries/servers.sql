-- servers: ssh_private_key is sealed in Go with the row id bound in; only
-- SetServerSSHKey writes it and only GetServerSSHKey reads it for opening.

-- name: CreateServer :one
INSERT INTO servers (id, name, labels, join_token_hash, join_token_expires_at)
VALUES (sqlc.arg(id), sqlc.arg(name), sqlc.arg(labels)::jsonb,
        sqlc.narg(join_token_hash), sqlc.narg(join_token_expires_at))
RETURNING *;

-- name: GetServer :one
SELECT * FROM servers WHERE id = sqlc.arg(id);

-- name: GetServerByName :one
SELECT * FROM servers WHERE name = sqlc.arg(name);

-- name: ListServers :many
-- Newest first; keyset paging on the ULID id. labels is a selector:
-- {"env":"prod"} matches servers carrying at least those labels (GIN index).
SELECT * FROM servers
WHERE (sqlc.narg(status)::text IS NULL OR status = sqlc.narg(status))
  AND (sqlc.narg(labels)::jsonb IS NULL OR labels @> sqlc.narg(labels))
  AND (sqlc.narg(before)::uuid IS NULL OR id < sqlc.narg(before))
ORDER BY id DESC
LIMIT sqlc.arg(lim);

-- name: CountServersByStatus :many
SELECT status, count(*) AS servers FROM servers GROUP BY status ORDER BY status;

-- name: SetServerLabels :one
UPDATE servers SET labels = sqlc.arg(labels)::jsonb WHERE id = sqlc.arg(id) RETURNING *;

-- name: UpdateServerFacts :one
-- What the agent reports at enrollment. NULL leaves a field as it is.
UPDATE servers
SET facts = coalesce(sqlc.narg(facts)::jsonb, facts),
    hostname = coalesce(sqlc.narg(hostname), hostname),
    agent_version = coalesce(sqlc.narg(agent_version), agent_version)
WHERE id = sqlc.arg(id)
RETURNING *;

-- name: MarkServerSeen :one
-- A hello or heartbeat: the server is online as of now. A disabled server
-- stays disabled (its connection is being refused anyway): no row, not found.
-- previous_status lets the caller announce pending/offline -> online once.
UPDATE servers s
SET status = 'online', last_seen_at = now(), ip_address = coalesce(sqlc.narg(ip_address), s.ip_address)
FROM (SELECT p.id, p.status FROM servers p WHERE p.id = sqlc.arg(id) FOR UPDATE) prev
WHERE s.id = prev.id AND s.status <> 'disabled'
RETURNING sqlc.embed(s), prev.status AS previous_status;

-- name: ServerHello :one
-- An agent's hello: its facts as UpdateServerFacts and, as MarkServerSeen,
-- online as of now. One statement, so a fleet reconnecting
-- at once costs one row version and one commit per agent. A disabled
-- server gets no row (not found) and keeps its facts.
UPDATE servers s
SET status = 'online', last_seen_at = now(), ip_address = coalesce(sqlc.narg(ip_address), s.ip_address),
    facts = coalesce(sqlc.narg(facts)::jsonb, s.facts),
    hostname = coalesce(sqlc.narg(hostname), s.hostname),
    agent_version = coalesce(sqlc.narg(agent_version), s.agent_version)
FROM (SELECT p.id, p.status FROM servers p WHERE p.id = sqlc.arg(id) FOR UPDATE) prev
WHERE s.id = prev.id AND s.status <> 'disabled'
RETURNING sqlc.embed(s), prev.status AS previous_status;

-- name: SetServerStatus :one
-- pending/online/offline transitions; never out of or into disabled (that
-- needs disabled_at: SetServerDisabled).
UPDATE servers SET status = sqlc.arg(status)
WHERE id = sqlc.arg(id) AND status <> 'disabled'
RETURNING *;

-- name: ListStaleServers :many
-- Online servers not heard from since cutoff (servers_last_seen_at_idx).
SELECT * FROM servers
WHERE status = 'online' AND last_seen_at < sqlc.arg(cutoff)::timestamptz
ORDER BY last_seen_at;

-- name: MarkStaleServersOffline :many
-- The offline sweep in one statement: a heartbeat that lands meanwhile moves
-- last_seen_at, the row no longer matches on recheck, and it stays online.
UPDATE servers SET status = 'offline'
WHERE status = 'online' AND last_seen_at < sqlc.arg(cutoff)::timestamptz
RETURNING *;

-- name: DisableServer :one
UPDATE servers SET status = 'disabled', disabled_at = coalesce(disabled_at, now())
WHERE id = sqlc.arg(id)
RETURNING *;

-- name: EnableServer :one
-- Back to offline (pending if it never enrolled); the next heartbeat brings
-- it online.
UPDATE servers
SET status = CASE WHEN enrolled_at IS NULL THEN 'pending' ELSE 'offline' END, disabled_at = NULL
WHERE id = sqlc.arg(id) AND status = 'disabled'
RETURNING *;

-- name: DeleteServer :execrows
DELETE FROM servers WHERE id = sqlc.arg(id);

-- name: SetServerJoinToken :one
-- A new one-time join token (re-enrolment), replacing any unused one.
UPDATE servers
SET join_token_hash = sqlc.arg(token_hash), join_token_expires_at = sqlc.arg(expires_at)::timestamptz
WHERE id = sqlc.arg(id)
RETURNING *;

-- name: ConsumeServerJoinToken :one
-- Enrolment, single use in one statement: of two concurrent uses one clears
-- the hash and the other finds nothing. An expired token or a disabled
-- server matches nothing.
UPDATE servers
SET join_token_hash = NULL, join_token_expires_at = NULL, enrolled_at = now()
WHERE join_token_hash = sqlc.arg(token_hash)
  AND join_token_expires_at > now()
  AND status <> 'disabled'
RETURNING *;

-- name: SetServerSSHKey :execrows
UPDATE servers SET ssh_private_key = sqlc.narg(ssh_private_key) WHERE id = sqlc.arg(id);

-- name: GetServerSSHKey :one
SELECT ssh_private_key FROM servers WHERE id = sqlc.arg(id);

-- name: MarkServersSeen :execrows
-- Heartbeats of many servers in one statement: the controller gathers them
-- in memory and flushes every few seconds, so 10,000 agents cost a handful
-- of writes a second instead of a thousand. Disabled servers stay disabled.
UPDATE servers s
SET status = 'online', last_seen_at = GREATEST(coalesce(s.last_seen_at, v.seen_at), v.seen_at)
FROM (SELECT unnest(sqlc.arg(ids)::uuid[]) AS id, unnest(sqlc.arg(seen_at)::timestamptz[]) AS seen_at) AS v
WHERE s.id = v.id AND s.status <> 'disabled';

-- name: LockServersForSeen :exec
-- Heartbeat flush: lock a chunk of servers in id order first, the order
-- metrics group commit locks them in, so the two never deadlock.
SELECT id FROM servers
WHERE id = ANY(sqlc.arg(ids)::uuid[])
ORDER BY id
FOR NO KEY UPDATE;

-- name: LockServersForIngest :many
-- Group commit of metrics: lock every server of the group in id order (so
-- two groups never deadlock) and read their committed sequence numbers.
SELECT id, metrics_seq FROM servers
WHERE id = ANY(sqlc.arg(ids)::uuid[])
ORDER BY id
FOR NO KEY UPDATE;

-- name: SetServersMetricsSeq :exec
-- Group commit of metrics: advance the sequences of the accepted batches
-- (their rows are locked by LockServersForIngest in this transaction).
UPDATE servers s SET metrics_seq = v.seq
FROM (SELECT unnest(sqlc.arg(ids)::uuid[]) AS id, unnest(sqlc.arg(seqs)::bigint[]) AS seq) AS v
WHERE s.id = v.id;

-- name: SetServerAllowRoot :one
UPDATE servers SET allow_root = sqlc.arg(allow_root) WHERE id = sqlc.arg(id) RETURNING *;
