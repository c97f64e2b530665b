package domains

import (
	"context"
	"errors"
	"testing"
	"time"
)

// Renew brings an attempt forward, but never sooner than the retry base
// after the last one: a script (or an impatient person) calling renew in a
// loop would otherwise run an ACME order per call and spend the CA's rate
// limits (failed validations per host, orders per account) that every
// domain of the install shares.
func TestRenewIsSpaced(t *testing.T) {
	t.Parallel()
	e := setup(t)
	ctx := context.Background()
	d := e.addCert(t, "spam.example.com", e.now.Add(-24*time.Hour), e.now.Add(60*24*time.Hour))
	e.s.failed(ctx, d, errors.New("acme: urn:ietf:params:acme:error:connection: refused"))
	got, err := e.s.Renew(ctx, e.pr, Peer{}, "spam.example.com")
	if err != nil {
		t.Fatal(err)
	}
	if want := e.now.Add(e.s.cfg.RetryBase); got.TLSNextAttemptAt == nil || !got.TLSNextAttemptAt.Equal(want) {
		t.Fatalf("renew right after an attempt: next %v, want %v", got.TLSNextAttemptAt, want)
	}
	// Once the retry base has passed, renew means now.
	e.now = e.now.Add(e.s.cfg.RetryBase + time.Second)
	if got, err = e.s.Renew(ctx, e.pr, Peer{}, "spam.example.com"); err != nil || got.TLSNextAttemptAt == nil || !got.TLSNextAttemptAt.Equal(e.now) {
		t.Fatalf("renew later: next %v, %v; want now", got.TLSNextAttemptAt, err)
	}
}
