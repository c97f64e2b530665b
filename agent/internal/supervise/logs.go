package supervise

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"syscall"
	"time"

	agentv1 "github.com/berthhq/berth/gen/proto/berth/agent/v1"
	"google.golang.org/protobuf/types/known/timestamppb"
)

const (
	defaultTail = 200
	maxTail     = 10000
	chunkLines  = 500
	followEvery = 200 * time.Millisecond
)

// logFiles are an instance's log files, oldest first.
func logFiles(dir string) []string {
	var out []string
	for i := 9; i >= 1; i-- {
		p := fmt.Sprintf("%s.%d", filepath.Join(dir, logFile), i)
		if _, err := os.Stat(p); err == nil {
			out = append(out, p)
		}
	}
	return append(out, filepath.Join(dir, logFile))
}

// readLines parses the complete lines of r.
func readLines(r io.Reader, keep func(parsedLine) bool) []parsedLine {
	var out []parsedLine
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), maxLine+256)
	for sc.Scan() {
		if l, ok := parseLine(sc.Text()); ok && keep(l) {
			out = append(out, l)
		}
	}
	return out
}

// readTail is the last n lines of an instance, reading older files only
// when the newer ones hold too few.
func readTail(dir string, n int) []parsedLine {
	return readTailSince(dir, n, time.Time{})
}

func readTailSince(dir string, n int, since time.Time) []parsedLine {
	files := logFiles(dir)
	var out []parsedLine
	for i := len(files) - 1; i >= 0 && len(out) < n; i-- {
		f, err := os.Open(files[i])
		if err != nil {
			continue
		}
		lines := readLines(f, func(l parsedLine) bool { return !l.Time.Before(since) })
		f.Close()
		out = append(lines, out...)
	}
	if len(out) > n {
		out = out[len(out)-n:]
	}
	return out
}

// follower reads what an instance appends to its log, across rotations.
type follower struct {
	u      *unit
	ino    uint64
	offset int64
}

func fileID(path string) (uint64, int64, bool) {
	st, err := os.Stat(path)
	if err != nil {
		return 0, 0, false
	}
	sys, ok := st.Sys().(*syscall.Stat_t)
	if !ok {
		return 0, st.Size(), true
	}
	return sys.Ino, st.Size(), true
}

// readFrom returns the complete lines of path from offset and the offset
// after the last of them.
func readFrom(path string, offset int64) ([]parsedLine, int64) {
	f, err := os.Open(path)
	if err != nil {
		return nil, offset
	}
	defer f.Close()
	if _, err := f.Seek(offset, io.SeekStart); err != nil {
		return nil, offset
	}
	b, err := io.ReadAll(io.LimitReader(f, 64<<20))
	if err != nil {
		return nil, offset
	}
	end := len(b)
	for end > 0 && b[end-1] != '\n' {
		end-- // a line still being written waits for the next poll
	}
	var out []parsedLine
	for len(b[:end]) > 0 {
		i := slices.Index(b[:end], '\n')
		if l, ok := parseLine(string(b[:i])); ok {
			out = append(out, l)
		}
		b, end = b[i+1:], end-i-1
		offset += int64(i + 1)
	}
	return out, offset
}

// poll returns the lines appended since the last poll.
func (f *follower) poll() []parsedLine {
	cur := filepath.Join(f.u.dir, logFile)
	ino, _, ok := fileID(cur)
	if !ok {
		return nil
	}
	var out []parsedLine
	if ino != f.ino {
		// Rotated (maybe more than once since the last poll): finish the
		// file we were reading, now output.log.K, then read the newer
		// rotated ones whole. Lines rotated out of the last file are gone.
		k := 0
		for i := 1; i <= 9; i++ {
			if oino, _, ok := fileID(fmt.Sprintf("%s.%d", cur, i)); ok && oino == f.ino {
				k = i
				break
			}
		}
		if k > 0 {
			out, _ = readFrom(fmt.Sprintf("%s.%d", cur, k), f.offset)
			for i := k - 1; i >= 1; i-- {
				lines, _ := readFrom(fmt.Sprintf("%s.%d", cur, i), 0)
				out = append(out, lines...)
			}
		}
		f.ino, f.offset = ino, 0
	}
	lines, off := readFrom(cur, f.offset)
	f.offset = off
	return append(out, lines...)
}

// Logs sends the last req.Tail lines (at or after req.Since) of the app's
// processes, then with req.Follow every new line until ctx ends.
func (m *Manager) Logs(ctx context.Context, req *agentv1.LogsRequest, send func(lines []*agentv1.LogLine) error) error {
	if req == nil || !idRE.MatchString(req.GetAppId()) {
		return fmt.Errorf("logs: app id %.40q: not a valid id", req.GetAppId())
	}
	tail := int(req.GetTail())
	if tail == 0 {
		tail = defaultTail
	}
	if tail > maxTail {
		return fmt.Errorf("logs: tail %d: at most %d", tail, maxTail)
	}
	var since time.Time
	if req.GetSince() != nil {
		if err := req.GetSince().CheckValid(); err != nil {
			return fmt.Errorf("logs: since: %w", err)
		}
		since = req.GetSince().AsTime()
	}
	for _, p := range req.GetProcesses() {
		if len(p) > 32 || !nameRE.MatchString(p) {
			return fmt.Errorf("logs: process name %.40q: not a valid name", p)
		}
	}
	want := func(u *unit) bool {
		return len(req.GetProcesses()) == 0 || slices.Contains(req.GetProcesses(), u.cfg.Process)
	}
	type tagged struct {
		parsedLine
		u *unit
	}
	followers := map[string]*follower{}
	var all []tagged
	for _, u := range m.units(req.GetAppId()) {
		if !want(u) {
			continue
		}
		// Note where the file ends before reading, so follow starts where
		// the tail stopped (a line written in between may come twice,
		// never not at all).
		ino, size, _ := fileID(filepath.Join(u.dir, logFile))
		followers[u.dir] = &follower{u: u, ino: ino, offset: size}
		for _, l := range readTailSince(u.dir, tail, since) {
			all = append(all, tagged{l, u})
		}
	}
	slices.SortStableFunc(all, func(a, b tagged) int { return a.Time.Compare(b.Time) })
	if len(all) > tail {
		all = all[len(all)-tail:]
	}
	out := make([]*agentv1.LogLine, 0, min(len(all), chunkLines))
	for _, l := range all {
		out = append(out, toProto(l.parsedLine, l.u))
		if len(out) == chunkLines {
			if err := send(out); err != nil {
				return err
			}
			out = make([]*agentv1.LogLine, 0, chunkLines)
		}
	}
	if len(out) > 0 {
		if err := send(out); err != nil {
			return err
		}
	}
	if !req.GetFollow() {
		return nil
	}
	t := time.NewTicker(followEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		for _, u := range m.units(req.GetAppId()) {
			if want(u) && followers[u.dir] == nil {
				followers[u.dir] = &follower{u: u} // a new instance: from its start
			}
		}
		var batch []tagged
		for _, f := range followers {
			for _, l := range f.poll() {
				batch = append(batch, tagged{l, f.u})
			}
		}
		if len(batch) == 0 {
			continue
		}
		slices.SortStableFunc(batch, func(a, b tagged) int { return a.Time.Compare(b.Time) })
		for len(batch) > 0 {
			n := min(len(batch), chunkLines)
			lines := make([]*agentv1.LogLine, n)
			for i, l := range batch[:n] {
				lines[i] = toProto(l.parsedLine, l.u)
			}
			if err := send(lines); err != nil {
				return err
			}
			batch = batch[n:]
		}
	}
}

func toProto(l parsedLine, u *unit) *agentv1.LogLine {
	return &agentv1.LogLine{
		Time: timestamppb.New(l.Time), Process: u.cfg.Process, Instance: u.cfg.Index,
		Stream: l.Stream, Text: l.Text,
	}
}
