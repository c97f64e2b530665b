package main_test

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

const mariaPassword = "maria-app-secret-8e7f6a"

// mariaDB is a private MariaDB server (Debian's mariadb-server, which
// scripts/ensure-deps.sh installs) on a temp datadir, a unix socket there
// for the test's own statements and a loopback port for the agent.
type mariaDB struct {
	sock string
	port int
}

func startMariaDB(t *testing.T) *mariaDB {
	t.Helper()
	dir := shortDir(t)
	if out, err := exec.Command("mariadb-install-db", "--no-defaults", "--user=root", "--datadir="+dir+"/data",
		"--auth-root-authentication-method=socket", "--skip-test-db").CombinedOutput(); err != nil {
		t.Fatalf("mariadb-install-db: %v\n%s", err, out)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	m := &mariaDB{sock: dir + "/mysqld.sock", port: l.Addr().(*net.TCPAddr).Port}
	l.Close()
	cmd := exec.Command("/usr/sbin/mariadbd", "--no-defaults", "--user=root", "--datadir="+dir+"/data", "--socket="+m.sock,
		"--port="+strconv.Itoa(m.port), "--bind-address=127.0.0.1", "--pid-file="+dir+"/pid", "--log-error="+dir+"/err.log",
		"--innodb-buffer-pool-size=32M", "--skip-log-bin", "--innodb-flush-log-at-trx-commit=0")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
		if t.Failed() {
			b, _ := os.ReadFile(dir + "/err.log")
			t.Logf("mariadb log:\n%s", b)
		}
	})
	waitFor(t, "mariadb answering", time.Minute, func() bool {
		_, err := m.exec("", "SELECT 1")
		return err == nil
	})
	m.must(t, "", "CREATE USER 'app'@'127.0.0.1' IDENTIFIED BY '"+mariaPassword+"'; GRANT ALL ON *.* TO 'app'@'127.0.0.1'")
	return m
}

func (m *mariaDB) exec(db, sql string) (string, error) {
	args := []string{"--no-defaults", "--user=root", "--socket=" + m.sock, "--batch", "--skip-column-names"}
	if db != "" {
		args = append(args, "--database="+db)
	}
	out, err := exec.Command("mariadb", append(args, "-e", sql)...).CombinedOutput()
	return strings.TrimSpace(string(out)), err
}

func (m *mariaDB) must(t *testing.T, db, sql string) string {
	t.Helper()
	out, err := m.exec(db, sql)
	if err != nil {
		t.Fatalf("%s: %v: %s", sql, err, out)
	}
	return out
}

func (m *mariaDB) digest(t *testing.T, db string) string {
	t.Helper()
	// group_concat_max_len: the default 1024 bytes would cut the list.
	return m.must(t, db, "SET SESSION group_concat_max_len = 1073741824; SELECT COUNT(*), MD5(GROUP_CONCAT(id, ':', name, ':', HEX(payload) ORDER BY id SEPARATOR ',')) FROM items")
}

// A MariaDB database goes through the controller and a real agent as the
// mysql kind (mysqldump --single-transaction, over a connection URL from
// the app's environment), is verified and restored into a fresh database
// with the same rows.
func TestBackupMariaDB(t *testing.T) {
	t.Parallel()
	m := startMariaDB(t)
	m.must(t, "", "CREATE DATABASE shopmy; CREATE DATABASE myrestore")
	m.must(t, "shopmy", "CREATE TABLE items (id INT PRIMARY KEY AUTO_INCREMENT, name VARCHAR(100) NOT NULL, payload VARBINARY(64) NOT NULL)")
	m.must(t, "shopmy", "INSERT INTO items (name, payload) SELECT CONCAT('"+backupDataMarker+"-', seq), UNHEX(SHA2(seq, 256)) FROM seq_1_to_3000")
	want := m.digest(t, "shopmy")

	e := setupDeploy(t)
	e.createApp(t, "shop", "https://git.example.com/shop.git", "")
	url := fmt.Sprintf("mysql://app:%s@127.0.0.1:%d/shopmy", mariaPassword, m.port)
	if r := e.cli(t, "", "app", "env", "set", "shop", "MYSQL_URL="+url); r.code != 0 {
		t.Fatalf("env set: %+v", r)
	}
	vault := filepath.Join(e.base, "vault")
	if err := os.MkdirAll(vault, 0o700); err != nil {
		t.Fatal(err)
	}
	var dest map[string]any
	if code := e.backupJSON(t, "", &dest, "backup", "destination", "add", "vault", "--kind", "local", "--path", vault); code != 0 {
		t.Fatalf("destination add: %d %v", code, dest)
	}
	var b backupRow
	if code := e.backupJSON(t, "", &b, "backup", "run", "shop", "--destination", "vault", "--kind", "mysql", "--source", "shopmy",
		"--connection-env", "MYSQL_URL", "--follow"); code != 0 || b.Status != "succeeded" || b.SizeBytes <= 0 {
		t.Fatalf("mysql backup: %d %+v", code, b)
	}
	var task backupTask
	if code := e.backupJSON(t, "", &task, "backup", "verify", b.ID, "--follow"); code != 0 || task.Status != "succeeded" {
		t.Fatalf("mysql verify: %d %+v", code, task)
	}
	if code := e.backupJSON(t, "", &task, "backup", "restore", b.ID, "--to", "myrestore", "--connection-env", "MYSQL_URL", "--follow"); code != 0 || task.Status != "succeeded" {
		t.Fatalf("mysql restore: %d %+v\n%s", code, task, e.cli(t, "", "backup", "logs", task.ID).stdout)
	}
	if got := m.digest(t, "myrestore"); got != want {
		t.Fatalf("restored %s, want %s", got, want)
	}
	e.noBackupSecrets(t, mariaPassword, backupDataMarker)
}
