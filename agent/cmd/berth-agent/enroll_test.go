package main

import (
	"bytes"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// The join token never comes from argv; a token file must be the caller's
// own and closed to group and others.
func TestEnrollTokenSources(t *testing.T) {
	dir := t.TempDir()
	enroll := func(stdin string, args ...string) (int, string) {
		var out, errb bytes.Buffer
		code := run(append([]string{"enroll", "--controller", "127.0.0.1:1", "--ca-pin", "sha256:00", "--data-dir", dir}, args...),
			strings.NewReader(stdin), &out, &errb)
		return code, errb.String()
	}
	if code, msg := enroll("", "--token", "secret"); code != 1 || !strings.Contains(msg, "--token is not accepted") || strings.Contains(msg, "secret") {
		t.Fatalf("--token: %d %q", code, msg)
	}
	if code, msg := enroll(""); code != 1 || !strings.Contains(msg, "--token-file F or --token-stdin") {
		t.Fatalf("no token: %d %q", code, msg)
	}
	if code, msg := enroll("\n", "--token-stdin"); code != 1 || !strings.Contains(msg, "empty") {
		t.Fatalf("empty stdin: %d %q", code, msg)
	}
	open := filepath.Join(dir, "open")
	if err := os.WriteFile(open, []byte("tok\n"), 0o640); err != nil {
		t.Fatal(err)
	}
	if code, msg := enroll("", "--token-file", open); code != 1 || !strings.Contains(msg, "must not be readable or writable by group or others") {
		t.Fatalf("token file 0640: %d %q", code, msg)
	}
	if os.Getuid() == 0 {
		nobody, err := user.Lookup("nobody")
		if err != nil {
			t.Fatal(err)
		}
		uid, _ := strconv.Atoi(nobody.Uid)
		other := filepath.Join(dir, "other")
		if err := os.WriteFile(other, []byte("tok\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(other, uid, -1); err != nil {
			t.Fatal(err)
		}
		if code, msg := enroll("", "--token-file", other); code != 1 || !strings.Contains(msg, "not by the user running berth-agent") {
			t.Fatalf("token file owned by nobody: %d %q", code, msg)
		}
	}
	// A private file and stdin both get as far as dialing the controller
	// (nothing listens on port 1).
	private := filepath.Join(dir, "private")
	if err := os.WriteFile(private, []byte("tok\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{{"--token-file", private}, {"--token-stdin"}} {
		if code, msg := enroll("tok\n", args...); code != 1 || !strings.Contains(msg, "controller 127.0.0.1:1") {
			t.Fatalf("%v: %d %q", args, code, msg)
		}
	}
}
