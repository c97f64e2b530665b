-- notify_outbox: one row per (event, channel) to send, and digests.

-- name: InsertNotifyOutbox :one
INSERT INTO notify_outbox (id, channel_id, event_id, dedupe_key, resolves, status, digest_title, digest_body, next_attempt_at, created_at)
VALUES (sqlc.arg(id), sqlc.arg(channel_id), sqlc.narg(event_id), sqlc.narg(dedupe_key), sqlc.arg(resolves), sqlc.arg(status),
        sqlc.narg(digest_title), sqlc.narg(digest_body), sqlc.arg(created_at), sqlc.arg(created_at))
RETURNING *;

-- name: LastNotifyOutboxForKey :one
-- The channel's latest message about a condition, merged repeats aside.
SELECT * FROM notify_outbox
WHERE channel_id = sqlc.arg(channel_id) AND dedupe_key = sqlc.arg(dedupe_key) AND status <> 'merged'
ORDER BY created_at DESC, id DESC
LIMIT 1;

-- name: SetNotifyOutboxStatus :exec
UPDATE notify_outbox SET status = sqlc.arg(status), locked_until = NULL WHERE id = sqlc.arg(id);

-- name: CountNotifyOutboxSince :one
-- What counts against a channel's rate limit: messages sent or to be sent.
SELECT count(*) FROM notify_outbox
WHERE channel_id = sqlc.arg(channel_id) AND created_at >= sqlc.arg(since)
  AND status IN ('pending', 'delivered', 'failed');

-- name: ClaimNotifyOutbox :many
-- Takes up to lim due rows for this worker: SKIP LOCKED so concurrent
-- claimers never take the same row, and a lease so that once this short
-- transaction commits, others leave the row alone until the lease ends.
UPDATE notify_outbox o
SET locked_until = sqlc.arg(lease_until), attempts = o.attempts + 1
WHERE o.id IN (
    SELECT x.id FROM notify_outbox x
    WHERE x.status = 'pending' AND x.next_attempt_at <= sqlc.arg(now)
      AND (x.locked_until IS NULL OR x.locked_until <= sqlc.arg(now))
      -- A "resolved" message waits while the message that opened its
      -- condition is still to be sent (retrying after a failure), so a
      -- receiver never hears the end of something before its start.
      AND NOT (x.resolves AND EXISTS (
          SELECT 1 FROM notify_outbox y
          WHERE y.channel_id = x.channel_id AND y.dedupe_key = x.dedupe_key
            AND y.status = 'pending' AND NOT y.resolves AND y.created_at <= x.created_at AND y.id <> x.id))
    ORDER BY x.next_attempt_at, x.id
    LIMIT sqlc.arg(lim)
    FOR UPDATE SKIP LOCKED)
RETURNING o.*;

-- name: MarkNotifyOutboxDelivered :execrows
UPDATE notify_outbox
SET status = 'delivered', delivered_at = sqlc.arg(at), locked_until = NULL, last_error = NULL
WHERE id = sqlc.arg(id) AND status = 'pending';

-- name: RetryNotifyOutbox :execrows
-- Only the lease holder records a failure: locked_until is the claim's
-- fencing token, so a worker whose lease ran out (and whose row another
-- worker has taken since) cannot clear the new holder's lease and let a
-- third worker send the message at the same time.
UPDATE notify_outbox
SET next_attempt_at = sqlc.arg(next_attempt_at), locked_until = NULL, last_error = sqlc.arg(last_error)
WHERE id = sqlc.arg(id) AND status = 'pending' AND locked_until = sqlc.arg(lease);

-- name: FailNotifyOutbox :execrows
-- Like RetryNotifyOutbox, only for the lease holder.
UPDATE notify_outbox
SET status = 'failed', locked_until = NULL, last_error = sqlc.arg(last_error)
WHERE id = sqlc.arg(id) AND status = 'pending' AND locked_until = sqlc.arg(lease);

-- name: RecordNotifyOutboxRecipients :execrows
-- An email attempt's outcome per address: those the server accepted the
-- message for and those it refused permanently (address -> reply). Not
-- fenced by the lease, like a delivery: they have (or will never get) the
-- message whoever holds the row, and a later attempt must not send again.
UPDATE notify_outbox
SET delivered_to = ARRAY(SELECT DISTINCT a FROM unnest(delivered_to || sqlc.arg(delivered)::text[]) AS a ORDER BY a),
    refused_to = refused_to || sqlc.arg(refused)::jsonb
WHERE id = sqlc.arg(id) AND status = 'pending';

-- name: EndNotifyOutboxRefused :execrows
-- Every address of an email message got it or was refused permanently, and
-- some were refused: the message ends failed (a give-up for those), with
-- delivered_at when the others got it.
UPDATE notify_outbox
SET status = 'failed', locked_until = NULL, last_error = sqlc.arg(last_error),
    delivered_at = CASE WHEN cardinality(delivered_to) > 0 THEN sqlc.arg(at)::timestamptz END
WHERE id = sqlc.arg(id) AND status = 'pending';

-- name: GetNotifyOutbox :one
SELECT * FROM notify_outbox WHERE id = sqlc.arg(id);

-- name: ListNotifyOutboxForEvent :many
SELECT * FROM notify_outbox WHERE event_id = sqlc.arg(event_id) ORDER BY channel_id;

-- name: NotifyChannelsWithHeld :many
SELECT DISTINCT channel_id FROM notify_outbox WHERE status = 'held';

-- name: HeldNotifyOutbox :many
-- A channel's held-back messages with their events, oldest first.
SELECT o.id, e.kind, e.level, e.title, e.created_at
FROM notify_outbox o JOIN notify_events e ON e.id = o.event_id
WHERE o.channel_id = sqlc.arg(channel_id) AND o.status = 'held'
ORDER BY o.created_at, o.id
FOR UPDATE OF o SKIP LOCKED;

-- name: DigestNotifyOutbox :execrows
UPDATE notify_outbox SET status = 'digested', digest_id = sqlc.arg(digest_id)
WHERE id = ANY (sqlc.arg(ids)::uuid[]) AND status = 'held';

-- name: DeleteNotifyOutboxBefore :execrows
-- Retention: finished rows after 30 days.
DELETE FROM notify_outbox
WHERE created_at < sqlc.arg(before) AND status IN ('delivered', 'failed', 'merged', 'digested');

-- name: ListNotifyDeliveries :many
-- The delivery list: recent messages of every channel, or of one, in one
-- status or any, newest first, with the event's kind and title (a digest
-- has none: its own title).
SELECT o.id, o.channel_id, c.name AS channel_name, o.event_id,
       coalesce(e.kind, 'notify.digest')::text AS event_kind,
       coalesce(e.title, o.digest_title, '')::text AS title,
       o.status, o.attempts, o.last_error, o.next_attempt_at, o.delivered_at, o.created_at,
       o.delivered_to, o.refused_to
FROM notify_outbox o
JOIN notify_channels c ON c.id = o.channel_id
LEFT JOIN notify_events e ON e.id = o.event_id
WHERE (sqlc.narg(channel_id)::uuid IS NULL OR o.channel_id = sqlc.narg(channel_id)::uuid)
  AND (sqlc.narg(status)::text IS NULL OR o.status = sqlc.narg(status)::text)
ORDER BY o.created_at DESC, o.id DESC
LIMIT sqlc.arg(lim);

-- name: CountNotifyOutboxFailedByChannel :many
-- Messages given up per channel (kept for the outbox's retention).
SELECT channel_id, count(*) AS given_up FROM notify_outbox
WHERE status = 'failed'
GROUP BY channel_id;

-- name: ReleaseNotifyOutbox :execrows
-- A send cut short by a clean shutdown, or a claimed row not sent before
-- it: free at once for any controller (the restarted one included) rather
-- than after the lease. The attempt does not count: the receiver did not
-- refuse anything. Only the lease holder may release.
UPDATE notify_outbox
SET locked_until = NULL, attempts = greatest(attempts - 1, 0)
WHERE id = sqlc.arg(id) AND status = 'pending' AND locked_until = sqlc.arg(lease);
