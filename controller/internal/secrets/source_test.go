package secrets

import (
	"errors"
	"path/filepath"
	"testing"
)

func TestSourceReloadsRotatedKeyFile(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), KeyFileName)
	kr, _, err := LoadOrCreateKeyFile(path)
	if err != nil {
		t.Fatal(err)
	}
	src := NewSource(kr, path)
	if changed, err := src.Reload(); err != nil || changed {
		t.Fatalf("reload without change = %v, %v", changed, err)
	}

	// Another process rotates: a value sealed under the new key is unknown
	// to src until it reloads.
	rotated, err := kr.AddKey()
	if err != nil {
		t.Fatal(err)
	}
	if err := SaveKeyFile(path, rotated); err != nil {
		t.Fatal(err)
	}
	ad := AD{Table: "t", Column: "c", RowID: [16]byte{1}}
	ct, err := rotated.Encrypt([]byte("v"), ad)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := src.Keyring().Decrypt(ct, ad); !errors.Is(err, ErrUnknownKey) {
		t.Fatalf("before reload: %v, want ErrUnknownKey", err)
	}
	if changed, err := src.Reload(); err != nil || !changed {
		t.Fatalf("reload after rotation = %v, %v", changed, err)
	}
	if pt, err := src.Keyring().Decrypt(ct, ad); err != nil || string(pt) != "v" {
		t.Fatalf("after reload: %q, %v", pt, err)
	}

	// A key file that lost a key in use is refused, and the keyring kept.
	if err := SaveKeyFile(path, kr); err != nil {
		t.Fatal(err)
	}
	if _, err := src.Reload(); err == nil {
		t.Fatal("reload accepted a key file missing a key in use")
	}
	if src.Keyring().PrimaryID() != rotated.PrimaryID() {
		t.Fatal("failed reload replaced the keyring")
	}

	// Keys from the environment never reload.
	if changed, err := NewSource(kr, "").Reload(); err != nil || changed {
		t.Fatalf("env source reload = %v, %v", changed, err)
	}
}
