// Package mail sends the controller's few emails (password reset links,
// invitations). Messages are plain text: they carry single-use links, and a
// plain body is the easiest to read in any client and the hardest to get
// wrong.
package mail

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"strconv"
	"strings"
	"time"

	gomail "github.com/wneessen/go-mail"
)

// Message is one email. Text is the plain-text body; it often contains a
// secret link, so it is never logged.
type Message struct {
	To      string
	Subject string
	Text    string
	// MessageID, when set, is the Message-ID header's value without the
	// angle brackets ("left@right"): a sender that may send the same
	// message again (a retry after a crash) sets a stable one, so mail
	// systems and readers can tell the copy for what it is. Empty: a
	// random one.
	MessageID string
}

// messageIDRE is what a Message-ID may be here: RFC 5322's dot-atom-text
// on both sides of the "@" (no brackets, spaces or line breaks, which
// could inject headers).
var messageIDRE = regexp.MustCompile(`^[A-Za-z0-9!#$%&'*+/=?^_` + "`" + `{|}~-]+(\.[A-Za-z0-9!#$%&'*+/=?^_` + "`" + `{|}~-]+)*@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*$`)

// ErrBadMessageID: Message.MessageID is not of the form left@right.
var ErrBadMessageID = errors.New("mail: message id must be dot-atom text left@right")

// CheckMessageID reports whether id may be a Message.MessageID.
func CheckMessageID(id string) error {
	if len(id) > 250 || !messageIDRE.MatchString(id) {
		return ErrBadMessageID
	}
	return nil
}

// Mailer sends messages.
type Mailer interface {
	Send(ctx context.Context, m Message) error
}

// TLSMode says how the SMTP connection is protected.
type TLSMode string

// The TLS modes.
const (
	// TLSNone: plain SMTP, for a relay on localhost or in tests only.
	TLSNone TLSMode = "none"
	// TLSStartTLS: connect in plain text and upgrade with STARTTLS, which
	// is required (no silent fallback to plain text). Usually port 587.
	TLSStartTLS TLSMode = "starttls"
	// TLSImplicit: TLS from the first byte ("SMTPS"). Usually port 465.
	TLSImplicit TLSMode = "tls"
)

// SMTPConfig is an SMTP relay.
type SMTPConfig struct {
	Host string
	// Port defaults by TLS mode: 25 (none), 587 (starttls), 465 (tls).
	Port int
	// Username and Password authenticate when Username is set (the best
	// mechanism the server offers).
	Username string
	Password string
	// From is the sender address, e.g. "Berth <berth@example.com>".
	From string
	// TLS defaults to starttls.
	TLS TLSMode
	// TLSConfig overrides the TLS settings (a private CA, say); nil uses
	// the system roots and Host as the server name.
	TLSConfig *tls.Config
	// Timeout bounds connecting and each command; default 15 s.
	Timeout time.Duration
}

// SMTP sends through an SMTP relay. It uses github.com/wneessen/go-mail
// rather than net/smtp: net/smtp is frozen, has no implicit-TLS mode, and
// leaves MIME encoding and header injection to the caller.
type SMTP struct {
	cfg SMTPConfig
}

// NewSMTP checks cfg and returns a mailer. Nothing is dialled until Send.
func NewSMTP(cfg SMTPConfig) (*SMTP, error) {
	if cfg.Host == "" {
		return nil, errors.New("mail: smtp host is required")
	}
	if cfg.From == "" {
		return nil, errors.New("mail: sender address (from) is required")
	}
	if cfg.TLS == "" {
		cfg.TLS = TLSStartTLS
	}
	switch cfg.TLS {
	case TLSNone, TLSStartTLS, TLSImplicit:
	default:
		return nil, fmt.Errorf("mail: unknown tls mode %q (none, starttls or tls)", cfg.TLS)
	}
	if cfg.Port == 0 {
		cfg.Port = map[TLSMode]int{TLSNone: 25, TLSStartTLS: 587, TLSImplicit: 465}[cfg.TLS]
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 15 * time.Second
	}
	// Reject a bad sender now rather than at the first password reset.
	if err := gomail.NewMsg().From(cfg.From); err != nil {
		return nil, fmt.Errorf("mail: sender address: %w", err)
	}
	return &SMTP{cfg: cfg}, nil
}

// Send delivers one message, dialling a new connection: the controller sends
// a few mails a day, not enough to keep a connection open for.
func (s *SMTP) Send(ctx context.Context, m Message) error {
	msg := gomail.NewMsg()
	if err := msg.From(s.cfg.From); err != nil {
		return fmt.Errorf("mail: from: %w", err)
	}
	if err := msg.To(m.To); err != nil {
		return fmt.Errorf("mail: to: %w", err)
	}
	msg.Subject(m.Subject)
	msg.SetDate()
	if m.MessageID != "" {
		if err := CheckMessageID(m.MessageID); err != nil {
			return err
		}
		msg.SetMessageIDWithValue(m.MessageID)
	} else {
		msg.SetMessageID()
	}
	msg.SetBodyString(gomail.TypeTextPlain, m.Text)

	opts := []gomail.Option{gomail.WithPort(s.cfg.Port), gomail.WithTimeout(s.cfg.Timeout)}
	switch s.cfg.TLS {
	case TLSNone:
		opts = append(opts, gomail.WithTLSPolicy(gomail.NoTLS))
	case TLSStartTLS:
		opts = append(opts, gomail.WithTLSPolicy(gomail.TLSMandatory))
	case TLSImplicit:
		opts = append(opts, gomail.WithSSL())
	}
	if s.cfg.TLSConfig != nil {
		opts = append(opts, gomail.WithTLSConfig(s.cfg.TLSConfig))
	}
	if s.cfg.Username != "" {
		opts = append(opts, gomail.WithSMTPAuth(gomail.SMTPAuthAutoDiscover),
			gomail.WithUsername(s.cfg.Username), gomail.WithPassword(s.cfg.Password))
	}
	c, err := gomail.NewClient(s.cfg.Host, opts...)
	if err != nil {
		return fmt.Errorf("mail: client: %w", err)
	}
	conn, err := c.DialToSMTPClientWithContext(ctx)
	if err != nil {
		return fmt.Errorf("mail: send to %s via %s:%d: dial failed: %w", m.To, s.cfg.Host, s.cfg.Port, err)
	}
	if err := c.SendWithSMTPClient(conn, msg); err != nil {
		_ = c.CloseWithSMTPClient(conn)
		if re := refusedOf(m.To, err); re != nil {
			err = re
		}
		return fmt.Errorf("mail: send to %s via %s:%d: %w", m.To, s.cfg.Host, s.cfg.Port, err)
	}
	// The server accepted the message with DATA's final reply: it is
	// delivered. A failing QUIT after that must not read as a failed send,
	// or a retry would mail the recipient a second copy.
	_ = c.CloseWithSMTPClient(conn)
	return nil
}

// RefusedError is a mail server's refusal of a recipient at RCPT TO. A
// Permanent one (a 5xx reply: no such user, mailbox disabled, ...) will
// not change on a retry; a temporary one (4xx: greylisting, mailbox busy)
// may.
type RefusedError struct {
	To    string
	Code  int    // the reply code, 400-599
	Reply string // the server's reply, code first ("550 5.1.1 no such user")
}

func (e *RefusedError) Error() string {
	return "recipient " + e.To + " refused: " + e.Reply
}

// Permanent reports whether the server refused the recipient for good.
func (e *RefusedError) Permanent() bool { return e.Code >= 500 }

// replyRE finds the server's reply in go-mail's error text, which also
// names the reason, the recipients and the Message-ID (go-mail keeps the
// underlying error unexported): the code, then the text as net/textproto
// prints it, Go-quoted (older Go releases printed it bare).
var replyRE = regexp.MustCompile(`\b([45][0-9][0-9]) ("(?:[^"\\]|\\.)*"|.*?(?:, affected recipient\(s\):|, affected message ID:|$))`)

// refusedOf is the RefusedError a send's error stands for when the server
// refused the (one) recipient at RCPT TO, else nil.
func refusedOf(to string, err error) *RefusedError {
	var se *gomail.SendError
	if !errors.As(err, &se) || se.Reason != gomail.ErrSMTPRcptTo {
		return nil
	}
	code := se.ErrorCode()
	if code < 400 || code > 599 {
		return nil
	}
	reply := strconv.Itoa(code)
	if sm := replyRE.FindStringSubmatch(se.Error()); sm != nil && sm[1] == reply {
		text := sm[2]
		if u, err := strconv.Unquote(text); err == nil {
			text = u
		} else {
			text = strings.TrimSuffix(strings.TrimSuffix(text, ", affected recipient(s):"), ", affected message ID:")
		}
		// A multi-line reply reads as one line in a list or a log.
		text = strings.Join(strings.Fields(text), " ")
		reply = strings.TrimSpace(reply + " " + text)
	}
	if len(reply) > 300 {
		reply = reply[:300]
	}
	return &RefusedError{To: to, Code: code, Reply: strings.ToValidUTF8(reply, "")}
}

// Log is the mailer used when no SMTP relay is configured: it drops the
// message and logs that it did, without the body (which holds secret links)
// so an operator sees why no mail arrived.
type Log struct {
	Logger *slog.Logger // nil: slog.Default()
}

// Send logs and discards m.
func (l Log) Send(ctx context.Context, m Message) error {
	lg := l.Logger
	if lg == nil {
		lg = slog.Default()
	}
	lg.WarnContext(ctx, "mail not configured: message dropped", "to", m.To, "subject", m.Subject)
	return nil
}

// Delivers reports whether m hands messages to a mail server: false for
// the Log fallback, so a caller whose message carries something the
// recipient needs (an invitation link) can hand it over another way
// instead of saying it was sent.
func Delivers(m Mailer) bool {
	_, dropped := m.(Log)
	return m != nil && !dropped
}

// New returns an SMTP mailer for cfg, or the Log fallback when cfg.Host is
// empty.
func New(cfg SMTPConfig, logger *slog.Logger) (Mailer, error) {
	if strings.TrimSpace(cfg.Host) == "" {
		return Log{Logger: logger}, nil
	}
	return NewSMTP(cfg)
}
