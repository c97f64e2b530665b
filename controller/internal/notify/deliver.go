package notify

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	bmail "github.com/berthhq/berth/controller/internal/mail"
	"github.com/berthhq/berth/controller/internal/maintenance"
	"github.com/berthhq/berth/controller/internal/store"
)

// message is what one outbox row sends: an event or a digest.
type message struct {
	ID           store.ID // the outbox row: the webhook-id
	EventID      *store.ID
	Kind         string
	Level        Level
	Title        string
	Body         string
	Link         string
	ServerID     *store.ID
	AppID        *store.ID
	DeploymentID *store.ID
	Resolves     bool
	At           time.Time
}

// Run delivers until ctx ends. One loop claims due rows, woken by new rows
// (LISTEN), by a finished send when every slot was busy, or every Poll, and
// hands each row to a goroutine of its own, at most Workers sends at once.
// A receiver that answers slowly (or never, until the timeout) so holds
// one slot, not a whole batch of other channels' messages behind it. The
// loop also turns held messages into digests once a minute.
func (s *Service) Run(ctx context.Context) {
	go s.listen(ctx)
	var wg sync.WaitGroup
	defer wg.Wait()
	slots := make(chan struct{}, s.cfg.Workers)
	freed := make(chan struct{}, 1)
	t := time.NewTicker(s.cfg.Poll)
	defer t.Stop()
	lastDigest := time.Time{}
	for ctx.Err() == nil {
		if time.Since(lastDigest) >= time.Minute {
			lastDigest = time.Now()
			if _, err := s.SendDigests(ctx); err != nil && ctx.Err() == nil {
				s.log.Warn("notification digests", "err", err)
			}
		}
		free := min(cap(slots)-len(slots), claimBatch)
		claimed := 0
		if free > 0 {
			rows, err := s.claim(ctx, free)
			if err != nil && ctx.Err() == nil {
				s.log.Warn("claim notifications", "err", err)
			}
			claimed = len(rows)
			for _, r := range rows {
				slots <- struct{}{} // never blocks: at most free rows
				wg.Add(1)
				go func() {
					defer wg.Done()
					s.deliver(ctx, r)
					<-slots
					select {
					case freed <- struct{}{}:
					default:
					}
				}()
			}
		}
		if claimed > 0 && claimed == free && len(slots) < cap(slots) {
			continue // maybe more due, and room for them
		}
		var onFreed chan struct{}
		if len(slots) == cap(slots) {
			onFreed = freed
		}
		select {
		case <-ctx.Done():
		case <-s.wake:
		case <-t.C:
		case <-onFreed:
		}
	}
}

// claimBatch is the most rows one claim takes.
const claimBatch = 10

func (s *Service) poke() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// listen wakes the workers when any controller queues a message.
func (s *Service) listen(ctx context.Context) {
	pool := s.st.Pool()
	if pool == nil {
		return
	}
	for ctx.Err() == nil {
		s.listenOnce(ctx, pool)
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
}

func (s *Service) listenOnce(ctx context.Context, pool *pgxpool.Pool) {
	conn, err := pool.Acquire(ctx)
	if err != nil {
		return
	}
	pc := conn.Hijack() // a LISTENing session must not go back to the pool
	defer pc.Close(context.Background())
	if _, err := pc.Exec(ctx, "LISTEN "+wakeChannel); err != nil {
		return
	}
	s.poke()
	for {
		if _, err := pc.WaitForNotification(ctx); err != nil {
			return
		}
		s.poke()
	}
}

// DeliverDue claims up to limit due outbox rows, sends them one after
// the other and records each result; it reports how many it claimed.
// Tests and tools call it; Run sends concurrently.
func (s *Service) DeliverDue(ctx context.Context, limit int) (int, error) {
	rows, err := s.claim(ctx, limit)
	if err != nil {
		return 0, err
	}
	for _, r := range rows {
		s.deliver(ctx, r) // after ctx ends, this releases the rest
	}
	return len(rows), nil
}

func (s *Service) claim(ctx context.Context, limit int) ([]store.NotifyOutbox, error) {
	now := s.cfg.Now()
	return s.st.ClaimNotifyOutbox(ctx, now, now.Add(s.cfg.Lease), limit)
}

// leaseMargin is the part of a lease kept for recording a send's result:
// a send must end this long before the lease does.
func (s *Service) leaseMargin() time.Duration {
	return min(s.cfg.Lease/4, 10*time.Second)
}

// deliver sends one claimed row and records the outcome in a second short
// transaction (each statement is its own).
//
// The send ends before the row's lease does (less leaseMargin): a worker
// still sending when the lease runs out would overlap with the worker that
// takes the row over, and a receiver would get the message twice at once.
// A row whose lease is already (nearly) over when its turn comes is left
// for the next claim. Failures are recorded only while the lease is still
// this worker's (locked_until is the fencing token); a success is always
// recorded, since the receiver has the message whoever holds the row.
func (s *Service) deliver(ctx context.Context, r store.NotifyOutbox) {
	if r.LockedUntil == nil {
		return // not claimed: nothing to fence with
	}
	lease := *r.LockedUntil
	budget := lease.Sub(s.cfg.Now()) - s.leaseMargin()
	if budget <= 0 {
		return
	}
	// Results are recorded even while shutting down: a message that went
	// out is marked, so a clean stop causes no resend.
	rctx, rcancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer rcancel()
	// On a clean shutdown a row not sent, or whose send was cut short
	// (not the receiver's failure), is released for the next controller
	// at once instead of after the lease; it goes again with the same
	// webhook-id.
	release := func() { _, _ = s.st.ReleaseNotifyOutbox(rctx, r.ID, lease) }
	if ctx.Err() != nil {
		release()
		return
	}
	c, err := s.st.NotifyChannelByID(ctx, r.ChannelID)
	if err != nil {
		if ctx.Err() != nil {
			release()
		}
		return // removed meanwhile: its rows went with it
	}
	m, err := s.messageOf(ctx, r)
	if err != nil {
		if ctx.Err() != nil {
			release()
			return
		}
		s.log.Warn("load notification", "outbox", r.ID.String(), "err", err)
		return
	}
	sctx, cancel := context.WithTimeout(ctx, budget)
	var mr mailResult
	var sendErr error
	if c.Kind == KindEmail {
		mr, sendErr = s.sendEmail(sctx, c, m, r.DeliveredTo, r.RefusedTo)
	} else {
		sendErr = s.send(sctx, c, m)
	}
	cancel()
	// Who got the message (or never will) is recorded in the transaction
	// that records the attempt, so a retry, whoever makes it, sends only
	// to the rest. Recipients are recorded whatever the row's fate: even
	// when this worker's lease ran out or the controller is stopping, the
	// addresses the server accepted must not get a second copy.
	err = s.st.InTx(rctx, func(tx *store.Store) error {
		if len(mr.delivered) > 0 || len(mr.refused) > 0 {
			if _, err := tx.RecordNotifyOutboxRecipients(rctx, r.ID, mr.delivered, mr.refused); err != nil {
				return err
			}
		}
		if sendErr != nil && ctx.Err() != nil {
			_, err := tx.ReleaseNotifyOutbox(rctx, r.ID, lease)
			return err
		}
		return s.settle(rctx, tx, r, lease, c, mr, sendErr)
	})
	if err != nil {
		s.log.Warn("record notification attempt", "outbox", r.ID.String(), "err", err)
	}
}

// settle records the outcome of an attempt at r in tx: delivered, ended
// with some email recipients refused for good, retried later or given up.
func (s *Service) settle(ctx context.Context, tx *store.Store, r store.NotifyOutbox, lease time.Time, c store.NotifyChannel, mr mailResult, sendErr error) error {
	now := s.cfg.Now()
	if sendErr == nil {
		if len(mr.refusedAll) > 0 {
			// Everyone else has it; the refused addresses never will. The
			// message ends as a give-up for them, visible on the channel.
			msg := cut(fmt.Sprintf("refused by the mail server: %s (delivered to %d of %d)", refusalText(mr.refusedAll), mr.deliveredAll, mr.total), 500)
			s.log.Warn("notification refused", "channel", c.Name, "outbox", r.ID.String(), "err", msg)
			ok, err := tx.EndNotifyOutboxRefused(ctx, r.ID, now, msg)
			if err != nil || !ok {
				return err
			}
			return tx.NotifyChannelFailed(ctx, c.ID, "gave up: "+msg, now)
		}
		if _, err := tx.MarkNotifyOutboxDelivered(ctx, r.ID, now); err != nil {
			return err
		}
		return tx.NotifyChannelDelivered(ctx, c.ID, now)
	}
	msg := cut(sendErr.Error(), 500)
	s.log.Warn("notification delivery failed", "channel", c.Name, "outbox", r.ID.String(), "attempt", r.Attempts, "err", msg)
	if r.Attempts >= s.cfg.MaxAttempts || now.Sub(r.CreatedAt) >= s.cfg.MaxAge {
		// The channel says that a message was lost, not only that a send
		// failed: a retry may still succeed, this one will not.
		gaveUp := fmt.Sprintf("gave up after %d attempts: %s", r.Attempts, msg)
		ok, err := tx.FailNotifyOutbox(ctx, r.ID, lease, msg)
		if err != nil || !ok {
			return err
		}
		return tx.NotifyChannelFailed(ctx, c.ID, gaveUp, now)
	}
	if err := tx.NotifyChannelFailed(ctx, c.ID, msg, now); err != nil {
		return err
	}
	wait := backoff(r.Attempts)
	if ra, ok := errors.AsType[*retryAfterError](sendErr); ok {
		// The receiver said when (Slack and Discord do when rate
		// limiting): sooner would be refused again.
		wait = max(wait, min(ra.after, time.Hour))
	}
	_, err := tx.RetryNotifyOutbox(ctx, r.ID, lease, now.Add(wait), msg)
	return err
}

// backoff is the wait after the n-th failed attempt: 30 s doubling, capped
// at an hour, with jitter (half fixed, half random) so a receiver that
// comes back is not hit by every controller at once.
func backoff(n int) time.Duration {
	d := 30 * time.Second
	for i := 1; i < n && d < time.Hour; i++ {
		d *= 2
	}
	d = min(d, time.Hour)
	return d/2 + rand.N(d/2+1)
}

func (s *Service) messageOf(ctx context.Context, r store.NotifyOutbox) (message, error) {
	if r.EventID == nil {
		return message{ID: r.ID, Kind: "notify.digest", Level: Info, Title: r.DigestTitle, Body: r.DigestBody, At: r.CreatedAt}, nil
	}
	e, err := s.st.NotifyEventByID(ctx, *r.EventID)
	if err != nil {
		return message{}, err
	}
	return message{
		ID: r.ID, EventID: &e.ID, Kind: e.Kind, Level: Level(e.Level), Title: e.Title, Body: e.Body, Link: e.Link,
		ServerID: e.ServerID, AppID: e.AppID, DeploymentID: e.DeploymentID, Resolves: e.Resolves, At: e.CreatedAt,
	}, nil
}

func (s *Service) sendAndRecord(ctx context.Context, c store.NotifyChannel, m message) error {
	err := s.send(ctx, c, m)
	now := s.cfg.Now()
	if err != nil {
		_ = s.st.NotifyChannelFailed(ctx, c.ID, cut(err.Error(), 500), now)
		return err
	}
	return s.st.NotifyChannelDelivered(ctx, c.ID, now)
}

// send delivers m to c. Errors never contain the channel's URL or secret.
func (s *Service) send(ctx context.Context, c store.NotifyChannel, m message) error {
	switch c.Kind {
	case KindEmail:
		// Not through the outbox (a test message): to every address.
		mr, err := s.sendEmail(ctx, c, m, nil, nil)
		if err == nil && len(mr.refusedAll) > 0 {
			err = errors.New("refused by the mail server: " + refusalText(mr.refusedAll))
		}
		return err
	case KindSlack, KindDiscord, KindWebhook:
	default:
		return fmt.Errorf("channel kind %s does not deliver through the outbox", c.Kind)
	}
	raw, err := s.st.NotifyChannelConfig(c)
	if err != nil {
		return errors.New("cannot open the channel's configuration")
	}
	var cfg channelConfig
	if err := json.Unmarshal(raw, &cfg); err != nil {
		return errors.New("cannot read the channel's configuration")
	}
	var body []byte
	hdr := http.Header{}
	switch c.Kind {
	case KindSlack:
		body, err = json.Marshal(map[string]any{"text": s.plain(m, "*")})
	case KindDiscord:
		// Discord refuses content over 2000 characters; mentions in event
		// text must not ping anyone.
		body, err = json.Marshal(map[string]any{"content": cut(s.plain(m, "**"), 2000), "allowed_mentions": map[string]any{"parse": []string{}}})
	case KindWebhook:
		body, err = json.Marshal(s.webhookPayload(m))
		if err == nil {
			err = sign(hdr, cfg.Secret, m.ID.String(), s.cfg.Now(), body)
		}
	}
	if err != nil {
		return err
	}
	return post(ctx, s.client, cfg.URL, hdr, body)
}

// sign sets the Standard Webhooks headers: webhook-id, webhook-timestamp
// (unix seconds) and webhook-signature "v1,<base64 HMAC-SHA256 of
// id.timestamp.body>" keyed with the secret's decoded bytes.
func sign(hdr http.Header, secret, id string, at time.Time, body []byte) error {
	key, err := secretKey(secret)
	if err != nil {
		return errors.New("the channel's secret is not valid")
	}
	ts := strconv.FormatInt(at.Unix(), 10)
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte(id + "." + ts + "."))
	mac.Write(body)
	hdr.Set("webhook-id", id)
	hdr.Set("webhook-timestamp", ts)
	hdr.Set("webhook-signature", "v1,"+base64.StdEncoding.EncodeToString(mac.Sum(nil)))
	return nil
}

// WebhookPayload is the body of a generic webhook (Standard Webhooks'
// type/timestamp/data shape).
type WebhookPayload struct {
	Type      string      `json:"type"`
	Timestamp time.Time   `json:"timestamp"`
	Data      WebhookData `json:"data"`
}

// WebhookData is the event in a webhook payload.
type WebhookData struct {
	EventID      string `json:"event_id,omitempty"`
	Level        string `json:"level"`
	Title        string `json:"title"`
	Body         string `json:"body,omitempty"`
	URL          string `json:"url,omitempty"`
	ServerID     string `json:"server_id,omitempty"`
	AppID        string `json:"app_id,omitempty"`
	DeploymentID string `json:"deployment_id,omitempty"`
	Resolved     bool   `json:"resolved,omitempty"`
}

func (s *Service) webhookPayload(m message) WebhookPayload {
	d := WebhookData{Level: string(m.Level), Title: m.Title, Body: m.Body, URL: s.link(m), Resolved: m.Resolves}
	if m.EventID != nil {
		d.EventID = m.EventID.String()
	}
	if m.ServerID != nil {
		d.ServerID = m.ServerID.String()
	}
	if m.AppID != nil {
		d.AppID = m.AppID.String()
	}
	if m.DeploymentID != nil {
		d.DeploymentID = m.DeploymentID.String()
	}
	return WebhookPayload{Type: m.Kind, Timestamp: m.At.UTC(), Data: d}
}

func (s *Service) link(m message) string {
	if m.Link == "" {
		return ""
	}
	return strings.TrimRight(s.cfg.PublicURL, "/") + m.Link
}

// plain is the chat text of m, the title in bold (Slack "*", Discord "**").
func (s *Service) plain(m message, bold string) string {
	var b strings.Builder
	b.WriteString(bold + m.Title + bold)
	if m.Body != "" {
		b.WriteString("\n" + m.Body)
	}
	if l := s.link(m); l != "" {
		b.WriteString("\n" + l)
	}
	return b.String()
}

// mailResult is what one attempt at an email message did per address.
type mailResult struct {
	total        int               // the message's addresses
	delivered    []string          // accepted by the server in this attempt
	refused      map[string]string // refused for good in this attempt: address -> reply
	deliveredAll int               // addresses that have it, this attempt and earlier ones
	refusedAll   map[string]string // refused for good, this attempt and earlier ones
}

// sendEmail sends m to each of the channel's addresses that do not have it
// yet (done) and were not refused for good (refused). The error is nil
// when every address now has the message or was refused for good (see
// mr.refusedAll); else it says what failed for now, and a retry sends to
// those addresses only.
func (s *Service) sendEmail(ctx context.Context, c store.NotifyChannel, m message, done []string, refused map[string]string) (mailResult, error) {
	mr := mailResult{refused: map[string]string{}, refusedAll: map[string]string{}}
	if s.cfg.Mailer == nil || !bmail.Delivers(s.cfg.Mailer) {
		return mr, errors.New("no SMTP relay is configured")
	}
	to := append([]string(nil), c.Recipients...)
	if c.ToAdmins {
		admins, err := s.st.AdminEmails(ctx)
		if err != nil {
			return mr, err
		}
		to = append(to, admins...)
	}
	to = uniqueFold(to)
	if len(to) == 0 {
		return mr, errors.New("no recipient")
	}
	mr.total = len(to)
	has := map[string]bool{}
	for _, a := range done {
		has[strings.ToLower(a)] = true
	}
	gone := map[string]string{}
	for a, reply := range refused {
		gone[strings.ToLower(a)] = reply
	}
	text := m.Body
	if l := s.link(m); l != "" {
		text += "\n\n" + l
	}
	text += "\n\n-- \nBerth (" + m.Kind + ", " + string(m.Level) + ")\n"
	var failed []string
	var firstErr error
	for _, addr := range to {
		k := strings.ToLower(addr)
		if has[k] {
			mr.deliveredAll++
			continue
		}
		if reply, ok := gone[k]; ok {
			mr.refusedAll[addr] = reply
			continue
		}
		// One message per address, so no recipient sees the others.
		msg := bmail.Message{To: addr, Subject: "[Berth] " + m.Title, Text: text, MessageID: s.messageID(m.ID, addr)}
		err := s.cfg.Mailer.Send(ctx, msg)
		if err == nil {
			mr.delivered = append(mr.delivered, addr)
			mr.deliveredAll++
			continue
		}
		if re, ok := errors.AsType[*bmail.RefusedError](err); ok && re.Permanent() {
			// No such user, mailbox disabled: a retry would be refused
			// again, so this address is given up now, with the reason.
			mr.refused[addr] = re.Reply
			mr.refusedAll[addr] = re.Reply
			continue
		}
		failed = append(failed, addr)
		if firstErr == nil {
			firstErr = err
		}
	}
	if len(failed) > 0 {
		// A retry sends to these only: the others have the message (or
		// were refused for good).
		e := fmt.Sprintf("mail to %d of %d recipients failed: %v", len(failed), len(to), firstErr)
		if len(mr.refusedAll) > 0 {
			e += "; refused by the mail server: " + refusalText(mr.refusedAll)
		}
		return mr, errors.New(e)
	}
	return mr, nil
}

// uniqueFold drops repeated addresses (compared case-insensitively, as
// mail systems mostly do), keeping the first spelling: an admin who is also
// a listed recipient gets one mail.
func uniqueFold(addrs []string) []string {
	seen := map[string]bool{}
	out := addrs[:0]
	for _, a := range addrs {
		if k := strings.ToLower(a); !seen[k] {
			seen[k] = true
			out = append(out, a)
		}
	}
	return out
}

// refusalText is "addr: reply; addr: reply", addresses in order.
func refusalText(refused map[string]string) string {
	addrs := make([]string, 0, len(refused))
	for a := range refused {
		addrs = append(addrs, a)
	}
	sort.Strings(addrs)
	parts := make([]string, len(addrs))
	for i, a := range addrs {
		parts[i] = a + ": " + refused[a]
	}
	return strings.Join(parts, "; ")
}

// messageID is the Message-ID of the mail of delivery id to addr: the
// same on every attempt, so a resend after a crash between send and commit
// (or a retry after a partial failure) is recognisably the same message to
// mail systems and readers, as webhook-id is to a webhook receiver. Each
// recipient gets a message of their own and so an id of its own (the
// delivery id and a hash of the address; the address itself stays out of
// the header). The right side is the controller's public host.
func (s *Service) messageID(id store.ID, addr string) string {
	h := sha256.Sum256([]byte(strings.ToLower(addr)))
	return fmt.Sprintf("%s.%x@%s", id.String(), h[:6], s.mailDomain)
}

// mailDomain is the right side of Message-IDs: the public URL's host when
// it is a name or IPv4 address, else "berth.invalid".
func mailDomain(publicURL string) string {
	u, err := url.Parse(publicURL)
	if err == nil {
		if h := strings.ToLower(u.Hostname()); h != "" && bmail.CheckMessageID("x@"+h) == nil {
			return h
		}
	}
	return "berth.invalid"
}

// SendDigests turns each channel's held-back messages into one digest
// message once the channel's hour has room; it reports how many digests it
// queued.
func (s *Service) SendDigests(ctx context.Context) (int, error) {
	chans, err := s.st.NotifyChannelsWithHeld(ctx)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, id := range chans {
		err := s.st.InTx(ctx, func(tx *store.Store) error {
			c, err := tx.NotifyChannelByID(ctx, id)
			if err != nil {
				return err
			}
			now := s.cfg.Now()
			used, err := tx.CountNotifyOutboxSince(ctx, c.ID, now.Add(-time.Hour))
			if err != nil || used >= int64(c.RateLimitPerHour) {
				return err
			}
			held, err := tx.HeldNotifyOutbox(ctx, c.ID) // locked: one digest per row
			if err != nil || len(held) == 0 {
				return err
			}
			var b strings.Builder
			ids := make([]store.ID, len(held))
			for i, h := range held {
				ids[i] = h.ID
				if i < 50 {
					fmt.Fprintf(&b, "- %s [%s] %s: %s\n", h.CreatedAt.UTC().Format(time.RFC3339), h.Level, h.Kind, h.Title)
				}
			}
			if len(held) > 50 {
				fmt.Fprintf(&b, "... and %d more\n", len(held)-50)
			}
			d, err := tx.InsertNotifyOutbox(ctx, store.NotifyOutbox{
				ChannelID: c.ID, Status: "pending", CreatedAt: now,
				DigestTitle: fmt.Sprintf("%d notifications held back by the rate limit", len(held)), DigestBody: b.String(),
			})
			if err != nil {
				return err
			}
			if _, err := tx.DigestNotifyOutbox(ctx, d.ID, ids); err != nil {
				return err
			}
			n++
			return tx.PgNotify(ctx, wakeChannel, "")
		})
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

// Retention of finished outbox rows and old events, like the inbox's.
const Retention = 30 * 24 * time.Hour

// RetentionJob is the maintenance job that deletes delivered, failed and
// merged outbox rows and the events nothing pending needs after
// Retention. (The inbox's own 30 days are the maintenance package's.)
func RetentionJob() maintenance.Job {
	return maintenance.Job{Name: "notify_outbox_retention", Every: 24 * time.Hour, Run: func(ctx context.Context, st *store.Store, now time.Time) (int64, error) {
		return st.DeleteNotifyBefore(ctx, now.Add(-Retention))
	}}
}
