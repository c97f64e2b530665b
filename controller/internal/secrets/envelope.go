package secrets

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// Version1 is the only envelope version so far; see the package doc for the
// layout.
const Version1 byte = 0x01

const (
	headerSize   = 1 + 4 // version, key id
	nonceSize    = 12    // GCM standard nonce
	tagSize      = 16    // GCM tag
	overheadSize = nonceSize + tagSize
	minEnvelope  = headerSize + overheadSize // empty plaintext
)

var (
	// ErrCorrupt means the envelope is truncated or failed authentication:
	// a changed byte, a wrong key, or a value moved to another row, column or
	// table.
	ErrCorrupt = errors.New("secrets: ciphertext is corrupt or does not belong here")
	// ErrUnknownKey means the envelope names a key id the keyring lacks.
	ErrUnknownKey = errors.New("secrets: unknown key id")
	// ErrUnsupportedVersion means the first byte is not a known envelope
	// version, for example one written by a newer Berth.
	ErrUnsupportedVersion = errors.New("secrets: unsupported envelope version")
	// ErrInvalidAD means the AD is incomplete. An empty field would weaken or
	// remove the binding to the row, so it is refused rather than used.
	ErrInvalidAD = errors.New("secrets: associated data needs a table, a column and a non-zero row id")
	// ErrNoKeys means the Keyring is nil or empty.
	ErrNoKeys = errors.New("secrets: keyring has no keys")
)

// AD names where an encrypted value lives. It is authenticated with the
// value, so a ciphertext only decrypts with the AD it was encrypted under.
type AD struct {
	Table  string   // e.g. "apps"
	Column string   // e.g. "env_vars"
	RowID  [16]byte // the row's id as stored (uuid bytes in ULID order)
}

func (ad AD) validate() error {
	if ad.Table == "" || ad.Column == "" || ad.RowID == [16]byte{} {
		return ErrInvalidAD
	}
	return nil
}

// encode appends the canonical associated data for an envelope whose 5-byte
// header is hdr (see the package doc).
func (ad AD) encode(hdr []byte) []byte {
	b := make([]byte, 0, len(hdr)+4+len(ad.Table)+4+len(ad.Column)+len(ad.RowID))
	b = append(b, hdr...)
	b = binary.BigEndian.AppendUint32(b, uint32(len(ad.Table)))
	b = append(b, ad.Table...)
	b = binary.BigEndian.AppendUint32(b, uint32(len(ad.Column)))
	b = append(b, ad.Column...)
	return append(b, ad.RowID[:]...)
}

// where is for error messages; the row id is not secret but is left out to
// keep messages short and stable.
func (ad AD) where() string { return ad.Table + "." + ad.Column }

// Encrypt seals plaintext under the primary key, bound to ad.
func (k *Keyring) Encrypt(plaintext []byte, ad AD) ([]byte, error) {
	if k == nil || len(k.ids) == 0 {
		return nil, ErrNoKeys
	}
	if err := ad.validate(); err != nil {
		return nil, err
	}
	out := make([]byte, headerSize, headerSize+overheadSize+len(plaintext))
	out[0] = Version1
	binary.BigEndian.PutUint32(out[1:headerSize], k.primary)
	// The AEAD draws the nonce itself and appends nonce||ciphertext||tag.
	return k.aeads[k.primary].Seal(out, nil, plaintext, ad.encode(out[:headerSize])), nil
}

// Decrypt opens an envelope made by Encrypt with the same ad. It returns a
// non-nil slice on success, also for an empty plaintext.
func (k *Keyring) Decrypt(ciphertext []byte, ad AD) ([]byte, error) {
	if k == nil || len(k.ids) == 0 {
		return nil, ErrNoKeys
	}
	if err := ad.validate(); err != nil {
		return nil, err
	}
	id, err := KeyID(ciphertext)
	if err != nil {
		return nil, fmt.Errorf("secrets: decrypt %s: %w", ad.where(), err)
	}
	aead, ok := k.aeads[id]
	if !ok {
		return nil, fmt.Errorf("secrets: decrypt %s: key %d is not in the keyring %v: %w", ad.where(), id, k.ids, ErrUnknownKey)
	}
	body := ciphertext[headerSize:]
	out := make([]byte, 0, len(body)-overheadSize)
	out, err = aead.Open(out, nil, body, ad.encode(ciphertext[:headerSize]))
	if err != nil {
		return nil, fmt.Errorf("secrets: decrypt %s under key %d: %w", ad.where(), id, ErrCorrupt)
	}
	return out, nil
}

// KeyID reads the key id from an envelope's header without decrypting it.
// It fails with ErrUnsupportedVersion or ErrCorrupt (too short) but does not
// check that the keyring holds the key.
func KeyID(ciphertext []byte) (uint32, error) {
	if len(ciphertext) == 0 {
		return 0, fmt.Errorf("empty envelope: %w", ErrCorrupt)
	}
	if ciphertext[0] != Version1 {
		return 0, fmt.Errorf("version byte 0x%02x: %w", ciphertext[0], ErrUnsupportedVersion)
	}
	if len(ciphertext) < minEnvelope {
		return 0, fmt.Errorf("envelope is %d bytes, shorter than the minimum %d: %w", len(ciphertext), minEnvelope, ErrCorrupt)
	}
	id := binary.BigEndian.Uint32(ciphertext[1:headerSize])
	if id == 0 {
		return 0, fmt.Errorf("key id 0: %w", ErrCorrupt)
	}
	return id, nil
}

// KeyID is the package-level KeyID, as a method for convenience.
func (k *Keyring) KeyID(ciphertext []byte) (uint32, error) { return KeyID(ciphertext) }

// NeedsRotation reports whether ciphertext is not under the primary key.
// An envelope that cannot be parsed also needs rotation: the rotation loop
// should then try Reencrypt and report its error rather than skip the value
// silently. (NULL columns have no envelope and should be skipped by the
// caller.)
func (k *Keyring) NeedsRotation(ciphertext []byte) bool {
	id, err := KeyID(ciphertext)
	return err != nil || id != k.PrimaryID()
}

// Reencrypt returns ciphertext re-encrypted under the primary key, and
// whether it changed. A value already under the primary is returned as is
// without being decrypted, which is what makes a rotation pass resumable.
func (k *Keyring) Reencrypt(ciphertext []byte, ad AD) (out []byte, changed bool, err error) {
	if !k.NeedsRotation(ciphertext) {
		return ciphertext, false, nil
	}
	plaintext, err := k.Decrypt(ciphertext, ad)
	if err != nil {
		return nil, false, err
	}
	defer clear(plaintext)
	out, err = k.Encrypt(plaintext, ad)
	if err != nil {
		return nil, false, err
	}
	return out, true, nil
}
