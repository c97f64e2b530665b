// Package mailtest runs a real SMTP server on loopback that records what it
// receives, for tests of code that sends mail (and for browser tests that
// follow a link from a mail).
//
//	srv := mailtest.Start(t)
//	svc := accounts.New(st, srv.Mailer(), cfg)
//	...
//	msg, err := srv.WaitFor(ctx, "ada@example.com")
package mailtest

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/quotedprintable"
	"net"
	netmail "net/mail"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/emersion/go-smtp"

	"github.com/berthhq/berth/controller/internal/mail"
)

// From is the sender address of Mailer.
const From = "Berth <berth@example.test>"

// Message is one received mail.
type Message struct {
	From    string   // envelope sender
	To      []string // envelope recipients
	Subject string   // decoded
	Text    string   // decoded body
	Header  netmail.Header
	Raw     []byte
}

// Server is a recording SMTP server.
type Server struct {
	// Addr is host:port on 127.0.0.1.
	Addr string
	// Host and Port are Addr's parts.
	Host string
	Port int

	mu       sync.Mutex
	refusals map[string][]refusal // lower-cased address -> answers to come
	rcpts    map[string]int       // lower-cased address -> RCPT TO commands seen
	msgs     []Message
	taken    []bool        // messages already handed out by WaitFor
	received chan struct{} // closed and replaced on every new message
}

// Start listens on a free loopback port and serves until t ends.
func Start(t testing.TB) *Server {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("mailtest: listen: %v", err)
	}
	s := &Server{Addr: ln.Addr().String(), received: make(chan struct{})}
	host, port, _ := net.SplitHostPort(s.Addr)
	s.Host = host
	s.Port, _ = strconv.Atoi(port)

	srv := smtp.NewServer(smtp.BackendFunc(func(*smtp.Conn) (smtp.Session, error) {
		return &session{srv: s}, nil
	}))
	srv.Domain = "localhost"
	srv.MaxMessageBytes = 1 << 20
	srv.MaxRecipients = 50
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return s
}

// Config is an SMTP mailer configuration that delivers here (plain SMTP,
// no authentication).
func (s *Server) Config() mail.SMTPConfig {
	return mail.SMTPConfig{Host: s.Host, Port: s.Port, From: From, TLS: mail.TLSNone}
}

// Mailer is a real SMTP mailer that delivers here.
func (s *Server) Mailer() *mail.SMTP {
	m, err := mail.NewSMTP(s.Config())
	if err != nil {
		panic(err) // the configuration is ours and valid
	}
	return m
}

// Messages returns every message received so far, oldest first.
func (s *Server) Messages() []Message {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Message(nil), s.msgs...)
}

// MessagesTo returns the messages received so far for one recipient
// (compared case-insensitively), oldest first.
func (s *Server) MessagesTo(to string) []Message {
	var out []Message
	for _, m := range s.Messages() {
		if m.sentTo(to) {
			out = append(out, m)
		}
	}
	return out
}

// WaitFor waits until a message for to arrives that no earlier WaitFor call
// returned, and returns it; each message is handed out once, so a test that
// triggers two mails to one address calls WaitFor twice. It fails when ctx
// ends first.
func (s *Server) WaitFor(ctx context.Context, to string) (Message, error) {
	for {
		s.mu.Lock()
		for i, m := range s.msgs {
			if !s.taken[i] && m.sentTo(to) {
				s.taken[i] = true
				s.mu.Unlock()
				return m, nil
			}
		}
		ch := s.received
		s.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return Message{}, fmt.Errorf("mailtest: no message for %s: %w", to, ctx.Err())
		}
	}
}

// refusal is how RCPT TO for an address is answered: with code and
// text, n more times (or always when n <= 0).
type refusal struct {
	code int
	text string
	n    int
}

// Refuse makes the server refuse RCPT TO for the address to (compared
// case-insensitively) with the reply code (4xx temporary, 5xx permanent)
// and text: the next n times, or every time when n <= 0. Refusals queue:
// Refuse(a, 450, ..., 1) then Refuse(a, 550, ..., 0) answers 450 once,
// then 550 from then on. Other recipients of the transaction are not
// affected; once the queue is used up the address is accepted.
func (s *Server) Refuse(to string, code int, text string, n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.refusals == nil {
		s.refusals = map[string][]refusal{}
	}
	k := strings.ToLower(to)
	s.refusals[k] = append(s.refusals[k], refusal{code: code, text: text, n: n})
}

// RcptCount is how many times a client named to (case-insensitively) in
// RCPT TO, accepted or refused: how often delivery to it was tried.
func (s *Server) RcptCount(to string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.rcpts[strings.ToLower(to)]
}

// refusalFor counts an RCPT TO for to and takes its next refusal, if any.
func (s *Server) refusalFor(to string) (refusal, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	k := strings.ToLower(to)
	if s.rcpts == nil {
		s.rcpts = map[string]int{}
	}
	s.rcpts[k]++
	q := s.refusals[k]
	if len(q) == 0 {
		return refusal{}, false
	}
	r := q[0]
	if r.n > 0 {
		q[0].n--
		if q[0].n == 0 {
			s.refusals[k] = q[1:]
		}
	}
	return r, true
}

func (m Message) sentTo(to string) bool {
	for _, r := range m.To {
		if strings.EqualFold(r, to) {
			return true
		}
	}
	return false
}

func (s *Server) add(m Message) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.msgs = append(s.msgs, m)
	s.taken = append(s.taken, false)
	close(s.received)
	s.received = make(chan struct{})
}

// session is one SMTP transaction's state.
type session struct {
	srv  *Server
	from string
	to   []string
}

func (x *session) Reset()        { x.from, x.to = "", nil }
func (x *session) Logout() error { return nil }

func (x *session) Mail(from string, _ *smtp.MailOptions) error {
	x.from = from
	return nil
}

func (x *session) Rcpt(to string, _ *smtp.RcptOptions) error {
	if r, ok := x.srv.refusalFor(to); ok {
		class := r.code / 100
		return &smtp.SMTPError{Code: r.code, EnhancedCode: smtp.EnhancedCode{class, 1, 1}, Message: r.text}
	}
	x.to = append(x.to, to)
	return nil
}

func (x *session) Data(r io.Reader) error {
	raw, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	m, err := parse(raw)
	if err != nil {
		return &smtp.SMTPError{Code: 554, Message: "mailtest: unparsable message: " + err.Error()}
	}
	m.From, m.To = x.from, append([]string(nil), x.to...)
	x.srv.add(m)
	return nil
}

// parse decodes a single-part text message, which is all Berth sends.
func parse(raw []byte) (Message, error) {
	pm, err := netmail.ReadMessage(bytes.NewReader(raw))
	if err != nil {
		return Message{}, err
	}
	var dec mime.WordDecoder
	subject, err := dec.DecodeHeader(pm.Header.Get("Subject"))
	if err != nil {
		return Message{}, fmt.Errorf("subject: %w", err)
	}
	var body io.Reader = pm.Body
	switch strings.ToLower(strings.TrimSpace(pm.Header.Get("Content-Transfer-Encoding"))) {
	case "quoted-printable":
		body = quotedprintable.NewReader(body)
	case "base64":
		body = base64.NewDecoder(base64.StdEncoding, newlineStripper{body})
	case "", "7bit", "8bit", "binary":
	default:
		return Message{}, errors.New("unknown transfer encoding")
	}
	text, err := io.ReadAll(body)
	if err != nil {
		return Message{}, fmt.Errorf("body: %w", err)
	}
	return Message{Subject: subject, Text: strings.ReplaceAll(string(text), "\r\n", "\n"), Header: pm.Header, Raw: raw}, nil
}

// newlineStripper drops CR and LF so base64 split over lines decodes.
type newlineStripper struct{ r io.Reader }

func (n newlineStripper) Read(p []byte) (int, error) {
	k, err := n.r.Read(p)
	j := 0
	for _, b := range p[:k] {
		if b != '\r' && b != '\n' {
			p[j] = b
			j++
		}
	}
	return j, err
}
