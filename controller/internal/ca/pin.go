package ca

import (
	"crypto/sha256"
	"crypto/subtle"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
)

// PinPrefix starts every pin.
const PinPrefix = "sha256:"

var (
	// ErrMalformedPin means a pin is not "sha256:" followed by 64 hex digits.
	ErrMalformedPin = errors.New(`ca: malformed pin: want "sha256:" followed by 64 hex digits`)
	// ErrPinMismatch means a certificate's public key does not match the pin.
	ErrPinMismatch = errors.New("ca: certificate public key does not match the pin")
)

// PinOf is cert's pin: "sha256:" and the lowercase hex SHA-256 of its
// SubjectPublicKeyInfo DER.
func PinOf(cert *x509.Certificate) string {
	sum := sha256.Sum256(cert.RawSubjectPublicKeyInfo)
	return PinPrefix + hex.EncodeToString(sum[:])
}

// ParsePin checks pin's form and returns its 32-byte digest. Hex digits may
// be upper or lower case; nothing else (spaces, other prefixes, other
// lengths) is accepted.
func ParsePin(pin string) ([]byte, error) {
	h, ok := strings.CutPrefix(pin, PinPrefix)
	if !ok || len(h) != 2*sha256.Size {
		return nil, ErrMalformedPin
	}
	sum, err := hex.DecodeString(h)
	if err != nil {
		return nil, ErrMalformedPin
	}
	return sum, nil
}

// CheckPin reports whether cert's public key matches pin, comparing in
// constant time. It returns ErrMalformedPin or ErrPinMismatch (wrapped).
func CheckPin(cert *x509.Certificate, pin string) error {
	want, err := ParsePin(pin)
	if err != nil {
		return err
	}
	if cert == nil {
		return fmt.Errorf("%w: no certificate", ErrPinMismatch)
	}
	got := sha256.Sum256(cert.RawSubjectPublicKeyInfo)
	if subtle.ConstantTimeCompare(got[:], want) != 1 {
		return fmt.Errorf("%w: got %s", ErrPinMismatch, PinOf(cert))
	}
	return nil
}
