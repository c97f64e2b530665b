package main_test

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/berthhq/berth/db"
)

// TestKilledAgentNotifiesOnce: real controller and agent processes. The
// agent's enrollment, its kill -9 and its return publish server.enrolled,
// server.offline and server.online exactly once each, and every admin's
// inbox ends with the offline notification closed (read) by the online one.
func TestKilledAgentNotifiesOnce(t *testing.T) {
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
	startAgent(t, dir)
	waitFor(t, "online again", 30*time.Second, func() bool { s := g.server(t, "edge-1"); return s != nil && s["status"] == "online" })

	ctx := context.Background()
	dsn := fmt.Sprintf("host=%s user=berth dbname=berth sslmode=disable", filepath.Join(dataDir, "postgres", "run"))
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	rows, err := conn.Query(ctx, `SELECT e.kind, count(*) FROM notify_events e JOIN servers s ON s.id = e.server_id
		WHERE s.name = 'edge-1' GROUP BY e.kind ORDER BY e.kind`)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]int64{}
	for rows.Next() {
		var k string
		var n int64
		if err := rows.Scan(&k, &n); err != nil {
			t.Fatal(err)
		}
		got[k] = n
	}
	rows.Close()
	if got["server.enrolled"] != 1 || got["server.offline"] != 1 || got["server.online"] != 1 || len(got) != 3 {
		t.Fatalf("events %v, want enrolled, offline and online once each", got)
	}
	var admins, offlineUnread, onlineUnread int64
	if err := conn.QueryRow(ctx, `SELECT
		(SELECT count(*) FROM users WHERE role = 'admin' AND status = 'active'),
		(SELECT count(*) FROM notifications WHERE kind = 'server.offline' AND read_at IS NULL),
		(SELECT count(*) FROM notifications WHERE kind = 'server.online' AND read_at IS NULL)`).Scan(&admins, &offlineUnread, &onlineUnread); err != nil {
		t.Fatal(err)
	}
	if admins == 0 || offlineUnread != 0 || onlineUnread != admins {
		t.Fatalf("admins %d, unread offline %d (want 0: closed), unread online %d (want one each)", admins, offlineUnread, onlineUnread)
	}
}

// versionBack is the migration version n steps below the newest: migration
// numbers need not be contiguous while branches land (000029 before 000028).
func versionBack(t *testing.T, n int) uint {
	t.Helper()
	ents, err := db.Migrations.ReadDir("migrations")
	if err != nil {
		t.Fatal(err)
	}
	var vs []uint
	for _, e := range ents {
		name := e.Name()
		if !strings.HasSuffix(name, ".up.sql") {
			continue
		}
		num, _, _ := strings.Cut(name, "_")
		v, err := strconv.ParseUint(num, 10, 32)
		if err != nil {
			t.Fatalf("migration %s: %v", name, err)
		}
		vs = append(vs, uint(v))
	}
	slices.Sort(vs)
	if n >= len(vs) {
		return 0
	}
	return vs[len(vs)-1-n]
}
