package main_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// TestControllerKilledAgentsKeepEverySample: three agents stream metrics
// every second; the controller is killed with SIGKILL and kept down 20 s.
// After it comes back, every sample each agent took is stored exactly once:
// the agents say on exit how many they took and how many they still held,
// and the stored rows are counted against that (no timing assumption about
// when samples were taken).
func TestControllerKilledAgentsKeepEverySample(t *testing.T) {
	t.Parallel()
	f := startFleet(t)
	names := []string{"node-a", "node-b", "node-c"}
	agents := map[string]*agentProc{}
	for _, n := range names {
		a := f.addServer(t, n)
		dir := filepath.Join(t.TempDir(), n)
		if r := enrollAgent(t, f.c.grpcAddr, a.Token, a.CAPin, dir); r.code != 0 {
			t.Fatalf("enroll %s: %+v", n, r)
		}
		agents[n] = startAgent(t, dir)
	}
	dsn := fmt.Sprintf("host=%s user=berth dbname=berth sslmode=disable", filepath.Join(f.dataDir, "postgres", "run"))
	for _, n := range names {
		waitFor(t, n+" online with samples stored", 30*time.Second, func() bool {
			s := f.server(t, n)
			return s != nil && s["status"] == "online" && len(series(t, dsn, n)) > 0
		})
	}

	_ = f.c.stop(t, syscall.SIGKILL)
	killedAt := time.Now()
	// The outage itself (not a wait for anything): agents sample into their
	// buffers all along.
	time.Sleep(20 * time.Second)
	restartedAt := time.Now()
	f.c = startControllerAt(t, f.dataDir, f.c.httpAddr, f.c.grpcAddr, "--metrics-interval", "1s", "--heartbeat-interval", "1s")
	// The restarted controller gives agents time before marking anything
	// offline; they reconnect and flush their buffers.
	waitFor(t, "buffered samples to arrive", 60*time.Second, func() bool {
		for _, n := range names {
			if latest(t, dsn, n).Before(restartedAt) {
				return false
			}
		}
		return true
	})
	for _, n := range names {
		_ = agents[n].cmd.Process.Signal(syscall.SIGTERM)
		<-agents[n].done
	}

	for _, n := range names {
		times := series(t, dsn, n)
		for i := 1; i < len(times); i++ {
			if !times[i].After(times[i-1]) {
				t.Fatalf("%s: sample at %s stored twice", n, times[i])
			}
		}
		var during int
		for _, ts := range times {
			if ts.After(killedAt) && ts.Before(restartedAt) {
				during++
			}
		}
		if during == 0 {
			t.Fatalf("%s: no sample from the outage was stored", n)
		}
		st := agentStopped(t, agents[n])
		// Every sample taken is stored unless the agent still held it at
		// exit (a batch the controller stored but had not yet acknowledged
		// is held and stored, hence the range).
		if st.Dropped != 0 || int64(len(times)) > st.Taken || int64(len(times)) < st.Taken-st.Unacked {
			t.Fatalf("%s: %d samples stored; the agent took %d, held %d unacknowledged and dropped %d at exit",
				n, len(times), st.Taken, st.Unacked, st.Dropped)
		}
	}
}

// stoppedStats is what an agent logs as it stops about its samples.
type stoppedStats struct {
	Taken   int64 `json:"samples_taken"`
	Unacked int64 `json:"samples_unacknowledged"`
	Dropped int64 `json:"samples_dropped"`
}

// agentStopped reads the "agent stopped" line of an agent that has exited.
func agentStopped(t *testing.T, a *agentProc) stoppedStats {
	t.Helper()
	for _, line := range strings.Split(a.logs.String(), "\n") {
		if !strings.Contains(line, `"msg":"agent stopped"`) {
			continue
		}
		var st stoppedStats
		if err := json.Unmarshal([]byte(line), &st); err != nil {
			t.Fatalf("agent stopped line %q: %v", line, err)
		}
		return st
	}
	t.Fatalf("the agent logged no \"agent stopped\" line:\n%s", a.logs.String())
	return stoppedStats{}
}

func series(t *testing.T, dsn, name string) []time.Time {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	rows, err := conn.Query(ctx, `SELECT m.recorded_at FROM server_metrics m JOIN servers s ON s.id = m.server_id WHERE s.name = $1 ORDER BY m.recorded_at`, name)
	if err != nil {
		t.Fatal(err)
	}
	out, err := pgx.CollectRows(rows, pgx.RowTo[time.Time])
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func latest(t *testing.T, dsn, name string) time.Time {
	ts := series(t, dsn, name)
	if len(ts) == 0 {
		return time.Time{}
	}
	return ts[len(ts)-1]
}

// TestKilledAgentGoesOffline: SIGKILL an agent; its server turns offline
// once the heartbeat TTL and grace pass, and online again when it returns.
func TestKilledAgentGoesOffline(t *testing.T) {
	t.Parallel()
	dataDir := shortDir(t)
	c := startController(t, dataDir, "--metrics-interval", "1s", "--heartbeat-interval", "1s", "--start-grace", "1s")
	f := &fleetEnv{c: c, dataDir: dataDir}
	g := startFleetOn(t, f)
	a := g.addServer(t, "edge-1")
	dir := filepath.Join(t.TempDir(), "edge-1")
	if r := enrollAgent(t, c.grpcAddr, a.Token, a.CAPin, dir); r.code != 0 {
		t.Fatalf("enroll: %+v", r)
	}
	ag := startAgent(t, dir)
	waitFor(t, "online", 30*time.Second, func() bool { s := g.server(t, "edge-1"); return s != nil && s["status"] == "online" })
	_ = ag.cmd.Process.Signal(syscall.SIGKILL)
	<-ag.done
	waitFor(t, "offline", 30*time.Second, func() bool { s := g.server(t, "edge-1"); return s != nil && s["status"] == "offline" })
	// Not before the TTL (3 heartbeats plus the 5 s grace): read from the
	// database's own record of the last heartbeat and of the row's change to
	// offline, so the check is about the controller's decision, not about
	// how quickly this test noticed it.
	dsn := fmt.Sprintf("host=%s user=berth dbname=berth sslmode=disable", filepath.Join(dataDir, "postgres", "run"))
	conn, err := pgx.Connect(context.Background(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	var secs float64
	err = conn.QueryRow(context.Background(),
		`SELECT extract(epoch FROM updated_at - last_seen_at)::float8 FROM servers WHERE name = 'edge-1' AND status = 'offline'`).Scan(&secs)
	silent := time.Duration(secs * float64(time.Second))
	conn.Close(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if ttl := 3*time.Second + 5*time.Second; silent < ttl {
		t.Fatalf("marked offline %s after its last heartbeat, before the TTL of %s", silent, ttl)
	}
	startAgent(t, dir)
	waitFor(t, "online again", 30*time.Second, func() bool { s := g.server(t, "edge-1"); return s != nil && s["status"] == "online" })
}

// TestRemoveCutsStreamOnAnotherController: two controllers share one
// database (and the CA and keys, as a real multi-controller install does);
// removing a server through one cuts its agent's stream on the other.
func TestRemoveCutsStreamOnAnotherController(t *testing.T) {
	t.Parallel()
	f := startFleet(t)
	d2 := shortDir(t)
	if err := os.MkdirAll(d2, 0o700); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"ca.key", "ca.crt", "encryption.keys"} {
		b, err := os.ReadFile(filepath.Join(f.dataDir, name))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(d2, name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	dsn := fmt.Sprintf("host=%s user=berth dbname=berth sslmode=disable", filepath.Join(f.dataDir, "postgres", "run"))
	c2 := startController(t, d2, "--database-url", dsn, "--heartbeat-interval", "1s")

	a := f.addServer(t, "shared-1")
	dir := filepath.Join(t.TempDir(), "agent")
	if r := enrollAgent(t, c2.grpcAddr, a.Token, a.CAPin, dir); r.code != 0 {
		t.Fatalf("enroll through the second controller: %+v", r)
	}
	ag := startAgent(t, dir)
	waitFor(t, "connected to the second controller", 30*time.Second, func() bool {
		return strings.Contains(ag.logs.String(), "connected to controller")
	})
	if r := run(t, f.env, "server", "remove", "shared-1"); r.code != 0 {
		t.Fatalf("remove through the first controller: %+v", r)
	}
	waitFor(t, "the stream on the second controller to be cut", 2*time.Second, func() bool {
		return strings.Contains(ag.logs.String(), "controller refused this agent")
	})
}

// TestAgentRenewsItsCertificate: with a 90 s certificate lifetime the agent
// renews over its stream once a third is left, then re-dials with the new
// certificate, which the controller recorded.
func TestAgentRenewsItsCertificate(t *testing.T) {
	t.Parallel()
	dataDir := shortDir(t)
	c := startController(t, dataDir, "--metrics-interval", "1s", "--heartbeat-interval", "1s", "--agent-cert-ttl", "90s")
	f := startFleetOn(t, &fleetEnv{c: c, dataDir: dataDir})
	a := f.addServer(t, "renew-1")
	dir := filepath.Join(t.TempDir(), "agent")
	if r := enrollAgent(t, c.grpcAddr, a.Token, a.CAPin, dir); r.code != 0 {
		t.Fatalf("enroll: %+v", r)
	}
	ag := startAgent(t, dir)
	waitFor(t, "the certificate renewal", 120*time.Second, func() bool {
		return strings.Count(ag.logs.String(), "connected to controller") >= 2 && strings.Contains(ag.logs.String(), "certificate renewed")
	})
	dsn := fmt.Sprintf("host=%s user=berth dbname=berth sslmode=disable", filepath.Join(dataDir, "postgres", "run"))
	conn, err := pgx.Connect(context.Background(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	var n int
	if err := conn.QueryRow(context.Background(), `SELECT count(*) FROM agent_certificates c JOIN servers s ON s.id = c.server_id WHERE s.name = 'renew-1' AND c.issued_for = 'renew'`).Scan(&n); err != nil || n < 1 {
		t.Fatalf("renewed certificates recorded: %d (%v)", n, err)
	}
	// Still online on the renewed certificate.
	waitFor(t, "online after renewal", 10*time.Second, func() bool { s := f.server(t, "renew-1"); return s != nil && s["status"] == "online" })
	// The agent connected with the renewed certificate, which revoked the
	// one it replaced.
	certs := f.serverCerts(t, "renew-1")
	if len(certs) < 2 || certs[len(certs)-1]["issued_for"] != "enroll" || certs[len(certs)-1]["revoked"] != true {
		t.Fatalf("certificates after renewal: %v", certs)
	}
}
