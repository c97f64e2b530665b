package mail_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/berthhq/berth/controller/internal/mail"
	"github.com/berthhq/berth/controller/internal/mail/mailtest"
)

func TestSMTPDelivers(t *testing.T) {
	srv := mailtest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	body := "Hello Ada,\n\nOpen https://berth.example/reset/abc_DEF-123 to continue. Ünïcode and a very long line " + strings.Repeat("x", 120) + "\n"
	if err := srv.Mailer().Send(ctx, mail.Message{To: "ada@example.com", Subject: "Réinitialiser: your password", Text: body}); err != nil {
		t.Fatalf("send: %v", err)
	}
	got, err := srv.WaitFor(ctx, "ADA@example.com")
	if err != nil {
		t.Fatal(err)
	}
	if got.Subject != "Réinitialiser: your password" {
		t.Errorf("subject = %q", got.Subject)
	}
	if got.Text != body && strings.TrimRight(got.Text, "\n") != strings.TrimRight(body, "\n") {
		t.Errorf("text = %q, want %q", got.Text, body)
	}
	if len(got.To) != 1 || got.To[0] != "ada@example.com" || !strings.Contains(got.From, "berth@example.test") {
		t.Errorf("envelope = %q -> %q", got.From, got.To)
	}
	if got.Header.Get("Message-Id") == "" || got.Header.Get("Date") == "" {
		t.Errorf("missing Message-ID or Date: %v", got.Header)
	}

	// A second message is handed out by a second WaitFor, not the first again.
	if err := srv.Mailer().Send(ctx, mail.Message{To: "ada@example.com", Subject: "two", Text: "second"}); err != nil {
		t.Fatal(err)
	}
	if got, err := srv.WaitFor(ctx, "ada@example.com"); err != nil || got.Subject != "two" {
		t.Fatalf("second WaitFor = %q, %v", got.Subject, err)
	}
	if n := len(srv.MessagesTo("ada@example.com")); n != 2 {
		t.Errorf("MessagesTo = %d messages, want 2", n)
	}

	// Nothing more arrives: WaitFor gives up with the context.
	short, cancel2 := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel2()
	if _, err := srv.WaitFor(short, "ada@example.com"); err == nil {
		t.Fatal("WaitFor returned a message that was already handed out")
	}
}

func TestSMTPRefusesHeaderInjection(t *testing.T) {
	srv := mailtest.Start(t)
	err := srv.Mailer().Send(context.Background(), mail.Message{To: "ada@example.com\r\nBcc: eve@example.com", Subject: "x", Text: "y"})
	if err == nil {
		t.Fatal("an address with a header injection was accepted")
	}
	if n := len(srv.Messages()); n != 0 {
		t.Fatalf("%d messages delivered", n)
	}
}

func TestSMTPUnreachable(t *testing.T) {
	m, err := mail.NewSMTP(mail.SMTPConfig{Host: "127.0.0.1", Port: 1, From: "b@example.test", TLS: mail.TLSNone, Timeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Send(context.Background(), mail.Message{To: "a@example.com", Subject: "s", Text: "t"}); err == nil {
		t.Fatal("send to a closed port succeeded")
	}
}

func TestStartTLSIsRequired(t *testing.T) {
	// The capture server offers no STARTTLS: a starttls mailer must refuse
	// to send in plain text rather than fall back.
	srv := mailtest.Start(t)
	cfg := srv.Config()
	cfg.TLS = mail.TLSStartTLS
	m, err := mail.NewSMTP(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Send(context.Background(), mail.Message{To: "a@example.com", Subject: "s", Text: "secret"}); err == nil {
		t.Fatal("starttls mailer sent without TLS")
	}
	if n := len(srv.Messages()); n != 0 {
		t.Fatalf("%d messages delivered in plain text", n)
	}
}

func TestConfigValidation(t *testing.T) {
	for name, cfg := range map[string]mail.SMTPConfig{
		"no host":  {From: "a@example.com"},
		"no from":  {Host: "smtp.example.com"},
		"bad from": {Host: "smtp.example.com", From: "not an address"},
		"bad tls":  {Host: "smtp.example.com", From: "a@example.com", TLS: "ssl3"},
	} {
		if _, err := mail.NewSMTP(cfg); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestLogFallbackHidesBody(t *testing.T) {
	var buf bytes.Buffer
	logger := slog.New(slog.NewTextHandler(&buf, nil))
	m, err := mail.New(mail.SMTPConfig{}, logger)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := m.(mail.Log); !ok {
		t.Fatalf("New without a host = %T, want mail.Log", m)
	}
	if err := m.Send(context.Background(), mail.Message{To: "a@example.com", Subject: "Reset", Text: "https://x/reset/SECRET-TOKEN"}); err != nil {
		t.Fatal(err)
	}
	out := buf.String()
	if !strings.Contains(out, "mail not configured") || !strings.Contains(out, "a@example.com") {
		t.Errorf("log = %q", out)
	}
	if strings.Contains(out, "SECRET-TOKEN") {
		t.Errorf("log contains the body: %q", out)
	}
}

// A message sent twice with the same MessageID (a retry after a crash)
// arrives twice with one Message-ID, so mail systems can tell the copy;
// without one, each message gets its own. An id that could inject headers
// is refused before anything is sent.
func TestStableMessageID(t *testing.T) {
	srv := mailtest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	const id = "01JF8ZQ3K4Y6W2V0A9B8C7D6E5.3f2a@berth.example.com"
	for range 2 {
		if err := srv.Mailer().Send(ctx, mail.Message{To: "ops@example.com", Subject: "s", Text: "t", MessageID: id}); err != nil {
			t.Fatal(err)
		}
	}
	for range 2 {
		if err := srv.Mailer().Send(ctx, mail.Message{To: "dev@example.com", Subject: "s", Text: "t"}); err != nil {
			t.Fatal(err)
		}
	}
	ops, dev := srv.MessagesTo("ops@example.com"), srv.MessagesTo("dev@example.com")
	if len(ops) != 2 || ops[0].Header.Get("Message-Id") != "<"+id+">" || ops[1].Header.Get("Message-Id") != "<"+id+">" {
		t.Fatalf("stable ids: %q", []string{ops[0].Header.Get("Message-Id"), ops[1].Header.Get("Message-Id")})
	}
	if len(dev) != 2 || dev[0].Header.Get("Message-Id") == dev[1].Header.Get("Message-Id") || dev[0].Header.Get("Message-Id") == "" {
		t.Fatalf("random ids are not distinct: %v %v", dev[0].Header, dev[1].Header)
	}
	for _, bad := range []string{"no-at-sign", "<a@b>", "a@b\r\nBcc: x@evil.example", "a b@c", "a@b c", "a..b@c", "@c", "a@", strings.Repeat("a", 250) + "@b"} {
		if err := srv.Mailer().Send(ctx, mail.Message{To: "ops@example.com", Subject: "s", Text: "t", MessageID: bad}); !errors.Is(err, mail.ErrBadMessageID) {
			t.Errorf("message id %q: err %v, want ErrBadMessageID", bad, err)
		}
	}
	if n := len(srv.Messages()); n != 4 {
		t.Fatalf("%d messages arrived, want 4 (bad ids send nothing)", n)
	}
}

// A recipient the server refuses at RCPT TO comes back as a RefusedError
// with the server's reply: permanent for 5xx, temporary for 4xx; nothing
// is delivered for it, and once the server accepts it the send succeeds.
func TestMailRecipientRefused(t *testing.T) {
	srv := mailtest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	m := srv.Mailer()
	srv.Refuse("busy@example.com", 450, "mailbox busy, try later", 1)
	srv.Refuse("gone@example.com", 550, "no such user here", 0)

	err := m.Send(ctx, mail.Message{To: "busy@example.com", Subject: "s", Text: "t"})
	var re *mail.RefusedError
	if !errors.As(err, &re) {
		t.Fatalf("450 send: %v, want a RefusedError", err)
	}
	if re.Permanent() || re.Code != 450 || re.To != "busy@example.com" || !strings.HasPrefix(re.Reply, "450 ") || !strings.Contains(re.Reply, "mailbox busy, try later") {
		t.Fatalf("450 refusal = %+v (permanent %v)", re, re.Permanent())
	}
	if re.Reply != "450 4.1.1 mailbox busy, try later" {
		t.Errorf("reply %q, want the server's reply line", re.Reply)
	}
	if strings.Contains(re.Reply, "affected") {
		t.Errorf("reply carries go-mail's decoration: %q", re.Reply)
	}
	// The refusal was for one attempt only.
	if err := m.Send(ctx, mail.Message{To: "busy@example.com", Subject: "s", Text: "t"}); err != nil {
		t.Fatalf("second send to busy: %v", err)
	}

	for range 2 { // refused every time
		err = m.Send(ctx, mail.Message{To: "gone@example.com", Subject: "s", Text: "t"})
		if !errors.As(err, &re) || !re.Permanent() || re.Code != 550 || re.Reply != "550 5.1.1 no such user here" {
			t.Fatalf("550 send: %v (%+v)", err, re)
		}
	}
	if n := len(srv.MessagesTo("gone@example.com")); n != 0 {
		t.Errorf("a refused recipient got %d messages", n)
	}
	if n := len(srv.MessagesTo("busy@example.com")); n != 1 {
		t.Errorf("busy@ got %d messages, want 1", n)
	}

	// A failure that is not a refusal (nothing listens) is no RefusedError.
	dead, err := mail.NewSMTP(mail.SMTPConfig{Host: "127.0.0.1", Port: 1, From: mailtest.From, TLS: mail.TLSNone, Timeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if err := dead.Send(ctx, mail.Message{To: "a@example.com", Subject: "s", Text: "t"}); err == nil || errors.As(err, &re) {
		t.Fatalf("send to a closed port: %v", err)
	}
}
