// Package notify is the notifications service: every capability publishes
// typed events here, and the service delivers them to the channels whose
// rules match: each admin's in-app inbox, email, Slack, Discord and generic
// webhooks signed per the Standard Webhooks specification.
//
// # Publishing (a transactional outbox)
//
// A capability calls Publish with the transaction that makes the change the
// event reports (store.InTx's *store.Store). Publish writes the event and,
// in the same transaction, fans it out: inbox channels get their
// notifications rows at once, every other matching channel gets one
// notify_outbox row. So an event exists exactly when its change committed,
// and a rolled-back change notifies no one. Publish needs no Service: the
// rules live in the database.
//
// # Delivery
//
// Service.Run claims due outbox rows with FOR UPDATE SKIP LOCKED in a short
// transaction and leases them (locked_until): any number of controllers
// may deliver and never take the same row at once. Each claimed row is
// sent by a goroutine of its own (at most Workers at once), so one slow
// receiver holds up only its own messages. A send ends before its lease
// does, and only the lease holder records a failure (locked_until is the
// fencing token), so two workers never send one message at the same time.
// After the send, the row is marked delivered in a second short
// transaction. A controller killed between the two leaves a leased row
// that another worker takes after the lease ends and sends again with the
// same webhook-id (the row's id), which is the receiver's idempotency key;
// an email sent again carries the same Message-ID (the row's id and a hash
// of the address), so mail systems recognise the copy. An email channel
// sends each address a message of its own, and the transaction that
// records an attempt also records which addresses the mail server accepted
// the message for (DATA's final reply) and which it refused for good (a
// 5xx reply to RCPT TO, kept with the reply): a retry goes only to the
// rest, so nobody gets a second copy of a partly failed send. A 4xx
// refusal is retried like any failure; once every address has the message
// or was refused for good the message ends, delivered, or failed when any
// address was refused (a give-up for those, on the channel and in the
// delivery list with the server's reply). The crash window stays: a
// controller killed after the server accepted a message and before the
// commit sends it to those addresses once more, with the same Message-ID.
// A clean shutdown
// releases the rows whose sends it cut short, so the next controller sends
// them at once rather than after the lease. A failed send is
// retried with exponential backoff and jitter (30 s doubling, capped at an
// hour; later when a 429 or 503 names a Retry-After) until MaxAttempts
// attempts or MaxAge after the event, then given up; the channel shows
// last_error ("gave up after N attempts: ..." once a message is lost) and
// failing_since until a delivery succeeds.
//
// # Noise rules
//
//   - Dedupe: an event may carry a dedupe_key naming a condition (e.g.
//     "server.offline:<id>"). Inbox: at most one unread notification per
//     user and key. Other channels: an event whose key already has, on that
//     channel, an undelivered message or one delivered within DedupeWindow
//     (and not resolved since) is merged (status merged, not sent).
//   - Resolve: an event with Resolves set (server.online, alert.resolved)
//     closes its dedupe_key: the inbox's unread notifications of that key are
//     marked read and the resolving one is added; on another channel, if the
//     opening message is still unsent both are merged (nobody needs to hear
//     of a condition that is already over), if it was sent (or tried: it
//     may have arrived) the resolving message is sent, after it, and if
//     the channel never heard of the condition the resolving message is
//     merged.
//   - Rate limit: a channel sends at most rate_limit_per_hour messages in a
//     rolling hour (1 to 10000, default 20, set when it is added and
//     changed in place with UpdateChannelAs; every publish and delivery
//     reads it, so a change holds from the next message on); the rest is
//     held, and once the hour has room a single digest message lists what
//     was held back.
//
// # Channels
//
// Slack, Discord and webhook URLs and webhook secrets are sealed with the
// store's keyring and never returned, logged or put into errors: a channel
// shows only its URL's host. Outbound HTTP refuses private, loopback,
// link-local and unspecified addresses at dial time (after DNS resolution,
// so rebinding cannot bypass it) unless AllowPrivateTargets is set, follows
// no redirect, times out and reads a bounded response.
//
// # API (for the CLI, gRPC and web UI)
//
// One Service per controller (New, then Run in the background):
//   - channels: AddChannel (returns a generated webhook secret once),
//     Channels, Channel, RemoveChannel, TestChannel, Deliveries (recent
//     messages of every channel or one, in a status or any, with attempts,
//     last error and next attempt);
//   - rules: AddRule, Rules, RemoveRule;
//   - inbox: Inbox, UnreadCount, MarkRead, MarkAllRead (per user);
//   - events: Publish (package function, in a transaction) or
//     Service.Publish (a transaction of its own).
//
// Bad input is refused with errors wrapping ErrInvalid (or
// ErrPrivateTarget for a private URL), unknown names with
// store.ErrNotFound and taken names with store.ErrConflict, so a caller
// maps them to InvalidArgument, NotFound and AlreadyExists.
//
// # Authorisation and audit
//
// Every interface (gRPC, the CLI through it, the web UI) calls the
// principal-taking methods (AddChannelAs, ChannelsAs, TestChannelAs,
// UpdateChannelAs, RemoveChannelAs, DeliveriesAs, AddRuleAs, RulesAs, RemoveRuleAs, InboxAs,
// UnreadCountAs, MarkReadAs): channels, deliveries and rules need the admin scope, the
// inbox is the caller's own (read scope), refusals wrap auth.ErrForbidden
// or auth.ErrUnauthenticated, and each change is written to the activity
// log (never a URL or secret). The methods without a principal are for
// internal callers acting as the system.
package notify
