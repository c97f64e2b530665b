package backup

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"time"
)

// Restore writes o into t: pg_restore into a PostgreSQL database (created
// when missing), the mysql client into a MySQL/MariaDB database (created
// when missing), or the archive into a directory (created when missing,
// never written outside). A target that is not empty needs t.Force.
//
// The stored object is first copied to t.SpoolDir and checked against its
// recorded size and SHA-256 (see openChecked): nothing is written or
// executed from bytes the backup did not make. The copy is then decrypted
// and decompressed as it is read.
func Restore(ctx context.Context, o Object, identity string, t RestoreTarget, log io.Writer) error {
	lg := newLogger(log)
	if t.Source.Kind != o.Kind {
		return fmt.Errorf("restore: a %s backup cannot be restored into a %s target", o.Kind, t.Source.Kind)
	}
	if err := checkSource(t.Source); err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	start := time.Now()
	r, err := openChecked(ctx, o, identity, t.SpoolDir, lg)
	if err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	defer r.close()
	switch o.Kind {
	case "postgres":
		err = restorePostgres(ctx, r, t, lg)
	case "mysql":
		err = restoreMySQL(ctx, r, t, lg)
	case "directory":
		err = restoreDir(ctx, r, t, lg)
	default:
		err = fmt.Errorf("source kind %q is not one of postgres, mysql, directory", o.Kind)
	}
	if err == nil {
		// Whatever the consumer left unread still counts.
		err = r.drain()
	}
	if err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	lg.printf("restored %s into %s in %s", o.Key, t.Source.Name, time.Since(start).Round(time.Millisecond))
	return nil
}

func notEmpty(what string, n int) error {
	return fmt.Errorf("%s is not empty (%d tables, views or sequences): restoring into it needs force, which replaces the objects the backup contains", what, n)
}

func feedFrom(r io.Reader) func(io.Writer) error {
	return func(w io.Writer) error {
		_, err := io.CopyBuffer(w, r, make([]byte, 64<<10))
		return err
	}
}

func restorePostgres(ctx context.Context, r *reading, t RestoreTarget, lg *logger) error {
	c, err := parseConn(t.Source)
	if err != nil {
		return err
	}
	n, missing, err := c.objectCount(ctx, lg)
	if err != nil {
		return fmt.Errorf("check %s: %w", c.describe(), err)
	}
	switch {
	case missing:
		args := []string{"--no-password"}
		if c.url != nil {
			args = append(args, "--maintenance-db="+c.withDB("postgres").pgDBArg())
		}
		cmd, err := c.pgCommand("createdb", append(args, "--", c.db)...)
		if err != nil {
			return err
		}
		if err := cmd.run(ctx, lg); err != nil {
			return err
		}
		lg.printf("created database %s", c.db)
	case n > 0 && !t.Force:
		return notEmpty(c.describe(), n)
	}
	args := []string{"--dbname=" + c.pgDBArg(), "--no-password", "--exit-on-error", "--single-transaction"}
	if n > 0 {
		args = append(args, "--clean", "--if-exists")
		lg.printf("the database is not empty (%d objects): force given, pg_restore --clean --if-exists replaces what the backup contains", n)
	}
	if c.url != nil {
		// An application's user cannot give objects to roles it is not:
		// everything restored belongs to it.
		args = append(args, "--no-owner", "--no-acl")
	}
	cmd, err := c.pgCommand("pg_restore", args...)
	if err != nil {
		return err
	}
	cmd.feed = feedFrom(r.plain)
	lg.printf("restoring into %s with pg_restore --single-transaction", c.describe())
	return cmd.run(ctx, lg)
}

func restoreMySQL(ctx context.Context, r *reading, t RestoreTarget, lg *logger) error {
	c, err := parseConn(t.Source)
	if err != nil {
		return err
	}
	n, missing, err := c.objectCount(ctx, lg)
	if err != nil {
		return fmt.Errorf("check %s: %w", c.describe(), err)
	}
	switch {
	case missing:
		// The name passed dbNameRE: no backquote can be in it.
		cmd, err := c.myCommand(myClientTools, "-e", "CREATE DATABASE `"+c.db+"`")
		if err != nil {
			return err
		}
		if err := cmd.run(ctx, lg); err != nil {
			return err
		}
		lg.printf("created database %s", c.db)
	case n > 0 && !t.Force:
		return notEmpty(c.describe(), n)
	case n > 0:
		lg.printf("the database is not empty (%d tables): force given, the dump's DROP TABLE IF EXISTS replaces the tables it contains", n)
	}
	cmd, err := c.myCommand(myClientTools, "--binary-mode", "--database="+c.db)
	if err != nil {
		return err
	}
	cmd.feed = feedFrom(r.plain)
	lg.printf("restoring into %s with %s", c.describe(), filepath.Base(cmd.argv[0]))
	return cmd.run(ctx, lg)
}

func restoreDir(ctx context.Context, r *reading, t RestoreTarget, lg *logger) error {
	dir := t.Source.Name
	if t.Source.Within != "" {
		return restoreDirWithin(ctx, r, t, lg)
	}
	fi, err := os.Lstat(dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return fmt.Errorf("create %s: %w", dir, err)
		}
		lg.printf("created directory %s", dir)
	case err != nil:
		return err
	case !fi.IsDir():
		return fmt.Errorf("%s is not a directory", dir)
	default:
		ents, err := os.ReadDir(dir)
		if err != nil {
			return err
		}
		if len(ents) > 0 && !t.Force {
			return fmt.Errorf("directory %s is not empty (%d entries): restoring into it needs force, which replaces files of the same name", dir, len(ents))
		}
	}
	return extractTar(ctx, r.plain, dir, lg)
}

// Probe writes a small object to d, reads it back, compares and deletes it:
// the destination test. The error says which step failed.
func Probe(ctx context.Context, d Destination) error {
	st, err := openStore(ctx, d)
	if err != nil {
		return err
	}
	defer st.close()
	var rnd [8]byte
	_, _ = rand.Read(rnd[:])
	key := "berth-probe-" + hex.EncodeToString(rnd[:])
	data := make([]byte, 4096)
	_, _ = rand.Read(data)
	if _, err := st.put(ctx, key, bytes.NewReader(data)); err != nil {
		return fmt.Errorf("probe: write: %w", err)
	}
	rc, err := st.get(ctx, key)
	if err != nil {
		_ = st.remove(ctx, key)
		return fmt.Errorf("probe: read back: %w", err)
	}
	got, err := io.ReadAll(io.LimitReader(rc, int64(len(data))+1))
	rc.Close()
	if err != nil {
		_ = st.remove(ctx, key)
		return fmt.Errorf("probe: read back: %w", err)
	}
	if !bytes.Equal(got, data) {
		_ = st.remove(ctx, key)
		return fmt.Errorf("probe: read back %d bytes that differ from the %d written", len(got), len(data))
	}
	if err := st.remove(ctx, key); err != nil {
		return fmt.Errorf("probe: delete: %w", err)
	}
	if err := st.checkAbsent(ctx, key); err != nil {
		return fmt.Errorf("probe: delete: the probe object is still there after its delete")
	}
	return nil
}

// restoreDirWithin is restoreDir for a target inside Within (the app's
// deploy path): every step, the checks, creating the target and the
// extraction, goes through an os.Root of Within. The app's user may have
// replaced a component of the target with a symlink out of the app since
// the backup; a restore running as root must not follow it (os.Root
// refuses to leave Within), or it would write the archive's files, which
// that user chose, anywhere on the server.
func restoreDirWithin(ctx context.Context, r *reading, t RestoreTarget, lg *logger) error {
	dir, within := t.Source.Name, t.Source.Within
	outer, err := os.OpenRoot(within)
	if err != nil {
		return fmt.Errorf("open %s: %w", within, err)
	}
	defer outer.Close()
	rel, err := filepath.Rel(within, dir)
	if err != nil || !filepath.IsLocal(rel) {
		return fmt.Errorf("directory %s is not inside %s", dir, within)
	}
	fi, err := outer.Lstat(rel)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		if err := outer.MkdirAll(rel, 0o755); err != nil {
			return fmt.Errorf("create %s inside %s: %w", dir, within, err)
		}
		lg.printf("created directory %s", dir)
	case err != nil:
		// Among others: a symlink on the way leading out of within.
		return fmt.Errorf("directory %s inside %s: %w", dir, within, err)
	case !fi.IsDir():
		return fmt.Errorf("%s is not a directory", dir)
	}
	root, err := outer.OpenRoot(rel)
	if err != nil {
		return fmt.Errorf("open %s inside %s: %w", dir, within, err)
	}
	defer root.Close()
	f, err := root.Open(".")
	if err != nil {
		return fmt.Errorf("open %s: %w", dir, err)
	}
	ents, err := f.ReadDir(-1)
	f.Close()
	if err != nil {
		return fmt.Errorf("read %s: %w", dir, err)
	}
	if len(ents) > 0 && !t.Force {
		return fmt.Errorf("directory %s is not empty (%d entries): restoring into it needs force, which replaces files of the same name", dir, len(ents))
	}
	return extractTarRoot(ctx, r.plain, root, dir, lg)
}
