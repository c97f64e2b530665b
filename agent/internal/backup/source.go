package backup

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
)

// A source writes one dump into w.
type source interface {
	writeTo(ctx context.Context, w io.Writer) error
	describe() string
}

// Database names are limited to a safe alphabet: they reach command lines
// (never through a shell) and SQL identifiers.
var dbNameRE = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9_$-]{0,62}$`)

func checkSource(s Source) error {
	switch s.Kind {
	case "postgres", "mysql":
		if s.Name == "" && s.ConnectionURL == "" {
			return fmt.Errorf("%s source: no database name", s.Kind)
		}
		if s.Name != "" && !dbNameRE.MatchString(s.Name) {
			return fmt.Errorf("%s source: database name %q: use letters, digits, _, $ and - (at most 63)", s.Kind, s.Name)
		}
		if s.ConnectionURL != "" {
			if _, err := parseConn(s); err != nil {
				return err
			}
		}
	case "directory":
		if s.ConnectionURL != "" {
			return errors.New("directory source: a connection URL does not apply")
		}
		if !filepath.IsAbs(s.Name) || filepath.Clean(s.Name) != s.Name || s.Name == "/" {
			return fmt.Errorf("directory source: %q is not a clean absolute path below /", s.Name)
		}
		if s.Within != "" {
			if !filepath.IsAbs(s.Within) || filepath.Clean(s.Within) != s.Within {
				return fmt.Errorf("directory source: %q is not a clean absolute path", s.Within)
			}
			if rel, err := filepath.Rel(s.Within, s.Name); err != nil || !filepath.IsLocal(rel) {
				return fmt.Errorf("directory source: %s is not inside %s", s.Name, s.Within)
			}
		}
	case "":
		return errors.New("source kind is missing (postgres, mysql or directory)")
	default:
		return fmt.Errorf("source kind %q is not one of postgres, mysql, directory", s.Kind)
	}
	return nil
}

// conn is how to reach a database: through a URL's host, port and user with
// its password kept for the environment, or (url == nil) as the local
// superuser over the socket.
type conn struct {
	kind     string
	db       string
	url      *url.URL // postgres: without the password
	host     string
	port     int
	user     string
	password string
}

func parseConn(s Source) (*conn, error) {
	c := &conn{kind: s.Kind, db: s.Name}
	if s.ConnectionURL == "" {
		return c, nil
	}
	// The URL carries a password: no error below may quote it.
	u, err := url.Parse(s.ConnectionURL)
	if err != nil || u.Host == "" && u.Query().Get("host") == "" {
		return nil, fmt.Errorf("%s source: the connection URL is not a URL with a host", s.Kind)
	}
	if u.User != nil {
		c.user = u.User.Username()
		c.password, _ = u.User.Password()
	}
	if c.db == "" {
		c.db = strings.TrimPrefix(u.Path, "/")
	}
	if !dbNameRE.MatchString(c.db) {
		return nil, fmt.Errorf("%s source: the connection URL names no usable database", s.Kind)
	}
	switch s.Kind {
	case "postgres":
		if u.Scheme != "postgres" && u.Scheme != "postgresql" {
			return nil, fmt.Errorf("postgres source: the connection URL's scheme is %q, not postgres", u.Scheme)
		}
		clean := *u
		if c.user != "" {
			clean.User = url.User(c.user)
		}
		// libpq also takes the password as a query parameter: it goes to
		// PGPASSWORD like the userinfo's, never into the --dbname argument
		// that any user of the server reads in /proc/PID/cmdline.
		q := u.Query()
		for k, vs := range q {
			switch strings.ToLower(k) {
			case "password":
				if c.password == "" && len(vs) > 0 {
					c.password = vs[len(vs)-1]
				}
				q.Del(k)
			case "sslpassword":
				// No environment variable carries it: refused rather than
				// put on a command line.
				return nil, errors.New("postgres source: the connection URL's sslpassword cannot be passed safely; use an unencrypted client key or another URL")
			}
		}
		clean.RawQuery = q.Encode()
		clean.Path = "/" + c.db
		clean.RawPath = ""
		c.url = &clean
	case "mysql":
		if u.Scheme != "mysql" && u.Scheme != "mariadb" {
			return nil, fmt.Errorf("mysql source: the connection URL's scheme is %q, not mysql", u.Scheme)
		}
		c.host = u.Hostname()
		if p := u.Port(); p != "" {
			c.port, err = strconv.Atoi(p)
			if err != nil || c.port <= 0 || c.port > 65535 {
				return nil, errors.New("mysql source: the connection URL's port is not a port number")
			}
		}
		c.url = u
	}
	return c, nil
}

func (c *conn) describe() string {
	how := "as the local superuser over the unix socket"
	if c.url != nil {
		how = "as " + c.user + " through the connection URL"
	}
	return fmt.Sprintf("%s database %s (%s)", c.kind, c.db, how)
}

func (c *conn) withDB(db string) *conn {
	n := *c
	n.db = db
	if c.url != nil && c.kind == "postgres" {
		u := *c.url
		u.Path = "/" + db
		n.url = &u
	}
	return &n
}

// pgCommand is a PostgreSQL client program reaching c's database.
func (c *conn) pgCommand(tool string, args ...string) (*command, error) {
	bin, err := findTool(tool)
	if err != nil {
		return nil, err
	}
	cmd := &command{name: tool}
	if c.url == nil {
		cred, home, err := systemUser("postgres")
		if err != nil {
			return nil, err
		}
		cmd.cred = cred
		if home != "" {
			cmd.env = append(cmd.env, "HOME="+home)
		}
		cmd.argv = append([]string{bin}, args...)
		return cmd, nil
	}
	cmd.env = []string{"HOME=/nonexistent", "PGPASSFILE=/dev/null", "PGCONNECT_TIMEOUT=30"}
	if c.password != "" {
		cmd.env = append(cmd.env, "PGPASSWORD="+c.password)
		cmd.secrets = []string{c.password}
	}
	cmd.argv = append([]string{bin}, args...)
	return cmd, nil
}

// pgDBArg is the --dbname value: a name, or the URL (password removed).
func (c *conn) pgDBArg() string {
	if c.url == nil {
		return c.db
	}
	return c.url.String()
}

// myCommand is a MySQL/MariaDB client program reaching c's server.
func (c *conn) myCommand(tools []string, args ...string) (*command, error) {
	bin, err := findTool(tools...)
	if err != nil {
		return nil, err
	}
	name := filepath.Base(bin)
	cmd := &command{name: name, env: []string{"HOME=/nonexistent"}}
	// --no-defaults: nothing from my.cnf files (no stray password, no
	// surprising options); the connection is all on this command line.
	base := []string{bin, "--no-defaults"}
	if c.url == nil {
		base = append(base, "--user=root")
	} else {
		if c.host != "" {
			base = append(base, "--host="+c.host)
		}
		if c.port != 0 {
			base = append(base, "--port="+strconv.Itoa(c.port))
		}
		if c.user != "" {
			base = append(base, "--user="+c.user)
		}
		if c.password != "" {
			cmd.env = append(cmd.env, "MYSQL_PWD="+c.password)
			cmd.secrets = []string{c.password}
		}
	}
	cmd.argv = append(base, args...)
	return cmd, nil
}

var (
	myDumpTools   = []string{"mariadb-dump", "mysqldump"}
	myClientTools = []string{"mariadb", "mysql"}
)

// pgUserObjects counts the tables, views and sequences outside the system
// schemas: zero means there is nothing to back up.
const pgUserObjects = `SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r','p','v','m','S','f') AND n.nspname NOT IN ('pg_catalog','information_schema') AND n.nspname NOT LIKE 'pg_toast%'`

const myUserTables = `SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = DATABASE()`

// objectCount counts the user objects in c's database; missing says the
// database does not exist.
func (c *conn) objectCount(ctx context.Context, lg *logger) (n int, missing bool, err error) {
	var cmd *command
	switch c.kind {
	case "postgres":
		cmd, err = c.pgCommand("psql", "-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1", "--dbname="+c.pgDBArg(), "-c", pgUserObjects)
	case "mysql":
		cmd, err = c.myCommand(myClientTools, "--batch", "--skip-column-names", "--database="+c.db, "-e", myUserTables)
	}
	if err != nil {
		return 0, false, err
	}
	quiet := newLogger(nil) // the error carries what matters
	out, err := cmd.output(ctx, quiet)
	if err != nil {
		msg := err.Error()
		if strings.Contains(msg, "does not exist") || strings.Contains(msg, "Unknown database") {
			return 0, true, nil
		}
		return 0, false, err
	}
	n, err = strconv.Atoi(strings.TrimSpace(out))
	if err != nil {
		return 0, false, fmt.Errorf("count the objects of %s: unexpected answer %q", c.describe(), out)
	}
	return n, false, nil
}

// prepareSource checks that the source exists and is not empty, and
// returns what dumps it.
func prepareSource(ctx context.Context, s Source, lg *logger) (source, error) {
	if s.Kind == "directory" {
		return prepareDir(s, lg)
	}
	c, err := parseConn(s)
	if err != nil {
		return nil, err
	}
	n, missing, err := c.objectCount(ctx, lg)
	switch {
	case err != nil:
		return nil, fmt.Errorf("check %s: %w", c.describe(), err)
	case missing:
		return nil, fmt.Errorf("%s does not exist", c.describe())
	case n == 0:
		return nil, fmt.Errorf("%s has no tables: nothing to back up", c.describe())
	}
	var cmd *command
	switch s.Kind {
	case "postgres":
		// Custom format (what pg_restore reads, selectively and with
		// --clean) with its own compression off: zstd follows.
		cmd, err = c.pgCommand("pg_dump", "--format=custom", "--compress=0", "--no-password", "--dbname="+c.pgDBArg())
		lg.printf("dumping %s with pg_dump --format=custom --compress=0 (%d tables, views and sequences)", c.describe(), n)
	case "mysql":
		// One consistent snapshot without locking InnoDB tables; the dump
		// names no database (no CREATE DATABASE/USE), so it restores into
		// whichever database the restore chooses.
		cmd, err = c.myCommand(myDumpTools, "--single-transaction", "--quick", "--routines", "--triggers",
			"--hex-blob", "--no-tablespaces", "--default-character-set=utf8mb4", c.db)
		lg.printf("dumping %s with %s --single-transaction (%d tables)", c.describe(), filepath.Base(cmd.argv[0]), n)
	}
	if err != nil {
		return nil, err
	}
	return &dumpSource{cmd: cmd, what: c.describe(), lg: lg}, nil
}

// dumpSource is a dump program's stdout.
type dumpSource struct {
	cmd  *command
	what string
	lg   *logger
}

func (d *dumpSource) describe() string { return "the dump of " + d.what }

func (d *dumpSource) writeTo(ctx context.Context, w io.Writer) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	cmd := *d.cmd
	// A write that fails (the upload stopped) stops the dump at once
	// rather than when it next blocks on a full pipe.
	cmd.stdout = &failWriter{w: w, fail: func(err error) { cancel(err) }}
	err := cmd.run(ctx, d.lg)
	if cause := context.Cause(ctx); cause != nil && !errors.Is(cause, context.Canceled) {
		return cause
	}
	return err
}

type failWriter struct {
	w      io.Writer
	fail   func(error)
	failed bool
}

func (f *failWriter) Write(p []byte) (int, error) {
	n, err := f.w.Write(p)
	if err != nil && !f.failed {
		f.failed = true
		f.fail(err)
	}
	return n, err
}

// dirEmptyOrMissing returns an error for a directory that cannot be backed
// up: missing, not a directory, or empty.
func prepareDir(s Source, lg *logger) (source, error) {
	dir := s.Name
	if s.Within == "" {
		fi, err := os.Lstat(dir)
		switch {
		case errors.Is(err, os.ErrNotExist):
			return nil, fmt.Errorf("directory %s does not exist", dir)
		case err != nil:
			return nil, fmt.Errorf("directory %s: %w", dir, err)
		case !fi.IsDir():
			return nil, fmt.Errorf("%s is not a directory", dir)
		}
	}
	d := &dirSource{dir: dir, within: s.Within, lg: lg}
	root, err := d.open()
	if err != nil {
		return nil, err
	}
	f, err := root.Open(".")
	root.Close()
	if err != nil {
		return nil, fmt.Errorf("directory %s: %w", dir, err)
	}
	names, err := f.Readdirnames(1)
	f.Close()
	if errors.Is(err, io.EOF) || err == nil && len(names) == 0 {
		return nil, fmt.Errorf("directory %s is empty: nothing to back up", dir)
	}
	if err != nil {
		return nil, fmt.Errorf("directory %s: %w", dir, err)
	}
	lg.printf("archiving directory %s (tar; symlinks kept as links, never followed)", dir)
	return d, nil
}

// isENOSPC says whether err is a full disk.
func isENOSPC(err error) bool { return errors.Is(err, syscall.ENOSPC) }
