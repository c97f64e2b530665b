package main_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

type fleetEnv struct {
	c       *controller
	dataDir string
	env     []string // BERTH_ADDR, BERTH_TOKEN, BERTH_CA_FILE
}

func startFleet(t *testing.T) *fleetEnv {
	t.Helper()
	dataDir := shortDir(t)
	c := startController(t, dataDir, "--metrics-interval", "1s", "--heartbeat-interval", "1s")
	return startFleetOn(t, &fleetEnv{c: c, dataDir: dataDir})
}

// startFleetOn creates the first admin and a CLI token on a running controller.
func startFleetOn(t *testing.T, f *fleetEnv) *fleetEnv {
	t.Helper()
	dataDir, c := f.dataDir, f.c
	r := runIn(t, nil, "correct horse battery staple\n", "admin create", "admin", "create", "--email", "ops@example.com", "--password-stdin", "--data-dir", dataDir)
	if r.code != 0 {
		t.Fatalf("admin create: %+v", r)
	}
	r = run(t, nil, "token", "create", "--email", "ops@example.com", "--name", "e2e", "-o", "json", "--data-dir", dataDir)
	var tok struct {
		Token string `json:"token"`
	}
	if r.code != 0 || json.Unmarshal([]byte(r.stdout), &tok) != nil || !strings.HasPrefix(tok.Token, "berth_") {
		t.Fatalf("token create: %+v", r)
	}
	f.env = []string{"BERTH_ADDR=" + c.grpcAddr, "BERTH_TOKEN=" + tok.Token, "BERTH_CA_FILE=" + filepath.Join(dataDir, "ca.crt")}
	return f
}

// runIn runs berth with stdin, bounded in time.
func runIn(t *testing.T, env []string, stdin, what string, args ...string) result {
	t.Helper()
	return runBin(t, berthBin, env, stdin, what, args...)
}

// runBin runs a binary with stdin, bounded in time, and collects its output.
func runBin(t *testing.T, bin string, env []string, stdin, what string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdin = strings.NewReader(stdin)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	return result{code, out.String(), errb.String()}
}

type added struct {
	ID            string `json:"id"`
	Name          string `json:"name"`
	Token         string `json:"token"`
	CAPin         string `json:"ca_pin"`
	EnrollCommand string `json:"enroll_command"`
	Install       string `json:"install_command"`
}

func (f *fleetEnv) addServer(t *testing.T, name string, extra ...string) added {
	t.Helper()
	r := run(t, f.env, append([]string{"server", "add", name, "--label", "env=test", "-o", "json"}, extra...)...)
	var a added
	if r.code != 0 || json.Unmarshal([]byte(r.stdout), &a) != nil || a.Token == "" || !strings.HasPrefix(a.CAPin, "sha256:") {
		t.Fatalf("server add: %+v", r)
	}
	return a
}

func enrollAgent(t *testing.T, addr, token, pin, dir string) result {
	t.Helper()
	// The token goes in on stdin: on the command line ps would show it.
	return runBin(t, agentBin, nil, token+"\n", "berth-agent enroll", "enroll", "--controller", addr, "--token-stdin", "--ca-pin", pin, "--data-dir", dir)
}

type agentProc struct {
	cmd  *exec.Cmd
	logs *syncBuffer
	done chan error
}

func startAgent(t *testing.T, dir string, extra ...string) *agentProc {
	t.Helper()
	p := &agentProc{logs: &syncBuffer{}, done: make(chan error, 1)}
	// Deploy paths in these tests are t.TempDir()s. The machine's own
	// nginx is never touched: a test that wants sites passes its own.
	args := append([]string{"run", "--data-dir", dir, "--app-dirs", os.TempDir(), "--nginx", "off"}, extra...)
	p.cmd = exec.Command(agentBin, args...)
	p.cmd.Stdout, p.cmd.Stderr = p.logs, p.logs
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.done <- p.cmd.Wait() }()
	t.Cleanup(func() {
		if p.cmd.ProcessState == nil {
			_ = p.cmd.Process.Kill()
			<-p.done
		}
		if t.Failed() {
			t.Logf("agent log:\n%s", p.logs.String())
		}
	})
	return p
}

func (f *fleetEnv) server(t *testing.T, name string) map[string]any {
	t.Helper()
	r := run(t, f.env, "server", "show", name, "-o", "json")
	if r.code != 0 {
		return nil
	}
	var m map[string]any
	_ = json.Unmarshal([]byte(r.stdout), &m)
	return m
}

// checkDiskAsDf checks a point of berth metrics -o json from a real agent
// on this machine: its disk use is df's used / (used + avail), which for
// "/" (the agent's disk here) is within a point of what df prints now
// (the disk moves a little between the sample and df), and its inode
// figures are this machine's.
func checkDiskAsDf(t *testing.T, p map[string]any) {
	t.Helper()
	num := func(k string) float64 {
		v, ok := p[k].(float64)
		if !ok {
			t.Fatalf("%s = %v in %v", k, p[k], p)
		}
		return v
	}
	used, avail, pct := num("disk_used"), num("disk_avail"), num("disk_percent")
	if avail <= 0 || used <= 0 || math.Abs(pct-used*100/(used+avail)) > 0.01 {
		t.Fatalf("disk: used %v avail %v percent %v, want used / (used + avail)", used, avail, pct)
	}
	out, err := exec.Command("df", "--output=pcent,itotal", "/").Output()
	if err != nil {
		t.Fatalf("df /: %v", err)
	}
	f := strings.Fields(strings.Split(strings.TrimSpace(string(out)), "\n")[1])
	dfPct, err1 := strconv.Atoi(strings.TrimSuffix(f[0], "%"))
	itotal, err2 := strconv.ParseFloat(f[1], 64)
	if err1 != nil || err2 != nil {
		t.Fatalf("df printed %q", out)
	}
	if math.Abs(pct-float64(dfPct)) > 1.5 {
		t.Fatalf("disk use %v%%, df says %d%% (%v)", pct, dfPct, p)
	}
	if num("inodes_total") != itotal {
		t.Fatalf("inodes_total %v, df says %v", num("inodes_total"), itotal)
	}
	if itotal > 0 {
		if ip := num("inodes_percent"); ip <= 0 || ip > 100 {
			t.Fatalf("inodes_percent %v", ip)
		}
	}
}

func waitFor(t *testing.T, what string, d time.Duration, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if ok() {
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("timed out waiting for %s", what)
}

// TestAgentEnrollStreamMetricsAndRemove runs the real controller and real
// agents as processes over mutual TLS on loopback.
func TestAgentEnrollStreamMetricsAndRemove(t *testing.T) {
	t.Parallel()
	f := startFleet(t)

	// Bad tokens and pins: one clear line, exit 1.
	a := f.addServer(t, "web-1")
	agentDir := filepath.Join(t.TempDir(), "agent")
	if r := enrollAgent(t, f.c.grpcAddr, a.Token, "sha256:"+strings.Repeat("0", 64), agentDir); r.code != 1 || !strings.Contains(r.stderr, "does not match --ca-pin") {
		t.Fatalf("wrong pin: %+v", r)
	}
	if r := enrollAgent(t, f.c.grpcAddr, "bjt_"+strings.Repeat("A", 43), a.CAPin, agentDir); r.code != 1 || !strings.Contains(r.stderr, "enrollment refused") {
		t.Fatalf("unknown token: %+v", r)
	}
	if _, err := os.Stat(filepath.Join(agentDir, "agent.key")); err == nil {
		t.Fatal("a refused enrollment left a key behind")
	}

	if r := enrollAgent(t, f.c.grpcAddr, a.Token, a.CAPin, agentDir); r.code != 0 || !strings.Contains(r.stdout, a.ID) {
		t.Fatalf("enroll: %+v", r)
	}
	if st, err := os.Stat(filepath.Join(agentDir, "agent.key")); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("agent key mode: %v %v", st, err)
	}
	// The token is single use.
	if r := enrollAgent(t, f.c.grpcAddr, a.Token, a.CAPin, filepath.Join(t.TempDir(), "again")); r.code != 1 || !strings.Contains(r.stderr, "enrollment refused") {
		t.Fatalf("reused token: %+v", r)
	}

	ag := startAgent(t, agentDir)
	waitFor(t, "web-1 online", 30*time.Second, func() bool {
		s := f.server(t, "web-1")
		return s != nil && s["status"] == "online" && s["hostname"] != ""
	})
	var pts []map[string]any
	waitFor(t, "metrics for web-1", 30*time.Second, func() bool {
		r := run(t, f.env, "metrics", "web-1", "--since", "5m", "--step", "1s", "-o", "json")
		pts = nil
		return r.code == 0 && json.Unmarshal([]byte(r.stdout), &pts) == nil && len(pts) >= 2 && pts[0]["mem_total"].(float64) > 0
	})
	checkDiskAsDf(t, pts[len(pts)-1])

	// Remove: the stream is cut and the agent cannot come back.
	if r := run(t, f.env, "server", "remove", "web-1"); r.code != 0 {
		t.Fatalf("remove: %+v", r)
	}
	waitFor(t, "the agent to be refused", 15*time.Second, func() bool {
		return strings.Contains(ag.logs.String(), "controller refused this agent")
	})
	if s := f.server(t, "web-1"); s != nil {
		t.Fatalf("removed server still listed: %v", s)
	}

	// A missing or bad token: non-zero, one line, Unauthenticated.
	bad := append([]string{}, f.env...)
	bad[1] = "BERTH_TOKEN=berth_" + strings.Repeat("x", 43)
	r := run(t, bad, "server", "list")
	if r.code == 0 || !strings.HasPrefix(oneLine(t, r), "berth: Unauthenticated") {
		t.Fatalf("bad token: %+v", r)
	}
	r = run(t, f.env[:1], "server", "list", "--ca-file", filepath.Join(f.dataDir, "ca.crt"))
	if r.code == 0 || !strings.Contains(oneLine(t, r), "Unauthenticated") {
		t.Fatalf("missing token: %+v", r)
	}

	// SIGTERM: the agent exits cleanly.
	_ = ag.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-ag.done:
		if err != nil {
			t.Fatalf("agent exit after SIGTERM: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("agent did not exit after SIGTERM")
	}
}

// TestInstallOneLiner runs the served install script the way the printed
// one-liner does (minus systemd, which this machine does not run), and
// checks that it refuses a binary whose checksum does not match.
func TestInstallOneLiner(t *testing.T) {
	t.Parallel()
	f := startFleet(t)
	a := f.addServer(t, "fresh-1")
	if !strings.Contains(a.Install, "/install.sh | sudo sh -s -- --controller "+f.c.grpcAddr+" --ca-pin "+a.CAPin) {
		t.Fatalf("install command: %q", a.Install)
	}
	// The command carries the served binary's SHA-256, computed by the
	// controller, and never the join token.
	bin := filepath.Join(filepath.Dir(berthBin), "agent-dist", "berth-agent-linux-"+runtime.GOARCH)
	orig, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(orig)
	if !strings.Contains(a.Install, "--sha256-"+runtime.GOARCH+" "+hex.EncodeToString(sum[:])) || strings.Contains(a.Install+a.EnrollCommand, a.Token) {
		t.Fatalf("install command %q, enroll command %q", a.Install, a.EnrollCommand)
	}
	code, script := get(f.c.url("/install.sh"))
	if code != 200 || !strings.Contains(script, `BASE_URL="http://`+f.c.httpAddr+`"`) {
		t.Fatalf("install.sh: %d", code)
	}
	if code, _ := get(f.c.url("/download/../ca.key")); code == 200 {
		t.Fatal("download served a file outside the allow list")
	}
	if code, _ := get(f.c.url("/download/ca.key")); code != 404 {
		t.Fatalf("download of ca.key = %d, want 404", code)
	}
	// The expected checksum travels in the command (install.sh also checks
	// SHA256SUMS), and the token in a private file, never in argv.
	wantSum := hex.EncodeToString(sum[:])
	tokenFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenFile, []byte(a.Token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	root := t.TempDir()
	installWith := func(sum string) result {
		env := []string{"BERTH_INSTALL_PREFIX=" + root + "/bin", "BERTH_AGENT_DATA_DIR=" + root + "/data", "BERTH_INSTALL_NO_SYSTEMD=1"}
		return runBin(t, "sh", env, script, "install.sh", "-s", "--", "--controller", f.c.grpcAddr, "--ca-pin", a.CAPin,
			"--sha256-"+runtime.GOARCH, sum, "--token-file", tokenFile)
	}
	install := func() result { return installWith(wantSum) }
	// A checksum in the command that is not the served binary's is refused,
	// although SHA256SUMS from the same server agrees with the binary.
	if r := installWith(strings.Repeat("0", 64)); r.code == 0 || !strings.Contains(r.stderr, "checksum mismatch") {
		t.Fatalf("wrong --sha256: %+v", r)
	}
	if _, err := os.Stat(filepath.Join(root, "bin", "berth-agent")); err == nil {
		t.Fatal("a binary with the wrong checksum was installed")
	}
	if r := install(); r.code != 0 || !strings.Contains(r.stdout, "enrolled") {
		t.Fatalf("install: %+v", r)
	}
	if _, err := os.Stat(filepath.Join(root, "data", "agent.crt")); err != nil {
		t.Fatalf("install did not enroll: %v", err)
	}

	// Tamper with the served binary: the script refuses it.
	t.Cleanup(func() { _ = os.WriteFile(bin, orig, 0o755) })
	if err := os.WriteFile(bin, append(append([]byte{}, orig...), 0), 0o755); err != nil {
		t.Fatal(err)
	}
	root = t.TempDir()
	if r := install(); r.code == 0 || !strings.Contains(r.stderr, "checksum mismatch") {
		t.Fatalf("tampered binary: %+v", r)
	}
	if _, err := os.Stat(filepath.Join(root, "bin", "berth-agent")); err == nil {
		t.Fatal("a tampered binary was installed")
	}
}
