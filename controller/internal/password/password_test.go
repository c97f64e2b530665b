package password

import (
	"errors"
	"strings"
	"testing"
)

func TestHashVerify(t *testing.T) {
	t.Parallel()
	h, err := Hash("correct horse battery")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(h, "$argon2id$v=19$m=19456,t=2,p=1$") {
		t.Fatalf("hash %q does not carry the expected parameters", h)
	}
	if err := Verify(h, "correct horse battery"); err != nil {
		t.Fatalf("verify: %v", err)
	}
	if err := Verify(h, "correct horse batterY"); !errors.Is(err, ErrMismatch) {
		t.Fatalf("wrong password: %v", err)
	}
	h2, _ := Hash("correct horse battery")
	if h == h2 {
		t.Fatal("two hashes of one password are equal: salt not random")
	}
	if NeedsRehash(h) {
		t.Fatal("fresh hash needs rehash")
	}
	weak := strings.Replace(h, "m=19456,t=2", "m=8192,t=1", 1)
	if !NeedsRehash(weak) {
		t.Fatal("weak parameters not flagged")
	}
	for _, bad := range []string{"", "$argon2i$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$a2V5a2V5a2V5a2V5a2V5", "$argon2id$v=19$m=99999999,t=2,p=1$c2FsdHNhbHQ$a2V5a2V5a2V5a2V5a2V5", "plain"} {
		if err := Verify(bad, "x"); err == nil || errors.Is(err, ErrMismatch) {
			t.Fatalf("malformed hash %q: %v", bad, err)
		}
	}
}

func TestValidate(t *testing.T) {
	t.Parallel()
	for pw, ok := range map[string]bool{
		"short":                      false,
		"elevenchars":                false,
		"twelve chars":               true,
		"Password1234":               false, // common, case-insensitively
		"QWERTYUIOP123":              false,
		strings.Repeat("x", 2000):    false,
		"a-long-unusual-passphrase!": true,
		"\xff\xfe invalid utf8 here": false,
	} {
		if err := Validate(pw); (err == nil) != ok {
			t.Errorf("Validate(%.20q) = %v, want ok=%v", pw, err, ok)
		}
	}
}
