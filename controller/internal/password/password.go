// Package password hashes and checks passwords with argon2id (RFC 9106),
// stored as PHC strings so parameters can be raised later without breaking
// existing hashes: Verify reads the parameters from the hash itself and
// NeedsRehash says when a login should re-hash with the current ones.
package password

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"

	"golang.org/x/crypto/argon2"
)

// Current parameters: OWASP's argon2id minimum (19 MiB, t=2, p=1).
const (
	memoryKiB = 19 * 1024
	timeCost  = 2
	threads   = 1
	saltLen   = 16
	keyLen    = 32
)

// MinLength and MaxLength bound what a person may choose. The upper bound
// keeps a megabyte "password" from becoming a denial of service.
const (
	MinLength = 12
	MaxLength = 1024
)

// ErrMismatch means the password is wrong.
var ErrMismatch = errors.New("password does not match")

// Validate checks a new password against the policy.
func Validate(pw string) error {
	n := utf8.RuneCountInString(pw)
	switch {
	case !utf8.ValidString(pw):
		return errors.New("password is not valid UTF-8")
	case n < MinLength:
		return fmt.Errorf("password must be at least %d characters", MinLength)
	case len(pw) > MaxLength:
		return fmt.Errorf("password must be at most %d bytes", MaxLength)
	case isCommon(pw):
		return errors.New("password is too common: choose another")
	}
	return nil
}

// Hash returns the PHC string for pw.
func Hash(pw string) (string, error) {
	salt := make([]byte, saltLen)
	if _, err := rand.Read(salt); err != nil {
		return "", err
	}
	key := argon2.IDKey([]byte(pw), salt, timeCost, memoryKiB, threads, keyLen)
	b64 := base64.RawStdEncoding
	return fmt.Sprintf("$argon2id$v=%d$m=%d,t=%d,p=%d$%s$%s", argon2.Version, memoryKiB, timeCost, threads, b64.EncodeToString(salt), b64.EncodeToString(key)), nil
}

type params struct {
	m, t uint32
	p    uint8
	salt []byte
	key  []byte
}

func parse(hash string) (params, error) {
	var pr params
	parts := strings.Split(hash, "$")
	if len(parts) != 6 || parts[1] != "argon2id" {
		return pr, errors.New("not an argon2id hash")
	}
	var v int
	if _, err := fmt.Sscanf(parts[2], "v=%d", &v); err != nil || v != argon2.Version {
		return pr, errors.New("unsupported argon2 version")
	}
	if _, err := fmt.Sscanf(parts[3], "m=%d,t=%d,p=%d", &pr.m, &pr.t, &pr.p); err != nil {
		return pr, errors.New("bad argon2 parameters")
	}
	// Refuse absurd parameters from a tampered row instead of allocating them.
	if pr.m < 8*1024 || pr.m > 1<<21 || pr.t < 1 || pr.t > 20 || pr.p < 1 || pr.p > 16 {
		return pr, errors.New("argon2 parameters out of range")
	}
	var err error
	if pr.salt, err = base64.RawStdEncoding.DecodeString(parts[4]); err != nil || len(pr.salt) < 8 {
		return pr, errors.New("bad salt")
	}
	if pr.key, err = base64.RawStdEncoding.DecodeString(parts[5]); err != nil || len(pr.key) < 16 || len(pr.key) > 64 {
		return pr, errors.New("bad key")
	}
	return pr, nil
}

// Verify checks pw against hash in constant time.
func Verify(hash, pw string) error {
	pr, err := parse(hash)
	if err != nil {
		return err
	}
	if len(pw) > MaxLength {
		return ErrMismatch
	}
	got := argon2.IDKey([]byte(pw), pr.salt, pr.t, pr.m, pr.p, uint32(len(pr.key)))
	if subtle.ConstantTimeCompare(got, pr.key) != 1 {
		return ErrMismatch
	}
	return nil
}

// NeedsRehash reports whether hash uses weaker parameters than today's.
func NeedsRehash(hash string) bool {
	pr, err := parse(hash)
	return err != nil || pr.m < memoryKiB || pr.t < timeCost || len(pr.key) < keyLen
}
