package secrets

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/subtle"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"slices"
	"strings"
)

// KeySize is the length of every key: AES-256.
const KeySize = 32

// Keyring is an immutable set of numbered keys. The highest id is the primary
// and encrypts; every key decrypts. Methods that change the set (AddKey,
// RemoveKey) return a new Keyring, so a Keyring shared between goroutines never
// changes under them.
//
// Formatting a Keyring (fmt with any verb, slog) shows only key ids.
type Keyring struct {
	ids     []uint32 // ascending; primary is the last
	keys    map[uint32][]byte
	aeads   map[uint32]cipher.AEAD
	primary uint32
}

// Generate returns a keyring with one fresh random key, id 1.
func Generate() (*Keyring, error) {
	return newKeyring(map[uint32][]byte{1: randomKey()})
}

func randomKey() []byte {
	k := make([]byte, KeySize)
	// Since Go 1.24 crypto/rand.Read never returns an error (it aborts the
	// program instead), so there is nothing to handle here.
	_, _ = rand.Read(k)
	return k
}

// newKeyring validates keys and builds the ciphers. It takes ownership of the
// byte slices.
func newKeyring(keys map[uint32][]byte) (*Keyring, error) {
	if len(keys) == 0 {
		return nil, errors.New("no keys")
	}
	kr := &Keyring{
		keys:  make(map[uint32][]byte, len(keys)),
		aeads: make(map[uint32]cipher.AEAD, len(keys)),
	}
	for id, key := range keys {
		if id == 0 {
			return nil, errors.New("key id 0 is reserved; ids start at 1")
		}
		if err := checkKey(id, key); err != nil {
			return nil, err
		}
		block, err := aes.NewCipher(key)
		if err != nil {
			return nil, fmt.Errorf("key %d: %w", id, err)
		}
		aead, err := cipher.NewGCMWithRandomNonce(block)
		if err != nil {
			return nil, fmt.Errorf("key %d: %w", id, err)
		}
		kr.ids = append(kr.ids, id)
		kr.keys[id] = key
		kr.aeads[id] = aead
	}
	slices.Sort(kr.ids)
	// The same key under two ids is almost certainly a copy-paste mistake that
	// would make "rotation" rotate nothing.
	for i, a := range kr.ids {
		for _, b := range kr.ids[i+1:] {
			if subtle.ConstantTimeCompare(kr.keys[a], kr.keys[b]) == 1 {
				return nil, fmt.Errorf("keys %d and %d are identical; every key must be different", a, b)
			}
		}
	}
	kr.primary = kr.ids[len(kr.ids)-1]
	return kr, nil
}

// checkKey reports a wrong length or an all-zero key (a placeholder, not a
// key). The messages say what is wrong without showing the bytes.
func checkKey(id uint32, key []byte) error {
	if len(key) != KeySize {
		return fmt.Errorf("key %d is %d bytes, want %d (make one with: head -c 32 /dev/urandom | base64)", id, len(key), KeySize)
	}
	var zero [KeySize]byte
	if subtle.ConstantTimeCompare(key, zero[:]) == 1 {
		return fmt.Errorf("key %d is all zero bytes, which looks like a placeholder; use random bytes", id)
	}
	return nil
}

// PrimaryID is the id of the key that encrypts. It is 0 only for an empty
// (zero or nil) Keyring.
func (k *Keyring) PrimaryID() uint32 {
	if k == nil {
		return 0
	}
	return k.primary
}

// IDs lists the key ids, ascending.
func (k *Keyring) IDs() []uint32 {
	if k == nil {
		return nil
	}
	return slices.Clone(k.ids)
}

// Has reports whether the keyring holds key id.
func (k *Keyring) Has(id uint32) bool {
	if k == nil {
		return false
	}
	_, ok := k.aeads[id]
	return ok
}

// AddKey returns a new keyring holding every key of k plus a fresh random key
// with the next id, which becomes the primary. k itself is unchanged.
func (k *Keyring) AddKey() (*Keyring, error) {
	if k == nil || len(k.ids) == 0 {
		return Generate()
	}
	if k.primary == math.MaxUint32 {
		return nil, errors.New("secrets: key ids exhausted")
	}
	keys := k.cloneKeys()
	keys[k.primary+1] = randomKey()
	return newKeyring(keys)
}

// RemoveKey returns a new keyring without key id. It refuses to remove the
// primary. Call it only once no ciphertext uses id (see NeedsRotation):
// values under a removed key can never be decrypted again.
func (k *Keyring) RemoveKey(id uint32) (*Keyring, error) {
	if !k.Has(id) {
		return nil, fmt.Errorf("secrets: remove key %d: %w", id, ErrUnknownKey)
	}
	if id == k.primary {
		return nil, fmt.Errorf("secrets: key %d is the primary and cannot be removed", id)
	}
	keys := k.cloneKeys()
	delete(keys, id)
	return newKeyring(keys)
}

func (k *Keyring) cloneKeys() map[uint32][]byte {
	keys := make(map[uint32][]byte, len(k.keys)+1)
	for id, key := range k.keys {
		keys[id] = slices.Clone(key)
	}
	return keys
}

// String shows the key ids and the primary, never key bytes.
func (k Keyring) String() string {
	var b strings.Builder
	b.WriteString("secrets.Keyring{primary: ")
	fmt.Fprint(&b, k.primary)
	b.WriteString(", ids: [")
	for i, id := range k.ids {
		if i > 0 {
			b.WriteByte(' ')
		}
		fmt.Fprint(&b, id)
	}
	b.WriteString("]}")
	return b.String()
}

// GoString makes %#v safe too.
func (k Keyring) GoString() string { return k.String() }

// Format makes every fmt verb print String. Without it, verbs that ignore
// Stringer (such as %d or %x on a struct) would print the key bytes through
// reflection. It has a value receiver so that a dereferenced Keyring is
// covered as well as a *Keyring.
func (k Keyring) Format(f fmt.State, _ rune) { _, _ = f.Write([]byte(k.String())) }

// LogValue makes slog log only the ids.
func (k Keyring) LogValue() slog.Value {
	ids := make([]uint64, len(k.ids))
	for i, id := range k.ids {
		ids[i] = uint64(id)
	}
	return slog.GroupValue(slog.Uint64("primary", uint64(k.primary)), slog.Any("ids", ids))
}
