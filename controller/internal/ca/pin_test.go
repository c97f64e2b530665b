package ca

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"regexp"
	"strings"
	"testing"
)

func TestPin(t *testing.T) {
	t.Parallel()
	c := newTestCA(t, Options{})
	other := newTestCA(t, Options{})

	sum := sha256.Sum256(c.Cert().RawSubjectPublicKeyInfo)
	want := "sha256:" + hex.EncodeToString(sum[:])
	if c.Pin() != want || PinOf(c.Cert()) != want {
		t.Fatalf("Pin = %s, want %s", c.Pin(), want)
	}
	if !regexp.MustCompile(`^sha256:[0-9a-f]{64}$`).MatchString(c.Pin()) {
		t.Fatalf("pin form: %s", c.Pin())
	}
	if c.Pin() == other.Pin() {
		t.Fatal("two CAs share a pin")
	}

	if err := CheckPin(c.Cert(), c.Pin()); err != nil {
		t.Fatalf("right pin: %v", err)
	}
	if err := CheckPin(c.Cert(), "sha256:"+strings.ToUpper(hex.EncodeToString(sum[:]))); err != nil {
		t.Fatalf("upper-case hex: %v", err)
	}
	if err := CheckPin(c.Cert(), other.Pin()); !errors.Is(err, ErrPinMismatch) {
		t.Fatalf("wrong pin: %v", err)
	}
	if err := CheckPin(nil, c.Pin()); !errors.Is(err, ErrPinMismatch) {
		t.Fatalf("nil certificate: %v", err)
	}

	hx := hex.EncodeToString(sum[:])
	for _, pin := range []string{
		"",
		"sha256:",
		hx,
		"sha256:" + hx[:63],
		"sha256:" + hx + "0",
		"sha256:" + hx[:62],
		"sha256:" + hx[:63] + "g",
		"SHA256:" + hx,
		"sha1:" + hx,
		"sha256: " + hx[:63],
		" sha256:" + hx,
		"sha256:" + hx + "\n",
		"sha256:" + hx[:32] + "-" + hx[33:],
	} {
		if err := CheckPin(c.Cert(), pin); !errors.Is(err, ErrMalformedPin) {
			t.Errorf("CheckPin(%q) = %v, want ErrMalformedPin", pin, err)
		}
	}
}
