package migrate_test

import (
	"context"
	"io"
	"log/slog"
	"slices"
	"testing"

	"github.com/berthhq/berth/controller/internal/migrate"
	"github.com/berthhq/berth/controller/internal/testdb"
)

// 000023 binds each existing credential to the hosts its apps already
// use (https, ssh:// with user and port, scp-like), so an upgrade keeps
// working deploys working; a credential no app uses, or only a local
// path, stays unbound.
func TestMigration23BindsCredentialsToTheirAppsHosts(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := testdb.New(t)
	mg, err := migrate.Open(ctx, db.DSN, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer mg.Close()
	// Back to the schema before 000023, whatever came after it.
	if err := downTo(mg, 22); err != nil {
		t.Fatal(err)
	}
	exec := func(q string) {
		t.Helper()
		if _, err := db.Pool.Exec(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	exec(`INSERT INTO servers (id, name) VALUES ('00000000-0000-0000-0000-000000000001', 'web-1')`)
	for i, name := range []string{"a", "b", "c", "d"} {
		exec(`INSERT INTO git_credentials (id, name, kind, credentials, username) VALUES ('00000000-0000-0000-0000-00000000010` + string(rune('0'+i)) + `', '` + name + `', 'https', '\x00', 'u')`)
	}
	apps := []struct{ cred, url string }{
		{"100", "https://GitHub.com/acme/a.git"},
		{"100", "git@gitlab.example.com:acme/b.git"},
		{"101", "ssh://git@git.example.org:2222/srv/c.git"},
		{"101", "https://bot@git.example.org/c.git"},
		{"102", "/srv/git/local.git"},
		{"102", "file:///srv/git/local.git"},
	}
	for i, a := range apps {
		n := string(rune('a' + i))
		exec(`INSERT INTO apps (id, server_id, git_credential_id, name, repository_url, deploy_path) VALUES ('00000000-0000-0000-0000-00000000020` + string(rune('0'+i)) +
			`', '00000000-0000-0000-0000-000000000001', '00000000-0000-0000-0000-000000000` + a.cred + `', 'app-` + n + `', '` + a.url + `', '/srv/` + n + `')`)
	}
	if err := mg.Up(); err != nil {
		t.Fatal(err)
	}
	want := map[string][]string{"a": {"github.com", "gitlab.example.com"}, "b": {"git.example.org"}, "c": {}, "d": {}}
	for name, hosts := range want {
		var got []string
		if err := db.Pool.QueryRow(ctx, `SELECT allowed_hosts FROM git_credentials WHERE name = $1`, name).Scan(&got); err != nil {
			t.Fatal(err)
		}
		slices.Sort(got)
		if !slices.Equal(got, hosts) {
			t.Errorf("credential %s: allowed hosts %v, want %v", name, got, hosts)
		}
	}
}
