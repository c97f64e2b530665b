package supervise

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// timeFormat is fixed-width so lines sort and parse cheaply.
const timeFormat = "2006-01-02T15:04:05.000000000Z"

// maxLine bounds one log line; a longer one is split.
const maxLine = 16 << 10

// rotator appends timestamped lines to dir/output.log and keeps at most
// files-1 older files (output.log.1 is the newest of them), each at most
// max bytes, so an app that prints without end fills a bounded space.
type rotator struct {
	mu    sync.Mutex
	path  string
	max   int64
	files int
	f     *os.File
	size  int64
	now   func() time.Time
}

func openRotator(dir string, max int64, files int) (*rotator, error) {
	if max <= 0 {
		max = defaultLogMax
	}
	if files < 2 {
		files = defaultLogN
	}
	r := &rotator{path: filepath.Join(dir, logFile), max: max, files: files, now: time.Now}
	if err := r.open(); err != nil {
		return nil, err
	}
	return r, nil
}

func (r *rotator) open() error {
	f, err := os.OpenFile(r.path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("open log: %w", err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return err
	}
	r.f, r.size = f, st.Size()
	return nil
}

func (r *rotator) rotate() error {
	r.f.Close()
	for i := r.files - 1; i >= 1; i-- {
		from := r.path
		if i > 1 {
			from = fmt.Sprintf("%s.%d", r.path, i-1)
		}
		if err := os.Rename(from, fmt.Sprintf("%s.%d", r.path, i)); err != nil && !os.IsNotExist(err) {
			return err
		}
	}
	return r.open()
}

// line writes one line of stream (stdout or stderr).
func (r *rotator) line(stream, text string) {
	text = strings.TrimRight(text, "\r\n")
	r.mu.Lock()
	defer r.mu.Unlock()
	// Stamped under the lock: the file's order is the time order.
	rec := r.now().UTC().Format(timeFormat) + " " + stream + " " + text + "\n"
	if r.size > 0 && r.size+int64(len(rec)) > r.max {
		if err := r.rotate(); err != nil {
			fmt.Fprintf(os.Stderr, "rotate log: %v\n", err)
			return
		}
	}
	n, _ := r.f.WriteString(rec)
	r.size += int64(n)
}

func (r *rotator) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.f.Close()
}

// pump copies a child's stream into the log line by line, splitting lines
// longer than maxLine.
func (r *rotator) pump(stream string, src io.Reader, done func()) {
	defer done()
	br := bufio.NewReaderSize(src, maxLine)
	for {
		b, err := br.ReadSlice('\n')
		if len(b) > 0 {
			r.line(stream, strings.ToValidUTF8(string(b), "\uFFFD"))
		}
		if err == bufio.ErrBufferFull {
			continue
		}
		if err != nil {
			return
		}
	}
}

// parsedLine is one stored log line.
type parsedLine struct {
	Time   time.Time
	Stream string
	Text   string
}

func parseLine(s string) (parsedLine, bool) {
	if len(s) < len(timeFormat)+2 {
		return parsedLine{}, false
	}
	t, err := time.Parse(timeFormat, s[:len(timeFormat)])
	if err != nil {
		return parsedLine{}, false
	}
	rest := s[len(timeFormat)+1:]
	stream, text, ok := strings.Cut(rest, " ")
	if !ok || (stream != "stdout" && stream != "stderr") {
		return parsedLine{}, false
	}
	return parsedLine{Time: t, Stream: stream, Text: text}, true
}
