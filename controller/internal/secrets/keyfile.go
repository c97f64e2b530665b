package secrets

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
)

const (
	// EnvVar holds keys as comma-separated "ID:BASE64" entries. When set it
	// replaces the key file entirely.
	EnvVar = "BERTH_ENCRYPTION_KEYS"
	// KeyFileName is the key file's name inside the data directory.
	KeyFileName = "encryption.keys"

	maxKeyFileSize = 1 << 20 // far above any real keyring; bounds a bad path
)

// ErrKeyFilePermissions means the key file is accessible to group or others.
var ErrKeyFilePermissions = errors.New("secrets: key file is accessible to group or others")

var (
	b64          = base64.StdEncoding.Strict()
	errNoEntries = errors.New(`no keys; want "ID:BASE64" entries`)
)

// Load returns the keyring from env (the value of BERTH_ENCRYPTION_KEYS)
// when it is set, and never touches the file system then. Otherwise it uses
// the key file at path, creating it on first start (created reports that, so
// the caller can tell the operator to back it up).
func Load(env, path string) (kr *Keyring, created bool, err error) {
	if strings.TrimSpace(env) != "" {
		kr, err := parseEntries(strings.Split(env, ","), "entry")
		if err != nil {
			return nil, false, fmt.Errorf("secrets: %s: %w", EnvVar, err)
		}
		return kr, false, nil
	}
	if path == "" {
		return nil, false, fmt.Errorf("secrets: neither %s nor a key file path is set", EnvVar)
	}
	return LoadOrCreateKeyFile(path)
}

// ParseKeys parses the BERTH_ENCRYPTION_KEYS format: comma-separated
// "ID:BASE64" entries, ID a decimal number from 1, BASE64 standard padded
// base64 of 32 bytes. Spaces around entries and empty entries are ignored.
// The highest id is the primary, wherever it is listed. Errors name the entry
// by position and never quote it.
func ParseKeys(s string) (*Keyring, error) {
	kr, err := parseEntries(strings.Split(s, ","), "entry")
	if err != nil {
		return nil, fmt.Errorf("secrets: parse keys: %w", err)
	}
	return kr, nil
}

// parseKeyFile parses the key file format: one "ID:BASE64" entry per line;
// blank lines and everything from a '#' are ignored ('#' is not in the
// base64 alphabet).
func parseKeyFile(data []byte) (*Keyring, error) {
	lines := strings.Split(string(data), "\n")
	for i, line := range lines {
		line, _, _ = strings.Cut(line, "#")
		lines[i] = line
	}
	return parseEntries(lines, "line")
}

// parseEntries parses entries; unit ("entry", "line") names one in errors.
func parseEntries(entries []string, unit string) (*Keyring, error) {
	keys := make(map[uint32][]byte)
	for i, e := range entries {
		e = strings.TrimSpace(e)
		if e == "" {
			continue
		}
		id, key, err := parseEntry(e)
		if err != nil {
			return nil, fmt.Errorf("%s %d: %w", unit, i+1, err)
		}
		if _, dup := keys[id]; dup {
			return nil, fmt.Errorf("%s %d: key id %d is listed twice", unit, i+1, id)
		}
		keys[id] = key
	}
	if len(keys) == 0 {
		return nil, errNoEntries
	}
	return newKeyring(keys)
}

func parseEntry(e string) (uint32, []byte, error) {
	idText, keyText, ok := strings.Cut(e, ":")
	if !ok {
		return 0, nil, errors.New(`want "ID:BASE64"`)
	}
	id, err := strconv.ParseUint(strings.TrimSpace(idText), 10, 32)
	if err != nil || id == 0 {
		// Not quoting idText: a malformed entry may be mostly key material.
		return 0, nil, errors.New("key id must be a whole number from 1 to 4294967295")
	}
	key, err := b64.DecodeString(strings.TrimSpace(keyText))
	if err != nil {
		// Not wrapping err: it carries an offset into the secret, no help.
		return 0, nil, fmt.Errorf("key %d is not valid standard base64", id)
	}
	if err := checkKey(uint32(id), key); err != nil {
		return 0, nil, err
	}
	return uint32(id), key, nil
}

// ExportKeys returns every key, secret bytes included, in the
// BERTH_ENCRYPTION_KEYS format, ascending by id. It exists so that rotation
// can hand the new value to an operator who keeps keys in the environment;
// treat the result as the secret it is.
func (k *Keyring) ExportKeys() string {
	var parts []string
	for _, id := range k.IDs() {
		parts = append(parts, strconv.FormatUint(uint64(id), 10)+":"+b64.EncodeToString(k.keys[id]))
	}
	return strings.Join(parts, ",")
}

func (k *Keyring) marshalKeyFile() []byte {
	var b bytes.Buffer
	b.WriteString("# Berth encryption keys. Secret: keep this file mode 0600 and back it up;\n")
	b.WriteString("# without it the encrypted database fields cannot be read.\n")
	b.WriteString("# One key per line, ID:BASE64. The highest ID encrypts; every key decrypts.\n")
	for _, id := range k.IDs() {
		fmt.Fprintf(&b, "%d:%s\n", id, b64.EncodeToString(k.keys[id]))
	}
	return b.Bytes()
}

// ReadKeyFile reads a key file. It refuses a file that group or others may
// access (ErrKeyFilePermissions) and a file without keys. A missing file gives
// an error matching fs.ErrNotExist.
func ReadKeyFile(path string) (*Keyring, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("secrets: %w", err)
	}
	defer f.Close()
	// Stat the open file, not the path, so the checked file is the read one.
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("secrets: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("secrets: key file %s is not a regular file", path)
	}
	// Windows has no such permission bits; Berth's servers are Unix.
	if perm := fi.Mode().Perm(); runtime.GOOS != "windows" && perm&0o077 != 0 {
		return nil, fmt.Errorf("%w: %s has mode %04o; fix with: chmod 600 %s", ErrKeyFilePermissions, path, perm, path)
	}
	data, err := io.ReadAll(io.LimitReader(f, maxKeyFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("secrets: read key file: %w", err)
	}
	if len(data) > maxKeyFileSize {
		return nil, fmt.Errorf("secrets: key file %s is larger than %d bytes; is it the right file?", path, maxKeyFileSize)
	}
	kr, err := parseKeyFile(data)
	if errors.Is(err, errNoEntries) {
		// Most likely truncated by a crash or an editor; regenerating silently
		// would orphan every encrypted value, so say what the choices are.
		return nil, fmt.Errorf("secrets: key file %s holds no keys; restore it from a backup (deleting it makes Berth generate a new key, and values encrypted under the old keys become unreadable)", path)
	}
	if err != nil {
		return nil, fmt.Errorf("secrets: key file %s: %w", path, err)
	}
	return kr, nil
}

// LoadOrCreateKeyFile reads the key file at path or, when there is none,
// generates a keyring with one key and writes it (mode 0600; missing
// directories are made 0700). created reports that a new file was written.
// Two processes starting together agree on one file: the file is published
// with a link that fails if it already exists, and the loser reads the
// winner's file.
func LoadOrCreateKeyFile(path string) (kr *Keyring, created bool, err error) {
	kr, err = ReadKeyFile(path)
	if !errors.Is(err, fs.ErrNotExist) {
		return kr, false, err
	}
	if kr, err = Generate(); err != nil {
		return nil, false, err
	}
	err = writeKeyFile(path, kr, false)
	if errors.Is(err, fs.ErrExist) {
		kr, err = ReadKeyFile(path)
		return kr, false, err
	}
	if err != nil {
		return nil, false, err
	}
	return kr, true, nil
}

// SaveKeyFile atomically replaces the key file at path with kr (mode 0600):
// after a crash the file holds either the old or the new keyring, never a
// mix. Rotation calls it before encrypting anything under the new key.
func SaveKeyFile(path string, kr *Keyring) error {
	if kr == nil || len(kr.ids) == 0 {
		return ErrNoKeys
	}
	return writeKeyFile(path, kr, true)
}

// writeKeyFile writes a temporary file next to path, syncs it, then renames
// it over path (replace) or hard-links it to path, which fails with
// fs.ErrExist if path exists (!replace), and syncs the directory so the new
// name survives a power loss.
func writeKeyFile(path string, kr *Keyring, replace bool) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("secrets: %w", err)
	}
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*") // mode 0600
	if err != nil {
		return fmt.Errorf("secrets: %w", err)
	}
	defer func() {
		tmp.Close()
		// After a rename the name is gone and this fails harmlessly; after a
		// link or a failure it removes the temporary file.
		os.Remove(tmp.Name())
	}()
	if err := tmp.Chmod(0o600); err != nil {
		return fmt.Errorf("secrets: %w", err)
	}
	if _, err := tmp.Write(kr.marshalKeyFile()); err != nil {
		return fmt.Errorf("secrets: write key file: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		return fmt.Errorf("secrets: sync key file: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("secrets: write key file: %w", err)
	}
	if replace {
		err = os.Rename(tmp.Name(), path)
	} else {
		err = os.Link(tmp.Name(), path)
	}
	if err != nil {
		return fmt.Errorf("secrets: publish key file: %w", err)
	}
	return syncDir(dir)
}

func syncDir(dir string) error {
	if runtime.GOOS == "windows" {
		return nil // directories cannot be opened for sync there
	}
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("secrets: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("secrets: sync %s: %w", dir, err)
	}
	return nil
}
