package secrets

import (
	"errors"
	"sync"
	"sync/atomic"
)

// Source hands out the current keyring. When a ciphertext names a key the
// keyring does not know, another process (`berth keys rotate`, another
// controller) has added one: Reload picks it up from the key file, which
// rotation always saves before it writes anything under the new key.
type Source struct {
	cur  atomic.Pointer[Keyring]
	path string // "" when keys came from the environment: nothing to reload
	mu   sync.Mutex
}

// NewSource wraps kr; path is the key file it came from, or "".
func NewSource(kr *Keyring, path string) *Source {
	s := &Source{path: path}
	s.cur.Store(kr)
	return s
}

// Keyring is the current keyring.
func (s *Source) Keyring() *Keyring { return s.cur.Load() }

// Reload re-reads the key file and reports whether it brought new keys. It
// never drops a key it already has: an old ciphertext must stay readable
// even if someone trimmed the file.
func (s *Source) Reload() (bool, error) {
	if s.path == "" {
		return false, nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	kr, err := ReadKeyFile(s.path)
	if err != nil {
		return false, err
	}
	old := s.cur.Load()
	if kr.PrimaryID() == old.PrimaryID() && len(kr.IDs()) == len(old.IDs()) {
		return false, nil
	}
	for _, id := range old.IDs() {
		if !kr.Has(id) {
			return false, errors.New("secrets: the key file lost a key this process still uses; refusing to reload")
		}
	}
	s.cur.Store(kr)
	return true, nil
}
