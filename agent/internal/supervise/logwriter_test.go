package supervise

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestRotatorSplitsAndBounds(t *testing.T) {
	dir := t.TempDir()
	r, err := openRotator(dir, 1000, 3)
	if err != nil {
		t.Fatal(err)
	}
	long := strings.Repeat("x", maxLine+100) + "\n"
	in := strings.NewReader(long + "short\n" + strings.Repeat("line\n", 500) + "last")
	done := make(chan struct{})
	r.pump("stderr", in, func() { close(done) })
	<-done
	r.Close()
	ents, _ := os.ReadDir(dir)
	if len(ents) != 3 {
		t.Fatalf("%d files", len(ents))
	}
	for _, e := range ents {
		info, _ := e.Info()
		// One record may exceed the bound only when it alone fills a file.
		if info.Size() > 1000 && info.Size() > int64(maxLine+len(timeFormat)+10) {
			t.Errorf("%s: %d bytes", e.Name(), info.Size())
		}
	}
	lines := readTail(dir, 5)
	if len(lines) != 5 || lines[4].Text != "last" || lines[3].Text != "line" || lines[4].Stream != "stderr" {
		t.Fatalf("tail %v", lines)
	}
	if _, err := os.Stat(filepath.Join(dir, logFile+".3")); !os.IsNotExist(err) {
		t.Fatalf("a fourth file: %v", err)
	}

	// A line longer than maxLine is split, none lost.
	dir2 := t.TempDir()
	r2, _ := openRotator(dir2, 1<<20, 2)
	done2 := make(chan struct{})
	r2.pump("stdout", strings.NewReader(long), func() { close(done2) })
	<-done2
	r2.Close()
	got := readTail(dir2, 10)
	if len(got) != 2 || len(got[0].Text)+len(got[1].Text) != maxLine+100 {
		t.Fatalf("split: %d lines", len(got))
	}
	for _, bad := range []string{"", "garbage", "2026-01-02T15:04:05.000000000Z stdin x", "2026-13-02T15:04:05.000000000Z stdout x"} {
		if _, ok := parseLine(bad); ok {
			t.Errorf("parsed %q", bad)
		}
	}
}
