package main_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/berthhq/berth/controller/internal/secrets"
	"github.com/berthhq/berth/controller/internal/store"
	"github.com/berthhq/berth/controller/internal/testdb"
)

// TestKeysRotate seals values under the first key, rotates through the CLI
// (interrupted once, then resumed) and checks that nothing is left under the
// old key and every value still opens to its plaintext.
func TestKeysRotate(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	d := testdb.New(t)
	dataDir := t.TempDir()
	keyFile := filepath.Join(dataDir, secrets.KeyFileName)
	kr, _, err := secrets.LoadOrCreateKeyFile(keyFile)
	if err != nil {
		t.Fatal(err)
	}

	const users = 23 // more than one --batch of 5, not a multiple of it
	plain := map[store.ID]string{}
	for i := 0; i < users; i++ {
		id := store.NewID()
		secret := fmt.Sprintf("totp-secret-%d", i)
		ct, err := kr.Encrypt([]byte(secret), secrets.AD{Table: "users", Column: "two_factor_secret", RowID: id})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := d.Pool.Exec(ctx, `INSERT INTO users (id, email, password_hash, two_factor_secret) VALUES ($1, $2, 'x', $3)`,
			pgtype.UUID{Bytes: id, Valid: true}, fmt.Sprintf("u%d@example.com", i), ct); err != nil {
			t.Fatal(err)
		}
		plain[id] = secret
	}
	args := []string{"--data-dir", dataDir, "--database-url", d.DSN, "--batch", "5"}

	r := run(t, nil, append([]string{"keys", "status"}, args...)...)
	if r.code != 0 || !strings.Contains(r.stdout, fmt.Sprintf("users.two_factor_secret: key 1: %d", users)) {
		t.Fatalf("status before: %+v", r)
	}

	// A rotation that died after saving the new key: the marker is there and
	// the key file has key 2. Running rotate again must resume, not add key 3.
	next, err := kr.AddKey()
	if err != nil {
		t.Fatal(err)
	}
	if err := secrets.SaveKeyFile(keyFile, next); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dataDir, "encryption.rotating"), []byte("2\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	r = run(t, nil, append([]string{"keys", "rotate"}, args...)...)
	if r.code != 0 || !strings.Contains(r.stdout, "resuming") || !strings.Contains(r.stdout, fmt.Sprintf("%d values re-encrypted under key 2", users)) {
		t.Fatalf("resumed rotate: %+v", r)
	}
	if _, err := os.Stat(filepath.Join(dataDir, "encryption.rotating")); !os.IsNotExist(err) {
		t.Fatal("rotation marker left behind")
	}

	// A fresh rotation adds key 3 and moves everything to it.
	r = run(t, nil, append([]string{"keys", "rotate"}, args...)...)
	if r.code != 0 || !strings.Contains(r.stdout, "added key 3") || !strings.Contains(r.stdout, fmt.Sprintf("%d values re-encrypted under key 3", users)) {
		t.Fatalf("rotate: %+v", r)
	}
	final, err := secrets.ReadKeyFile(keyFile)
	if err != nil || final.PrimaryID() != 3 {
		t.Fatalf("key file after rotate: primary %v, %v", final, err)
	}
	rows, err := d.Pool.Query(ctx, `SELECT id, two_factor_secret FROM users`)
	if err != nil {
		t.Fatal(err)
	}
	type row struct {
		ID pgtype.UUID
		CT []byte
	}
	got, err := pgx.CollectRows(rows, pgx.RowToStructByPos[row])
	if err != nil || len(got) != users {
		t.Fatalf("rows: %d, %v", len(got), err)
	}
	for _, r := range got {
		if id, err := secrets.KeyID(r.CT); err != nil || id != 3 {
			t.Fatalf("value still under key %d (%v)", id, err)
		}
		pt, err := final.Decrypt(r.CT, secrets.AD{Table: "users", Column: "two_factor_secret", RowID: r.ID.Bytes})
		if err != nil || string(pt) != plain[store.ID(r.ID.Bytes)] {
			t.Fatalf("value after rotate = %q, %v", pt, err)
		}
	}
	r = run(t, nil, append([]string{"keys", "status"}, args...)...)
	if r.code != 0 || !strings.Contains(r.stdout, fmt.Sprintf("users.two_factor_secret: key 3: %d\n", users)) {
		t.Fatalf("status after: %+v", r)
	}

	// A value moved to another row cannot be re-encrypted: rotate says which
	// row and fails rather than skipping it.
	if _, err := d.Pool.Exec(ctx, `UPDATE users SET two_factor_secret = (SELECT two_factor_secret FROM users ORDER BY id LIMIT 1)
		WHERE id = (SELECT id FROM users ORDER BY id DESC LIMIT 1)`); err != nil {
		t.Fatal(err)
	}
	r = run(t, nil, append([]string{"keys", "rotate"}, args...)...)
	if r.code == 0 || !strings.Contains(r.stderr, "re-run to resume") {
		t.Fatalf("rotate over a moved ciphertext: %+v", r)
	}

	// Keys from the environment: rotate refuses and says what to do.
	r = run(t, []string{secrets.EnvVar + "=" + final.ExportKeys()}, "keys", "rotate", "--database-url", d.DSN)
	if r.code == 0 || !strings.Contains(r.stderr, "berth keys generate") || strings.Contains(r.stderr, final.ExportKeys()) {
		t.Fatalf("rotate with env keys: %+v", r)
	}
}
