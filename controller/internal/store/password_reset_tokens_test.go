package store_test

import (
	"context"
	"errors"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/berthhq/berth/controller/internal/store"
)

func TestPasswordResetTokens(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db, st := keyedStore(t)
	u := mkUser(t, st, "Ops@example.com")
	ip := netip.MustParseAddr("192.0.2.1")
	exp := time.Now().Add(time.Hour)
	create := func(h byte, purpose store.ResetPurpose) store.PasswordResetToken {
		t.Helper()
		tok, err := st.CreatePasswordResetToken(ctx, store.CreatePasswordResetTokenParams{UserID: u.ID, Email: "ops@example.com", Purpose: purpose, TokenHash: hash32(h), RequestedIP: &ip, ExpiresAt: exp})
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}

	t1 := create(1, "")
	if t1.Purpose != store.PurposeReset || t1.UserID != u.ID || t1.UsedAt != nil || *t1.RequestedIP != ip {
		t.Fatalf("created = %+v", t1)
	}
	// A second reset link replaces the first; an invite link lives beside it.
	t2 := create(2, store.PurposeReset)
	inv := create(3, store.PurposeInvite)
	if t2.ID == t1.ID {
		t.Fatal("the replacing link kept the old id")
	}
	if p, err := st.PendingPasswordResetToken(ctx, u.ID, store.PurposeReset); err != nil || p.ID != t2.ID {
		t.Fatalf("pending = %+v, %v", p, err)
	}
	if _, err := st.ConsumePasswordResetToken(ctx, hash32(1), store.PurposeReset); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("replaced link still works: %v", err)
	}
	// Purpose must match.
	if _, err := st.ConsumePasswordResetToken(ctx, hash32(3), store.PurposeReset); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("invite used as reset: %v", err)
	}
	used, err := st.ConsumePasswordResetToken(ctx, hash32(2), store.PurposeReset)
	if err != nil || used.ID != t2.ID || used.UsedAt == nil {
		t.Fatalf("consume = %+v, %v", used, err)
	}
	if _, err := st.ConsumePasswordResetToken(ctx, hash32(2), store.PurposeReset); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("consumed twice: %v", err)
	}
	if _, err := st.PendingPasswordResetToken(ctx, u.ID, store.PurposeReset); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("pending after use: %v", err)
	}
	// Once used, a new link of the same purpose can be issued.
	create(4, store.PurposeReset)

	// Expired: refused.
	if _, err := db.Pool.Exec(ctx, `UPDATE password_reset_tokens SET created_at = now() - interval '2 hours', expires_at = now() - interval '1 hour' WHERE id = $1`, rawID(inv.ID)); err != nil {
		t.Fatal(err)
	}
	if _, err := st.ConsumePasswordResetToken(ctx, hash32(3), store.PurposeInvite); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("expired link: %v", err)
	}
	// Email changed since the link was sent: refused.
	if _, err := st.UpdateUserProfile(ctx, u.ID, store.UserProfile{Email: refTo("new@example.com")}); err != nil {
		t.Fatal(err)
	}
	if _, err := st.ConsumePasswordResetToken(ctx, hash32(4), store.PurposeReset); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("link for an old address: %v", err)
	}

	for name, c := range map[string]struct {
		p    store.CreatePasswordResetTokenParams
		want error
	}{
		"no user":     {store.CreatePasswordResetTokenParams{UserID: store.NewID(), Email: "x@example.com", TokenHash: hash32(20), ExpiresAt: exp}, store.ErrMissingParent},
		"short hash":  {store.CreatePasswordResetTokenParams{UserID: u.ID, Email: "x@example.com", TokenHash: []byte{1}, ExpiresAt: exp}, store.ErrInvalid},
		"bad purpose": {store.CreatePasswordResetTokenParams{UserID: u.ID, Email: "x@example.com", Purpose: "login", TokenHash: hash32(21), ExpiresAt: exp}, store.ErrInvalid},
		"born dead":   {store.CreatePasswordResetTokenParams{UserID: u.ID, Email: "x@example.com", TokenHash: hash32(22), ExpiresAt: time.Now().Add(-time.Second)}, store.ErrInvalid},
		"same hash":   {store.CreatePasswordResetTokenParams{UserID: u.ID, Email: "x@example.com", Purpose: store.PurposeInvite, TokenHash: hash32(2), ExpiresAt: exp}, store.ErrConflict},
	} {
		if _, err := st.CreatePasswordResetToken(ctx, c.p); !errors.Is(err, c.want) {
			t.Errorf("%s: %v, want %v", name, err, c.want)
		}
	}

	// Redeemed concurrently, a link works once.
	v := mkUser(t, st, "v@example.com")
	if _, err := st.CreatePasswordResetToken(ctx, store.CreatePasswordResetTokenParams{UserID: v.ID, Email: "V@example.com", TokenHash: hash32(30), ExpiresAt: exp}); err != nil {
		t.Fatal(err)
	}
	// A disabled user cannot redeem; enabled again, the same link works.
	if _, err := st.SetUserStatus(ctx, v.ID, store.UserDisabled); err != nil {
		t.Fatal(err)
	}
	if _, err := st.ConsumePasswordResetToken(ctx, hash32(30), store.PurposeReset); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("disabled user redeemed a link: %v", err)
	}
	if _, err := st.SetUserStatus(ctx, v.ID, store.UserActive); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	wins := 0
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := st.ConsumePasswordResetToken(ctx, hash32(30), store.PurposeReset)
			if err == nil {
				mu.Lock()
				wins++
				mu.Unlock()
			} else if !errors.Is(err, store.ErrNotFound) {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if wins != 1 {
		t.Fatalf("link redeemed %d times", wins)
	}

	// Voiding and sweeping.
	if _, err := st.CreatePasswordResetToken(ctx, store.CreatePasswordResetTokenParams{UserID: v.ID, Email: "v@example.com", Purpose: store.PurposeInvite, TokenHash: hash32(31), ExpiresAt: exp}); err != nil {
		t.Fatal(err)
	}
	if n, err := st.DeleteUserPasswordResetTokens(ctx, v.ID); err != nil || n != 1 {
		t.Fatalf("void = %d, %v", n, err)
	}
	// Left: u's used t2, u's expired invite, u's live (but stale-email) reset, v's used one.
	if n, err := st.DeleteExpiredPasswordResetTokens(ctx, time.Now().Add(time.Minute)); err != nil || n != 3 {
		t.Fatalf("sweep = %d, %v", n, err)
	}
	if _, err := st.PendingPasswordResetToken(ctx, u.ID, store.PurposeReset); err != nil {
		t.Fatalf("the sweep took a live link: %v", err)
	}
}
