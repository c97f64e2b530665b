package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// installEnv serves what the controller serves to install.sh (a stand-in
// agent binary and SHA256SUMS) and runs the real script against it.
type installEnv struct {
	t      *testing.T
	script string
	sum    string // the served binary's SHA-256
	root   string
	out    string // what the stand-in agent recorded
	hits   map[string]int
}

func newInstallEnv(t *testing.T) *installEnv {
	t.Helper()
	if runtime.GOARCH != "amd64" && runtime.GOARCH != "arm64" {
		t.Fatalf("install.sh supports amd64 and arm64, not %s", runtime.GOARCH)
	}
	raw, err := os.ReadFile("../../packaging/install.sh")
	if err != nil {
		t.Fatal(err)
	}
	// The stand-in agent records how it was called and what came on stdin.
	bin := []byte("#!/bin/sh\n{ echo \"args: $*\"; echo \"stdin: $(cat)\"; } > \"$BERTH_STANDIN_OUT\"\necho enrolled\n")
	s := sha256.Sum256(bin)
	e := &installEnv{t: t, sum: hex.EncodeToString(s[:]), root: t.TempDir(), hits: map[string]int{}}
	e.out = filepath.Join(e.root, "standin.out")
	name := "berth-agent-linux-" + runtime.GOARCH
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		e.hits[r.URL.Path]++
		switch r.URL.Path {
		case "/download/" + name:
			w.Write(bin)
		case "/download/SHA256SUMS":
			w.Write([]byte(e.sum + "  " + name + "\n"))
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(srv.Close)
	e.script = strings.Replace(string(raw), "@@BASE_URL@@", srv.URL, 1)
	return e
}

func (e *installEnv) env() []string {
	return append(os.Environ(), "BERTH_INSTALL_PREFIX="+e.root+"/bin", "BERTH_AGENT_DATA_DIR="+e.root+"/data",
		"BERTH_INSTALL_NO_SYSTEMD=1", "BERTH_STANDIN_OUT="+e.out)
}

func (e *installEnv) run(args ...string) (int, string) {
	e.t.Helper()
	cmd := exec.Command("sh", append([]string{"-s", "--"}, args...)...)
	cmd.Stdin = strings.NewReader(e.script)
	cmd.Env = e.env()
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	if ee, ok := err.(*exec.ExitError); ok {
		return ee.ExitCode(), out.String()
	} else if err != nil {
		e.t.Fatal(err)
	}
	return 0, out.String()
}

func (e *installEnv) installed() bool {
	_, err := os.Stat(filepath.Join(e.root, "bin", "berth-agent"))
	return err == nil
}

func sumFlag() string { return "--sha256-" + runtime.GOARCH }

// The binary is checked against the checksum on the command line, not only
// against SHA256SUMS from the same server: a server that serves a binary
// and a matching SHA256SUMS is refused when the command says otherwise.
func TestInstallRefusesWrongChecksum(t *testing.T) {
	e := newInstallEnv(t)
	tokenFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenFile, []byte("tok\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	wrong := strings.Repeat("ab", 32)
	code, out := e.run("--controller", "c:7443", "--ca-pin", "sha256:00", sumFlag(), wrong, "--token-file", tokenFile)
	if code == 0 || !strings.Contains(out, "checksum mismatch") {
		t.Fatalf("wrong checksum: code %d\n%s", code, out)
	}
	if e.installed() {
		t.Fatal("a binary with the wrong checksum was installed")
	}
	// Without the checksum for this machine's architecture it refuses
	// before downloading anything.
	other := "--sha256-arm64"
	if runtime.GOARCH == "arm64" {
		other = "--sha256-amd64"
	}
	code, out = e.run("--controller", "c:7443", "--ca-pin", "sha256:00", other, e.sum, "--token-file", tokenFile)
	if code == 0 || !strings.Contains(out, sumFlag()+" is required") {
		t.Fatalf("no checksum for this arch: code %d\n%s", code, out)
	}
	if n := e.hits["/download/berth-agent-linux-"+runtime.GOARCH]; n != 1 {
		t.Fatalf("binary downloaded %d times, want only by the first run", n)
	}
}

func TestInstallTokenFileMustBePrivate(t *testing.T) {
	e := newInstallEnv(t)
	tokenFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenFile, []byte("tok\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	code, out := e.run("--controller", "c:7443", "--ca-pin", "sha256:00", sumFlag(), e.sum, "--token-file", tokenFile)
	if code == 0 || !strings.Contains(out, "must not be readable by group or others") {
		t.Fatalf("token file 0644: code %d\n%s", code, out)
	}
	if e.installed() || len(e.hits) != 0 {
		t.Fatalf("refused token file, yet installed %v / downloaded %v", e.installed(), e.hits)
	}
	// The token is never accepted as an argument.
	code, out = e.run("--controller", "c:7443", "--token", "tok", "--ca-pin", "sha256:00", sumFlag(), e.sum)
	if code == 0 || !strings.Contains(out, "--token is not accepted") {
		t.Fatalf("--token: code %d\n%s", code, out)
	}
}

// The token reaches the agent on its stdin, never as an argument: from
// --token-file, or typed at the terminal's prompt (a pseudo-terminal here,
// made by script(1)) when no file is given.
func TestInstallHandsTheTokenOnStdin(t *testing.T) {
	e := newInstallEnv(t)
	tokenFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenFile, []byte("bjt_fromfile\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	code, out := e.run("--controller", "c:7443", "--ca-pin", "sha256:00", sumFlag(), e.sum, "--token-file", tokenFile)
	if code != 0 || !strings.Contains(out, "enrolled") {
		t.Fatalf("install: code %d\n%s", code, out)
	}
	got, _ := os.ReadFile(e.out)
	want := "args: enroll --controller c:7443 --ca-pin sha256:00 --data-dir " + e.root + "/data --token-stdin\nstdin: bjt_fromfile\n"
	if string(got) != want {
		t.Fatalf("stand-in agent saw:\n%s\nwant:\n%s", got, want)
	}

	// No file: asked on the terminal, with echo off.
	os.Remove(e.out)
	scriptFile := filepath.Join(t.TempDir(), "install.sh")
	if err := os.WriteFile(scriptFile, []byte(e.script), 0o600); err != nil {
		t.Fatal(err)
	}
	shell := "sh " + scriptFile + " --controller c:7443 --ca-pin sha256:00 " + sumFlag() + " " + e.sum
	cmd := exec.Command("script", "-qec", shell, "/dev/null")
	cmd.Env = e.env()
	// The token is typed once the prompt is there, as a person would: the
	// terminal echoes only what arrives while echo is on.
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var tty bytes.Buffer
	buf := make([]byte, 4096)
	typed := false
	for {
		n, err := stdout.Read(buf)
		tty.Write(buf[:n])
		if !typed && strings.Contains(tty.String(), "Join token (from berth server add): ") {
			io.WriteString(stdin, "bjt_typed\n")
			stdin.Close()
			typed = true
		}
		if err != nil {
			break
		}
	}
	if err := cmd.Wait(); err != nil || !typed {
		t.Fatalf("install at a terminal: %v\n%s", err, tty.String())
	}
	got, _ = os.ReadFile(e.out)
	if !strings.Contains(string(got), "stdin: bjt_typed\n") || strings.Count(string(got), "bjt_typed") != 1 {
		t.Fatalf("stand-in agent saw:\n%s\nterminal:\n%s", got, tty.String())
	}
	if strings.Contains(tty.String(), "bjt_typed") {
		t.Fatalf("the prompt is missing or echoed the token:\n%s", tty.String())
	}
}
