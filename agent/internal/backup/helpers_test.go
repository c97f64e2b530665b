package backup

import (
	"bufio"
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"filippo.io/age"
	"github.com/johannesboyne/gofakes3"
	"github.com/johannesboyne/gofakes3/backend/s3mem"
	"github.com/minio/minio-go/v7/pkg/s3utils"
)

// hangGuard bounds waits for a server to come up; never a timing assertion.
const hangGuard = 2 * time.Minute

var (
	pgOnce sync.Once
	pgErr  error
	pgDir  string
	myOnce sync.Once
	myErr  error
	myDir  string
	myPort int
	myProc *exec.Cmd
)

func TestMain(m *testing.M) {
	code := m.Run()
	stopPostgres()
	stopMariaDB()
	os.Exit(code)
}

func postgresCred(t testing.TB) *syscall.Credential {
	u, err := user.Lookup("postgres")
	if err != nil {
		t.Fatalf("the tests need the postgres system user (scripts/ensure-deps.sh installs postgresql): %v", err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
}

func runAs(cred *syscall.Credential, stdin string, argv ...string) (string, error) {
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	cmd.Dir = "/"
	cmd.Env = append(os.Environ(), "HOME=/tmp")
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s: %w\n%s", strings.Join(argv, " "), err, out)
	}
	return string(out), nil
}

func pgBin(name string) string {
	p, err := findTool(name)
	if err != nil {
		return name
	}
	return p
}

// startPostgres runs one private cluster for the test process: initdb as
// the postgres system user into a temp dir, a socket in that dir (PGHOST),
// trust for the postgres superuser over the socket and scram-sha-256 for
// the role app, as a server with an app user would have.
func startPostgres(t testing.TB) {
	t.Helper()
	pgOnce.Do(func() {
		if os.Geteuid() != 0 {
			pgErr = fmt.Errorf("the backup tests need root (they run pg_dump as the postgres system user, as the agent does)")
			return
		}
		cred := postgresCred(t)
		dir, err := os.MkdirTemp("", "bkpg-")
		if err != nil {
			pgErr = err
			return
		}
		pgDir = dir
		os.Chmod(dir, 0o755)
		os.Chown(dir, int(cred.Uid), int(cred.Gid))
		if _, err := runAs(cred, "", pgBin("initdb"), "-D", dir+"/data", "-U", "postgres", "-E", "UTF8", "--locale=C",
			"--auth-local=trust", "--auth-host=reject", "--no-instructions"); err != nil {
			pgErr = err
			return
		}
		hba := "local all app scram-sha-256\nlocal all all trust\n"
		if err := os.WriteFile(dir+"/data/pg_hba.conf", []byte(hba), 0o600); err != nil {
			pgErr = err
			return
		}
		os.Chown(dir+"/data/pg_hba.conf", int(cred.Uid), int(cred.Gid))
		opts := fmt.Sprintf("-k %s -p 5432 -c listen_addresses= -c fsync=off -c synchronous_commit=off -c full_page_writes=off", dir)
		if _, err := runAs(cred, "", pgBin("pg_ctl"), "start", "-D", dir+"/data", "-l", dir+"/log", "-w", "-t", "60", "-o", opts); err != nil {
			log, _ := os.ReadFile(dir + "/log")
			pgErr = fmt.Errorf("%w\n%s", err, log)
			return
		}
		// The agent's local mode finds the cluster as libpq would.
		os.Setenv("PGHOST", dir)
		os.Setenv("PGPORT", "5432")
		if _, err := psql("postgres", "CREATE ROLE app LOGIN CREATEDB PASSWORD 'app-secret-pw-7731'"); err != nil {
			pgErr = err
		}
	})
	if pgErr != nil {
		t.Fatalf("postgres: %v", pgErr)
	}
}

func stopPostgres() {
	if pgDir == "" {
		return
	}
	u, err := user.Lookup("postgres")
	if err == nil {
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		runAs(&syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, "", pgBin("pg_ctl"), "stop", "-D", pgDir+"/data", "-m", "immediate", "-w")
	}
	os.RemoveAll(pgDir)
}

// psql runs SQL as the superuser in db and returns the unaligned output.
func psql(db, sql string) (string, error) {
	u, _ := user.Lookup("postgres")
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	out, err := runAs(&syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, sql, pgBin("psql"), "-X", "-q", "-A", "-t",
		"-v", "ON_ERROR_STOP=1", "-h", pgDir, "-p", "5432", "-U", "postgres", "-d", db)
	return strings.TrimSpace(out), err
}

func mustPSQL(t testing.TB, db, sql string) string {
	t.Helper()
	out, err := psql(db, sql)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

var dbSeq int

// newPGDatabase makes a database with a few tables of data; the name is
// fresh for each call.
func newPGDatabase(t testing.TB, rows int) string {
	t.Helper()
	startPostgres(t)
	dbSeq++
	name := fmt.Sprintf("bk_%d_%d", os.Getpid(), dbSeq)
	mustPSQL(t, "postgres", "CREATE DATABASE "+name+" OWNER app")
	mustPSQL(t, name, fmt.Sprintf(`SET ROLE app;
CREATE TABLE customers (id serial PRIMARY KEY, name text NOT NULL, email text UNIQUE, created timestamptz DEFAULT now());
CREATE TABLE orders (id bigserial PRIMARY KEY, customer_id int REFERENCES customers(id), total numeric(12,2), note text, blob bytea);
CREATE INDEX orders_customer ON orders(customer_id);
CREATE VIEW big_orders AS SELECT * FROM orders WHERE total > 500;
INSERT INTO customers (name, email) SELECT 'customer ' || i, 'c' || i || '@example.com' FROM generate_series(1, %[1]d) i;
INSERT INTO orders (customer_id, total, note, blob) SELECT 1 + (i %% %[1]d), (i * 7.31) %% 1000, repeat('x', i %% 50), decode(md5(i::text), 'hex') FROM generate_series(1, %[1]d * 3) i;`, rows))
	t.Cleanup(func() { psql("postgres", "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)") })
	return name
}

// pgFingerprint is the row counts and an md5 of every row of the test
// tables, in key order.
func pgFingerprint(t testing.TB, db string) string {
	t.Helper()
	return mustPSQL(t, db, `SELECT (SELECT count(*) FROM customers) || ' ' || (SELECT count(*) FROM orders) || ' ' ||
 (SELECT md5(string_agg(c::text, ',' ORDER BY id)) FROM customers c) || ' ' || (SELECT md5(string_agg(o::text, ',' ORDER BY id)) FROM orders o) || ' ' ||
 (SELECT count(*) FROM big_orders)`)
}

// startMariaDB runs one private MariaDB for the test process: a temp
// datadir from mariadb-install-db, a socket there (MYSQL_UNIX_PORT) and a
// loopback port for the connection-URL tests.
func startMariaDB(t testing.TB) {
	t.Helper()
	myOnce.Do(func() {
		install, err := findTool("mariadb-install-db", "mysql_install_db")
		if err != nil {
			myErr = fmt.Errorf("%w (scripts/ensure-deps.sh installs mariadb-server)", err)
			return
		}
		server, err := findTool("mariadbd", "mysqld")
		if err != nil {
			if _, e := os.Stat("/usr/sbin/mariadbd"); e == nil {
				server = "/usr/sbin/mariadbd"
			} else {
				myErr = err
				return
			}
		}
		dir, err := os.MkdirTemp("", "bkmy-")
		if err != nil {
			myErr = err
			return
		}
		myDir = dir
		if out, err := exec.Command(install, "--no-defaults", "--user=root", "--datadir="+dir+"/data", "--auth-root-authentication-method=socket",
			"--skip-test-db").CombinedOutput(); err != nil {
			myErr = fmt.Errorf("mariadb-install-db: %w\n%s", err, out)
			return
		}
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			myErr = err
			return
		}
		myPort = l.Addr().(*net.TCPAddr).Port
		l.Close()
		sock := dir + "/mysqld.sock"
		cmd := exec.Command(server, "--no-defaults", "--user=root", "--datadir="+dir+"/data", "--socket="+sock,
			"--port="+strconv.Itoa(myPort), "--bind-address=127.0.0.1", "--pid-file="+dir+"/pid", "--log-error="+dir+"/err.log",
			"--innodb-buffer-pool-size=32M", "--innodb-log-file-size=16M", "--skip-log-bin", "--innodb-flush-log-at-trx-commit=0")
		if err := cmd.Start(); err != nil {
			myErr = err
			return
		}
		myProc = cmd
		os.Setenv("MYSQL_UNIX_PORT", sock)
		deadline := time.Now().Add(hangGuard)
		for {
			if _, err := mysqlExec("", "SELECT 1"); err == nil {
				break
			}
			if time.Now().After(deadline) {
				log, _ := os.ReadFile(dir + "/err.log")
				myErr = fmt.Errorf("mariadb never answered:\n%s", log)
				return
			}
			time.Sleep(50 * time.Millisecond)
		}
		_, myErr = mysqlExec("", "CREATE USER 'app'@'127.0.0.1' IDENTIFIED BY 'my-app-secret-5521'; GRANT ALL ON *.* TO 'app'@'127.0.0.1'")
	})
	if myErr != nil {
		t.Fatalf("mariadb: %v", myErr)
	}
}

func stopMariaDB() {
	if myProc != nil {
		myProc.Process.Signal(syscall.SIGTERM)
		myProc.Wait()
	}
	if myDir != "" {
		os.RemoveAll(myDir)
	}
}

func mysqlExec(db, sql string) (string, error) {
	bin, _ := findTool("mariadb", "mysql")
	args := []string{"--no-defaults", "--user=root", "--batch", "--skip-column-names"}
	if db != "" {
		args = append(args, "--database="+db)
	}
	cmd := exec.Command(bin, append(args, "-e", sql)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("mariadb: %w: %s", err, out)
	}
	return strings.TrimSpace(string(out)), nil
}

func mustMySQL(t testing.TB, db, sql string) string {
	t.Helper()
	out, err := mysqlExec(db, sql)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func newMyDatabase(t testing.TB, rows int) string {
	t.Helper()
	startMariaDB(t)
	dbSeq++
	name := fmt.Sprintf("bk_%d_%d", os.Getpid(), dbSeq)
	mustMySQL(t, "", "CREATE DATABASE "+name)
	mustMySQL(t, name, fmt.Sprintf(`CREATE TABLE customers (id INT PRIMARY KEY AUTO_INCREMENT, name VARCHAR(100) NOT NULL, email VARCHAR(200) UNIQUE) ENGINE=InnoDB;
CREATE TABLE orders (id BIGINT PRIMARY KEY AUTO_INCREMENT, customer_id INT, total DECIMAL(12,2), note TEXT, data BLOB, FOREIGN KEY (customer_id) REFERENCES customers(id)) ENGINE=InnoDB;
INSERT INTO customers (name, email) SELECT CONCAT('customer ', seq), CONCAT('c', seq, '@example.com') FROM seq_1_to_%[1]d;
INSERT INTO orders (customer_id, total, note, data) SELECT 1 + (seq %% %[1]d), (seq * 7.31) %% 1000, REPEAT('y', seq %% 50), UNHEX(MD5(seq)) FROM seq_1_to_%[2]d;`, rows, rows*3))
	t.Cleanup(func() { mysqlExec("", "DROP DATABASE IF EXISTS "+name) })
	return name
}

func myFingerprint(t testing.TB, db string) string {
	t.Helper()
	return mustMySQL(t, db, `SELECT CONCAT((SELECT COUNT(*) FROM customers), ' ', (SELECT COUNT(*) FROM orders), ' ',
 (SELECT MD5(GROUP_CONCAT(CONCAT_WS('|', id, name, email) ORDER BY id SEPARATOR ',')) FROM customers), ' ',
 (SELECT MD5(GROUP_CONCAT(CONCAT_WS('|', id, customer_id, total, note, HEX(data)) ORDER BY id SEPARATOR ',')) FROM orders))`)
}

// ageKeys is a fresh X25519 identity and its recipient.
func ageKeys(t testing.TB) (identity, recipient string) {
	t.Helper()
	id, err := age.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	return id.String(), id.Recipient().String()
}

// s3Server is gofakes3 (the S3 HTTP API over an in-memory store) on a
// loopback port, behind a check of the AWS Signature V4 of each request:
// a wrong access key or secret gets S3's own 403 answers.
type s3Server struct {
	srv     *httptest.Server
	backend *s3mem.Backend
	url     string
}

const (
	testAccessKey = "BERTHTESTKEY"
	testSecretKey = "berth-test-secret-0f6c2e"
)

func startS3(t testing.TB, buckets ...string) *s3Server {
	t.Helper()
	be := s3mem.New()
	for _, b := range buckets {
		if err := be.CreateBucket(b); err != nil {
			t.Fatal(err)
		}
	}
	faker := gofakes3.New(be, gofakes3.WithTimeSkewLimit(0))
	h := faker.Server()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if code := checkSigV4(r); code != "" {
			w.Header().Set("Content-Type", "application/xml")
			w.WriteHeader(http.StatusForbidden)
			fmt.Fprintf(w, `<?xml version="1.0" encoding="UTF-8"?><Error><Code>%s</Code><Message>refused by the test server</Message></Error>`, code)
			return
		}
		if strings.HasPrefix(r.Header.Get("X-Amz-Content-Sha256"), "STREAMING-") {
			// gofakes3 decodes aws-chunked bodies only for a plain PUT;
			// S3 does it for every upload, parts included.
			n, err := strconv.ParseInt(r.Header.Get("X-Amz-Decoded-Content-Length"), 10, 64)
			if err != nil {
				http.Error(w, "bad decoded length", http.StatusBadRequest)
				return
			}
			r.Body = io.NopCloser(&awsChunked{r: bufio.NewReader(r.Body)})
			r.ContentLength = n
			r.Header.Set("Content-Length", strconv.FormatInt(n, 10))
			r.Header.Set("X-Amz-Content-Sha256", "UNSIGNED-PAYLOAD")
		}
		h.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	return &s3Server{srv: srv, backend: be, url: srv.URL}
}

func (s *s3Server) dest(bucket string) Destination {
	return Destination{Kind: "s3", Endpoint: s.url, Bucket: bucket, Region: "us-east-1", PathStyle: true,
		AccessKeyID: testAccessKey, SecretAccessKey: testSecretKey, Prefix: "berth/backups"}
}

// keys lists the objects in bucket.
func (s *s3Server) keys(t testing.TB, bucket string) []string {
	t.Helper()
	list, err := s.backend.ListBucket(bucket, nil, gofakes3.ListBucketPage{})
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, o := range list.Contents {
		out = append(out, o.Key)
	}
	return out
}

// checkSigV4 returns an S3 error code when r is not signed with the test
// key pair, "" when it is.
func checkSigV4(r *http.Request) string {
	auth := r.Header.Get("Authorization")
	if !strings.HasPrefix(auth, "AWS4-HMAC-SHA256 ") {
		return "AccessDenied"
	}
	fields := map[string]string{}
	for _, f := range strings.Split(strings.TrimPrefix(auth, "AWS4-HMAC-SHA256 "), ",") {
		k, v, _ := strings.Cut(strings.TrimSpace(f), "=")
		fields[k] = v
	}
	cred := strings.Split(fields["Credential"], "/")
	if len(cred) != 5 {
		return "AccessDenied"
	}
	if cred[0] != testAccessKey {
		return "InvalidAccessKeyId"
	}
	signed := strings.Split(fields["SignedHeaders"], ";")
	var ch strings.Builder
	for _, h := range signed {
		var v string
		switch h {
		case "host":
			v = r.Host
		case "content-length":
			v = strconv.FormatInt(r.ContentLength, 10)
		default:
			vals := r.Header.Values(h)
			for i := range vals {
				vals[i] = strings.Join(strings.Fields(vals[i]), " ")
			}
			v = strings.Join(vals, ",")
		}
		ch.WriteString(h + ":" + v + "\n")
	}
	query := strings.ReplaceAll(r.URL.Query().Encode(), "+", "%20")
	canonical := strings.Join([]string{r.Method, s3utils.EncodePath(r.URL.Path), query, ch.String(), fields["SignedHeaders"],
		r.Header.Get("X-Amz-Content-Sha256")}, "\n")
	sum := sha256.Sum256([]byte(canonical))
	scope := strings.Join(cred[1:], "/")
	toSign := "AWS4-HMAC-SHA256\n" + r.Header.Get("X-Amz-Date") + "\n" + scope + "\n" + hex.EncodeToString(sum[:])
	key := []byte("AWS4" + testSecretKey)
	for _, p := range cred[1:] {
		m := hmac.New(sha256.New, key)
		m.Write([]byte(p))
		key = m.Sum(nil)
	}
	m := hmac.New(sha256.New, key)
	m.Write([]byte(toSign))
	if !hmac.Equal([]byte(hex.EncodeToString(m.Sum(nil))), []byte(fields["Signature"])) {
		return "SignatureDoesNotMatch"
	}
	return ""
}

// sftpServer is OpenSSH's sshd with internal-sftp on a loopback port, its
// own host key, root allowed in by key and a password user.
type sftpServer struct {
	port        int
	fingerprint string // of the host key, as ssh-keygen -l prints it
	otherFP     string // of another key
	key         []byte // root's private key
	dir         string // a directory both users can write
	log         *bytes.Buffer
	mu          sync.Mutex
}

const sftpUser, sftpPassword = "berthbktest", "sftp-test-pw-4417"

func keygen(t testing.TB, path string) (priv []byte, fp string) {
	t.Helper()
	if out, err := exec.Command("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "", "-f", path).CombinedOutput(); err != nil {
		t.Fatalf("ssh-keygen: %v\n%s", err, out)
	}
	out, err := exec.Command("ssh-keygen", "-l", "-f", path+".pub").Output()
	if err != nil {
		t.Fatal(err)
	}
	priv, err = os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return priv, strings.Fields(string(out))[1]
}

func startSFTP(t testing.TB) *sftpServer {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("the sftp tests need root (sshd)")
	}
	if _, err := user.Lookup(sftpUser); err != nil {
		if out, err := exec.Command("useradd", "--system", "--no-create-home", "--home-dir", "/nonexistent", "--shell", "/usr/sbin/nologin", sftpUser).CombinedOutput(); err != nil {
			t.Fatalf("useradd: %v\n%s", err, out)
		}
	}
	if out, err := runAs(nil, sftpUser+":"+sftpPassword+"\n", "chpasswd"); err != nil {
		t.Fatalf("chpasswd: %v\n%s", err, out)
	}
	dir, err := os.MkdirTemp("", "bksftp-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	os.Chmod(dir, 0o755)
	_, fp := keygen(t, dir+"/host_key")
	_, otherFP := keygen(t, dir+"/other_key")
	clientKey, _ := keygen(t, dir+"/id")
	pub, _ := os.ReadFile(dir + "/id.pub")
	os.WriteFile(dir+"/authorized_keys", pub, 0o644)
	data := dir + "/data"
	os.Mkdir(data, 0o777)
	os.Chmod(data, 0o777)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	cfg := fmt.Sprintf(`Port %d
ListenAddress 127.0.0.1
HostKey %[2]s/host_key
PidFile none
AuthorizedKeysFile %[2]s/authorized_keys
PasswordAuthentication yes
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
StrictModes no
UsePAM no
LogLevel VERBOSE
Subsystem sftp internal-sftp
`, port, dir)
	os.WriteFile(dir+"/sshd_config", []byte(cfg), 0o600)
	os.MkdirAll("/run/sshd", 0o755)
	s := &sftpServer{port: port, fingerprint: fp, otherFP: otherFP, key: clientKey, dir: data, log: &bytes.Buffer{}}
	cmd := exec.Command("/usr/sbin/sshd", "-D", "-e", "-f", dir+"/sshd_config")
	cmd.Stdout, cmd.Stderr = s, s
	if err := cmd.Start(); err != nil {
		t.Fatalf("start sshd: %v", err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-done
		if t.Failed() {
			t.Logf("sshd log:\n%s", s.String())
		}
	})
	deadline := time.Now().Add(hangGuard)
	for {
		select {
		case <-done:
			t.Fatalf("sshd exited:\n%s", s.String())
		default:
		}
		if c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port)); err == nil {
			line, _ := bufio.NewReader(c).ReadString('\n')
			c.Close()
			if strings.HasPrefix(line, "SSH-") {
				return s
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("sshd never answered:\n%s", s.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (s *sftpServer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.log.Write(p)
}

func (s *sftpServer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.log.String()
}

func (s *sftpServer) keyDest() Destination {
	return Destination{Kind: "sftp", Host: "127.0.0.1", Port: s.port, Username: "root", PrivateKey: s.key,
		HostKeyFingerprint: s.fingerprint, Path: s.dir}
}

func (s *sftpServer) passwordDest() Destination {
	return Destination{Kind: "sftp", Host: "127.0.0.1", Port: s.port, Username: sftpUser, Password: sftpPassword,
		HostKeyFingerprint: s.fingerprint, Path: s.dir}
}

// cutProxy forwards TCP connections to target and, once more than limit
// bytes went upstream in all, closes its listener and every connection:
// the destination goes down in the middle of an upload.
type cutProxy struct {
	l       net.Listener
	target  string
	limit   int64
	mu      sync.Mutex
	sent    int64
	conns   []net.Conn
	cut     bool
	cutDone chan struct{}
}

func startCutProxy(t testing.TB, target string, limit int64) *cutProxy {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &cutProxy{l: l, target: target, limit: limit, cutDone: make(chan struct{})}
	t.Cleanup(p.doCut)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			u, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			p.mu.Lock()
			if p.cut {
				p.mu.Unlock()
				c.Close()
				u.Close()
				return
			}
			p.conns = append(p.conns, c, u)
			p.mu.Unlock()
			go p.pipe(u, c, true)
			go p.pipe(c, u, false)
		}
	}()
	return p
}

func (p *cutProxy) port() int { return p.l.Addr().(*net.TCPAddr).Port }

func (p *cutProxy) pipe(dst, src net.Conn, upstream bool) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if upstream {
				p.mu.Lock()
				p.sent += int64(n)
				over := p.sent > p.limit
				p.mu.Unlock()
				if over {
					p.doCut()
					return
				}
			}
			if _, err := dst.Write(buf[:n]); err != nil {
				return
			}
		}
		if err != nil {
			dst.Close()
			return
		}
	}
}

func (p *cutProxy) doCut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cut {
		return
	}
	p.cut = true
	p.l.Close()
	for _, c := range p.conns {
		c.Close()
	}
	close(p.cutDone)
}

// lockedLog collects a job log.
type lockedLog struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// treeDigest is every entry of dir: path, type, mode, link target and a
// hash of the content, sorted.
func treeDigest(t testing.TB, dir string) string {
	t.Helper()
	var lines []string
	err := filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		if rel == "." {
			return nil
		}
		line := fmt.Sprintf("%s %s", rel, fi.Mode())
		switch {
		case fi.Mode()&os.ModeSymlink != 0:
			l, _ := os.Readlink(p)
			line += " -> " + l
		case fi.Mode().IsRegular():
			f, err := os.Open(p)
			if err != nil {
				return err
			}
			h := sha256.New()
			io.Copy(h, f)
			f.Close()
			line += fmt.Sprintf(" %d %x %d", fi.Size(), h.Sum(nil), fi.ModTime().Unix())
		}
		lines = append(lines, line)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(lines)
	return strings.Join(lines, "\n")
}

func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// awsChunked decodes an aws-chunked body ("hex;chunk-signature=...\r\n"
// data "\r\n" ..., a zero chunk, then optional trailers).
type awsChunked struct {
	r    *bufio.Reader
	left int64
	done bool
}

func (a *awsChunked) Read(p []byte) (int, error) {
	for a.left == 0 {
		if a.done {
			return 0, io.EOF
		}
		line, err := a.r.ReadString('\n')
		if err != nil {
			return 0, err
		}
		size, _, _ := strings.Cut(strings.TrimSpace(line), ";")
		n, err := strconv.ParseInt(size, 16, 64)
		if err != nil {
			return 0, fmt.Errorf("aws-chunked: bad chunk header %q", line)
		}
		if n == 0 {
			a.done = true
			io.Copy(io.Discard, a.r) // trailers
			return 0, io.EOF
		}
		a.left = n
	}
	if int64(len(p)) > a.left {
		p = p[:a.left]
	}
	n, err := a.r.Read(p)
	a.left -= int64(n)
	if a.left == 0 && err == nil {
		if _, err := a.r.Discard(2); err != nil { // the chunk's CRLF
			return n, err
		}
	}
	return n, err
}
