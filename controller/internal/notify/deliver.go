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
	"strconv"
	"strings"
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

// Run delivers until ctx ends: Workers goroutines claim due rows, woken by
// new rows (LISTEN) or every Poll; one of them also sends digests of held
// messages.
func (s *Service) Run(ctx context.Context) {
	go s.listen(ctx)
	done := make(chan struct{})
	for i := 0; i < s.cfg.Workers; i++ {
		go func(i int) {
			defer func() { done <- struct{}{} }()
			s.worker(ctx, i == 0)
		}(i)
	}
	for i := 0; i < s.cfg.Workers; i++ {
		<-done
	}
}

func (s *Service) worker(ctx context.Context, digests bool) {
	t := time.NewTicker(s.cfg.Poll)
	defer t.Stop()
	lastDigest := time.Time{}
	for ctx.Err() == nil {
		n, err := s.DeliverDue(ctx, 10)
		if err != nil && ctx.Err() == nil {
			s.log.Warn("deliver notifications", "err", err)
		}
		if digests && time.Since(lastDigest) >= time.Minute {
			lastDigest = time.Now()
			if _, err := s.SendDigests(ctx); err != nil && ctx.Err() == nil {
				s.log.Warn("notification digests", "err", err)
			}
		}
		if n > 0 {
			continue
		}
		select {
		case <-ctx.Done():
		case <-s.wake:
		case <-t.C:
		}
	}
}

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

// DeliverDue claims up to limit due outbox rows, sends them and records
// each result; it reports how many it claimed. Run calls it; tests and
// tools may call it directly.
func (s *Service) DeliverDue(ctx context.Context, limit int) (int, error) {
	now := s.cfg.Now()
	rows, err := s.st.ClaimNotifyOutbox(ctx, now, now.Add(s.cfg.Lease), limit)
	if err != nil {
		return 0, err
	}
	for _, r := range rows {
		if ctx.Err() != nil {
			break // the lease runs out and another worker takes it
		}
		s.deliver(ctx, r)
	}
	return len(rows), nil
}

// deliver sends one claimed row and records the outcome in a second short
// transaction (each statement is its own).
func (s *Service) deliver(ctx context.Context, r store.NotifyOutbox) {
	c, err := s.st.NotifyChannelByID(ctx, r.ChannelID)
	if err != nil {
		return // removed meanwhile: its rows went with it
	}
	m, err := s.messageOf(ctx, r)
	if err != nil {
		s.log.Warn("load notification", "outbox", r.ID.String(), "err", err)
		return
	}
	sendErr := s.send(ctx, c, m)
	now := s.cfg.Now()
	if sendErr == nil {
		if _, err := s.st.MarkNotifyOutboxDelivered(ctx, r.ID, now); err != nil {
			s.log.Warn("record notification delivered", "outbox", r.ID.String(), "err", err)
			return
		}
		_ = s.st.NotifyChannelDelivered(ctx, c.ID, now)
		return
	}
	msg := cut(sendErr.Error(), 500)
	s.log.Warn("notification delivery failed", "channel", c.Name, "outbox", r.ID.String(), "attempt", r.Attempts, "err", msg)
	_ = s.st.NotifyChannelFailed(ctx, c.ID, msg, now)
	if r.Attempts >= s.cfg.MaxAttempts || now.Sub(r.CreatedAt) >= s.cfg.MaxAge {
		_ = s.st.FailNotifyOutbox(ctx, r.ID, msg)
		return
	}
	_ = s.st.RetryNotifyOutbox(ctx, r.ID, now.Add(backoff(r.Attempts)), msg)
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
		return s.sendEmail(ctx, c, m)
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

func (s *Service) sendEmail(ctx context.Context, c store.NotifyChannel, m message) error {
	if s.cfg.Mailer == nil || !bmail.Delivers(s.cfg.Mailer) {
		return errors.New("no SMTP relay is configured")
	}
	to := append([]string(nil), c.Recipients...)
	if c.ToAdmins {
		admins, err := s.st.AdminEmails(ctx)
		if err != nil {
			return err
		}
		to = append(to, admins...)
	}
	if len(to) == 0 {
		return errors.New("no recipient")
	}
	text := m.Body
	if l := s.link(m); l != "" {
		text += "\n\n" + l
	}
	text += "\n\n-- \nBerth (" + m.Kind + ", " + string(m.Level) + ")\n"
	var failed []string
	for _, addr := range to {
		// One message per address, so no recipient sees the others.
		if err := s.cfg.Mailer.Send(ctx, bmail.Message{To: addr, Subject: "[Berth] " + m.Title, Text: text}); err != nil {
			failed = append(failed, addr)
		}
	}
	if len(failed) > 0 {
		// A retry re-sends to all; mail has no idempotency key, and a
		// duplicate mail is better than a lost one.
		return fmt.Errorf("mail to %d of %d recipients failed", len(failed), len(to))
	}
	return nil
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
