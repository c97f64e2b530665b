package backup

import (
	"strings"
	"testing"
)

// A PostgreSQL connection URL may carry its password as a query parameter
// (libpq reads ?password=): it must reach pg_dump through PGPASSWORD, never
// its argv, which every user of the server can read in /proc/PID/cmdline.
// A real backup through such a URL then works and logs no password.
func TestPostgresURLQueryPasswordNotInArgv(t *testing.T) {
	const pw = "app-secret-pw-7731"
	for _, url := range []string{
		"postgres://app@db.internal:5432/shop?password=" + pw + "&sslmode=disable",
		"postgresql://app:" + pw + "@db.internal/shop?sslmode=disable",
		"postgres://app@db.internal/shop?sslmode=disable&PASSWORD=" + pw,
	} {
		c, err := parseConn(Source{Kind: "postgres", ConnectionURL: url})
		if err != nil {
			t.Fatalf("parseConn: %v", err)
		}
		cmd, err := c.pgCommand("pg_dump", "--format=custom", "--dbname="+c.pgDBArg())
		if err != nil {
			t.Fatal(err)
		}
		if argv := strings.Join(cmd.argv, " "); strings.Contains(argv, pw) {
			t.Errorf("%s: the password is in pg_dump's argv: %s", url, argv)
		}
		if !strings.Contains(strings.Join(cmd.env, "\n"), "PGPASSWORD="+pw) {
			t.Errorf("%s: PGPASSWORD not set from the URL", url)
		}
		if len(cmd.secrets) == 0 || cmd.secrets[0] != pw {
			t.Errorf("%s: the password is not masked in the tool's output", url)
		}
	}
	// sslpassword has no environment variable in libpq: refused, not leaked.
	_, err := parseConn(Source{Kind: "postgres", ConnectionURL: "postgres://app@h/shop?sslpassword=" + pw})
	if err == nil || strings.Contains(err.Error(), pw) {
		t.Errorf("sslpassword in the URL: %v", err)
	}

	ctx := ctxT(t)
	db := newPGDatabase(t, 20)
	_, recipient := ageKeys(t)
	dest := Destination{Kind: "local", Path: t.TempDir()}
	var log lockedLog
	url := "postgres://app@/" + db + "?host=" + pgDir + "&port=5432&password=" + pw
	if _, err := Run(ctx, Spec{Source: Source{Kind: "postgres", ConnectionURL: url}, Dest: dest, Key: "q/pw.dump.zst.age", Recipient: recipient, Log: &log}); err != nil {
		t.Fatalf("Run with the password in the query: %v\n%s", err, log.String())
	}
	checkNoSecrets(t, []string{pw}, log.String())
}
