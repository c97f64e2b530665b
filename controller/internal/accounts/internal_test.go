package accounts

import (
	"errors"
	"testing"
	"time"

	"github.com/pquerna/otp/totp"

	"github.com/berthhq/berth/controller/internal/password"
	"github.com/berthhq/berth/controller/internal/store"
)

func TestThrottleDelays(t *testing.T) {
	c := Config{}
	c.setDefaults()
	th := c.Throttle
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	at := func(n int64) store.LoginFailures { return store.LoginFailures{Count: n, LastAt: &now} }
	for _, tc := range []struct {
		failures int64
		want     time.Duration
	}{{0, 0}, {4, 0}, {5, time.Second}, {6, 2 * time.Second}, {9, 16 * time.Second}, {14, 512 * time.Second}, {15, 15 * time.Minute}, {500, 15 * time.Minute}} {
		if got := th.wait(at(tc.failures), 5, now); got != tc.want {
			t.Errorf("%d failures: wait %v, want %v", tc.failures, got, tc.want)
		}
	}
	if got := th.wait(at(6), 5, now.Add(3*time.Second)); got != 0 {
		t.Errorf("after the delay: wait %v", got)
	}
}

func TestDummyHashCostsAVerify(t *testing.T) {
	s := &Service{}
	var err error
	if s.dummyHash, err = password.Hash(randomToken()); err != nil {
		t.Fatal(err)
	}
	// A parse failure would return at once and make unknown emails fast.
	if err := password.Verify(s.dummyHash, "whatever-password"); !errors.Is(err, password.ErrMismatch) {
		t.Fatalf("dummy hash verify = %v, want a mismatch", err)
	}
}

func TestMatchTOTPSkew(t *testing.T) {
	secret := "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"
	now := time.Unix(1_800_000_015, 0)
	for off, ok := range map[int]bool{-2: false, -1: true, 0: true, 1: true, 2: false} {
		code, _ := totp.GenerateCode(secret, now.Add(time.Duration(off)*30*time.Second))
		step, got := matchTOTP(secret, code, now)
		if got != ok {
			t.Errorf("offset %d: match %v, want %v", off, got, ok)
		}
		if ok && step != now.Unix()/30+int64(off) {
			t.Errorf("offset %d: step %d", off, step)
		}
	}
	if _, ok := matchTOTP(secret, "abcdef", now); ok {
		t.Error("letters matched")
	}
}

func TestRecoveryCodeNormalisation(t *testing.T) {
	codes, hashes := newRecoveryCodes()
	if len(codes) != RecoveryCodeCount || len(hashes) != RecoveryCodeCount {
		t.Fatal("wrong count")
	}
	if hashRecoveryCode(codes[0]) != hashes[0] || hashRecoveryCode(" "+codes[0][:5]+" "+codes[0][6:]) != hashes[0] {
		t.Error("normalisation differs")
	}
}

func TestNewNeedsPublicURL(t *testing.T) {
	for _, u := range []string{"", "berth.example.com", "ftp://x", "https://"} {
		if _, err := New(nil, nil, Config{PublicURL: u}); err == nil {
			t.Errorf("PublicURL %q accepted", u)
		}
	}
}
