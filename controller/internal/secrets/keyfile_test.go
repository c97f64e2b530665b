package secrets

import (
	"encoding/base64"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
)

func TestParseKeysErrors(t *testing.T) {
	t.Parallel()
	short := base64.StdEncoding.EncodeToString([]byte("0123456789abcdef")) // 16 bytes
	long := base64.StdEncoding.EncodeToString([]byte(strings.Repeat("k", 33)))
	zero := base64.StdEncoding.EncodeToString(make([]byte, 32))
	for _, tc := range []struct {
		in, want string
	}{
		{"", "no keys"},
		{" , ,", "no keys"},
		{testKey1, `entry 1: want "ID:BASE64"`},
		{"x:" + testKey1, "entry 1: key id must be a whole number"},
		{"0:" + testKey1, "entry 1: key id must be a whole number"},
		{"-1:" + testKey1, "entry 1: key id must be a whole number"},
		{"4294967296:" + testKey1, "entry 1: key id must be a whole number"},
		{"1:" + testKey1 + ",2:" + testKey1[:20] + "!!" + testKey1[22:], "entry 2: key 2 is not valid standard base64"},
		{"1:" + strings.TrimRight(testKey1, "="), "entry 1: key 1 is not valid standard base64"},
		{"1:" + strings.NewReplacer("+", "-", "/", "_").Replace("ab+/"+testKey1[4:]), "not valid standard base64"},
		{"1:" + short, "key 1 is 16 bytes, want 32"},
		{"1:" + long, "key 1 is 33 bytes, want 32"},
		{"1:", "key 1 is 0 bytes, want 32"},
		{"1:" + zero, "key 1 is all zero bytes"},
		{"1:" + testKey1 + ",1:" + testKey2, "entry 2: key id 1 is listed twice"},
		{"1:" + testKey1 + ",01:" + testKey2, "entry 2: key id 1 is listed twice"},
		{"1:" + testKey1 + ",2:" + testKey1, "keys 1 and 2 are identical"},
	} {
		_, err := ParseKeys(tc.in)
		if err == nil {
			t.Errorf("ParseKeys(entry %q...) succeeded", redact(tc.in))
			continue
		}
		msg := err.Error()
		if !strings.Contains(msg, tc.want) {
			t.Errorf("error %q does not contain %q", msg, tc.want)
		}
		for _, secret := range []string{testKey1, testKey2, testKey1[:12], testKey2[:12], short, long[:12]} {
			if strings.Contains(msg, secret) {
				t.Errorf("error %q echoes key material", msg)
			}
		}
	}
}

func redact(s string) string {
	if len(s) > 4 {
		return s[:4]
	}
	return s
}

func TestParseKeysAccepts(t *testing.T) {
	t.Parallel()
	kr, err := ParseKeys(" 1:" + testKey1 + " , 2 : " + testKey2 + ",")
	if err != nil {
		t.Fatal(err)
	}
	if kr.PrimaryID() != 2 || kr.ExportKeys() != "1:"+testKey1+",2:"+testKey2 {
		t.Fatalf("parsed %v", kr)
	}
	again, err := ParseKeys(kr.ExportKeys())
	if err != nil || again.ExportKeys() != kr.ExportKeys() {
		t.Fatalf("export does not round trip: %v", err)
	}
}

func TestKeyFileCreatedPrivateAndReloaded(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "data", "dir")
	path := filepath.Join(dir, KeyFileName)
	kr, created, err := LoadOrCreateKeyFile(path)
	if err != nil || !created {
		t.Fatalf("created %v, %v", created, err)
	}
	if kr.PrimaryID() != 1 || len(kr.IDs()) != 1 {
		t.Fatalf("new keyring %v", kr)
	}
	if runtime.GOOS != "windows" {
		assertMode(t, path, 0o600)
		assertMode(t, dir, 0o700)
	}
	leftovers, _ := filepath.Glob(filepath.Join(dir, ".*tmp*"))
	if len(leftovers) != 0 {
		t.Errorf("temporary files left: %v", leftovers)
	}

	again, created, err := LoadOrCreateKeyFile(path)
	if err != nil || created {
		t.Fatalf("reload: created %v, %v", created, err)
	}
	if again.ExportKeys() != kr.ExportKeys() {
		t.Fatal("reloaded keyring differs")
	}
	ct, _ := kr.Encrypt([]byte("x"), adApp)
	if _, err := again.Decrypt(ct, adApp); err != nil {
		t.Fatal(err)
	}

	// Rotation: save a keyring with a new key and read it back.
	next, _ := kr.AddKey()
	if err := SaveKeyFile(path, next); err != nil {
		t.Fatal(err)
	}
	assertMode(t, path, 0o600)
	saved, err := ReadKeyFile(path)
	if err != nil || saved.ExportKeys() != next.ExportKeys() || saved.PrimaryID() != 2 {
		t.Fatalf("saved %v, %v", saved, err)
	}
}

func assertMode(t *testing.T, path string, want fs.FileMode) {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := fi.Mode().Perm(); got != want {
		t.Errorf("%s: mode %04o, want %04o", path, got, want)
	}
}

// Controllers starting at once on one data dir must end up with one key.
func TestKeyFileCreationRace(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), KeyFileName)
	const n = 8
	exports := make([]string, n)
	var created int
	var mu sync.Mutex
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			kr, c, err := LoadOrCreateKeyFile(path)
			if err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			defer mu.Unlock()
			exports[i] = kr.ExportKeys()
			if c {
				created++
			}
		})
	}
	wg.Wait()
	if created != 1 {
		t.Errorf("%d processes think they created the file", created)
	}
	for _, e := range exports[1:] {
		if e != exports[0] {
			t.Fatal("processes disagree on the key")
		}
	}
}

func TestKeyFileRefusals(t *testing.T) {
	t.Parallel()
	write := func(t *testing.T, content string, mode fs.FileMode) string {
		path := filepath.Join(t.TempDir(), KeyFileName)
		if err := os.WriteFile(path, []byte(content), mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(path, mode); err != nil { // umask may have cut bits
			t.Fatal(err)
		}
		return path
	}
	good := "1:" + testKey1 + "\n"

	for _, mode := range []fs.FileMode{0o644, 0o640, 0o604, 0o620} {
		path := write(t, good, mode)
		_, _, err := LoadOrCreateKeyFile(path)
		if !errors.Is(err, ErrKeyFilePermissions) || !strings.Contains(err.Error(), "chmod 600 "+path) {
			t.Errorf("mode %04o: %v", mode, err)
		}
	}

	for name, content := range map[string]string{
		"empty":         "",
		"comments only": "# nothing here\n\n",
	} {
		path := write(t, content, 0o600)
		_, _, err := LoadOrCreateKeyFile(path)
		if err == nil || !strings.Contains(err.Error(), "holds no keys") {
			t.Errorf("%s: %v", name, err)
		}
		if data, _ := os.ReadFile(path); string(data) != content {
			t.Errorf("%s: file was overwritten", name)
		}
	}

	path := write(t, good+"1:"+testKey2+"\n", 0o600)
	if _, err := ReadKeyFile(path); err == nil || !strings.Contains(err.Error(), "line 2: key id 1 is listed twice") ||
		strings.Contains(err.Error(), testKey2) {
		t.Errorf("duplicate id: %v", err)
	}

	dir := t.TempDir()
	if _, _, err := LoadOrCreateKeyFile(dir); err == nil || !strings.Contains(err.Error(), "not a regular file") {
		t.Errorf("directory as key file: %v", err)
	}
}

func TestKeyFileComments(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), KeyFileName)
	content := "# keys\n\n  2:" + testKey2 + "  # rotated 2026\r\n1:" + testKey1 + "\n"
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	kr, err := ReadKeyFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if kr.PrimaryID() != 2 || len(kr.IDs()) != 2 {
		t.Fatalf("parsed %v", kr)
	}
}

func TestLoadPrefersEnvAndWritesNothing(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "data", KeyFileName)
	kr, created, err := Load("1:"+testKey1, path)
	if err != nil || created || kr.PrimaryID() != 1 {
		t.Fatalf("Load: %v, created %v, %v", kr, created, err)
	}
	if _, err := os.Stat(filepath.Dir(path)); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("Load with env touched the data dir: %v", err)
	}

	_, _, err = Load("1:"+testKey1[:10], path)
	if err == nil || !strings.Contains(err.Error(), EnvVar+": entry 1") || strings.Contains(err.Error(), testKey1[:10]) {
		t.Fatalf("bad env: %v", err)
	}

	kr, created, err = Load("  ", path)
	if err != nil || !created || kr.PrimaryID() != 1 {
		t.Fatalf("Load without env: created %v, %v", created, err)
	}
	if _, _, err := Load("", ""); err == nil {
		t.Fatal("Load with nothing set succeeded")
	}
}

func FuzzParseKeys(f *testing.F) {
	f.Add("1:" + testKey1)
	f.Add("1:" + testKey1 + ",2:" + testKey2)
	f.Add("2:" + testKey2 + ",1:" + testKey1 + ",")
	f.Add("4294967295:" + testKey1)
	f.Add("1:" + testKey1 + "\n#c\n2:" + testKey2)
	f.Add(":,:")
	f.Fuzz(func(t *testing.T, s string) {
		kr, err := ParseKeys(s)
		if err != nil {
			if kr != nil {
				t.Fatal("keyring returned with an error")
			}
			return
		}
		ids := kr.IDs()
		if len(ids) == 0 || kr.PrimaryID() != ids[len(ids)-1] {
			t.Fatalf("primary %d is not the highest of %v", kr.PrimaryID(), ids)
		}
		again, err := ParseKeys(kr.ExportKeys())
		if err != nil || again.ExportKeys() != kr.ExportKeys() {
			t.Fatalf("export does not round trip: %v", err)
		}
		file, err := parseKeyFile(kr.marshalKeyFile())
		if err != nil || file.ExportKeys() != kr.ExportKeys() {
			t.Fatalf("key file does not round trip: %v", err)
		}
	})
}
