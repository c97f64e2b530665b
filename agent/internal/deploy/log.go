package deploy

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"fmt"
	"io"
	"regexp"
	"strings"
	"sync"
	"time"
)

// logBuffer turns a job's output lines into log events: a chunk is cut
// when it reaches maxChunkBytes, at every flush interval, and at every step
// change (so each chunk belongs to one step). Past max bytes, output is
// dropped and counted, after one visible marker line.
type logBuffer struct {
	j     *job
	max   int64
	every time.Duration

	flushMu sync.Mutex // orders chunks: taken across cut and emit

	mu        sync.Mutex
	buf       []byte
	step      string
	total     int64
	dropped   int64
	truncated bool

	stop chan struct{}
	done chan struct{}
}

func newLogBuffer(j *job, max int64, every time.Duration) *logBuffer {
	return &logBuffer{j: j, max: max, every: every}
}

// start runs the periodic flush until close.
func (l *logBuffer) start() {
	l.stop, l.done = make(chan struct{}), make(chan struct{})
	go func() {
		defer close(l.done)
		t := time.NewTicker(l.every)
		defer t.Stop()
		for {
			select {
			case <-t.C:
				l.flush()
			case <-l.stop:
				return
			}
		}
	}()
}

// close stops the periodic flush and flushes what is left.
func (l *logBuffer) close() {
	if l.stop != nil {
		close(l.stop)
		<-l.done
		l.stop = nil
	}
	l.flush()
}

// line adds one line (its newline optional), redacted.
func (l *logBuffer) line(b []byte) {
	b = l.j.redact.apply(bytes.TrimSuffix(b, []byte("\n")))
	l.mu.Lock()
	n := int64(len(b) + 1)
	if l.truncated {
		l.dropped += n
		l.mu.Unlock()
		return
	}
	if l.total+n > l.max {
		l.truncated = true
		l.dropped += n
		l.buf = fmt.Appendf(l.buf, "[berth] output truncated: this job's log exceeded %d bytes; the rest is dropped\n", l.max)
	} else {
		l.total += n
		l.buf = append(append(l.buf, b...), '\n')
	}
	full := len(l.buf) >= maxChunkBytes
	l.mu.Unlock()
	if full {
		l.flush()
	}
}

func (l *logBuffer) printf(format string, args ...any) {
	l.line(fmt.Appendf(nil, format, args...))
}

// setStep flushes the previous step's output and starts a new step.
func (l *logBuffer) setStep(step string) {
	l.flushMu.Lock()
	defer l.flushMu.Unlock()
	l.flushLocked()
	l.mu.Lock()
	l.step = step
	l.mu.Unlock()
}

func (l *logBuffer) flush() {
	l.flushMu.Lock()
	defer l.flushMu.Unlock()
	l.flushLocked()
}

func (l *logBuffer) flushLocked() {
	l.mu.Lock()
	data, step := l.buf, l.step
	l.buf = nil
	l.mu.Unlock()
	for len(data) > 0 {
		n := min(len(data), maxChunkBytes)
		l.j.emit(Event{Type: EventLog, Step: step, Data: data[:n:n]})
		data = data[n:]
	}
}

func (l *logBuffer) droppedBytes() int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.dropped
}

// pump copies r into the log line by line until EOF. Very long lines are
// split at 64 KiB.
func (l *logBuffer) pump(r io.Reader) {
	br := bufio.NewReaderSize(r, maxChunkBytes)
	for {
		b, err := br.ReadSlice('\n')
		if len(b) > 0 {
			l.line(b)
		}
		if err != nil && err != bufio.ErrBufferFull {
			return
		}
	}
}

// redactor blanks out a job's secrets in anything it prints.
type redactor struct {
	secrets [][]byte
}

// urlPassword matches the password of a URL's user info.
var urlPassword = regexp.MustCompile(`([A-Za-z][A-Za-z0-9+.-]*://[^/\s:@]*):[^@\s/]+@`)

// secretEnvKey picks env values worth hiding: a deploy script that echoes
// its environment should not leak the database password into the logs.
var secretEnvKey = regexp.MustCompile(`(?i)(pass|secret|token|key|credential|auth|private|dsn)`)

func newRedactor(spec Spec) *redactor {
	r := &redactor{}
	add := func(s string) {
		if len(s) >= 4 {
			r.secrets = append(r.secrets, []byte(s))
		}
	}
	if c := spec.Credential; c != nil {
		if c.Token != "" {
			userpass := c.Username + ":" + c.Token
			add(userpass)
			add(base64.StdEncoding.EncodeToString([]byte(userpass)))
			add(c.Token)
		}
		for _, ln := range strings.Split(c.SSHPrivateKey, "\n") {
			if ln = strings.TrimSpace(ln); len(ln) >= 16 && !strings.HasPrefix(ln, "-----") {
				add(ln)
			}
		}
	}
	for k, v := range spec.Env {
		if len(v) >= 6 && secretEnvKey.MatchString(k) {
			add(v)
		}
	}
	for _, v := range backupSecrets(spec.Backup) {
		add(v)
	}
	return r
}

func (r *redactor) apply(b []byte) []byte {
	for _, s := range r.secrets {
		if bytes.Contains(b, s) {
			b = bytes.ReplaceAll(b, s, []byte("***"))
		}
	}
	return urlPassword.ReplaceAll(b, []byte("$1:***@"))
}

func (r *redactor) string(s string) string { return string(r.apply([]byte(s))) }
