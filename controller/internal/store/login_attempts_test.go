package store_test

import (
	"context"
	"errors"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/berthhq/berth/controller/internal/store"
)

func TestLoginAttempts(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db, st := keyedStore(t)
	u := mkUser(t, st, "ops@example.com")
	ip1, ip2 := netip.MustParseAddr("192.0.2.10"), netip.MustParseAddr("2001:db8::10")
	rec := func(email string, ip *netip.Addr, r store.LoginResult, reason string) store.LoginAttempt {
		t.Helper()
		a, err := st.CreateLoginAttempt(ctx, store.CreateLoginAttemptParams{UserID: &u.ID, Email: email, IPAddress: ip, UserAgent: "curl", Result: r, Reason: reason})
		if err != nil {
			t.Fatal(err)
		}
		return a
	}
	start := time.Now().Add(-time.Second)
	var all []store.ID
	old := rec("ops@example.com", &ip1, store.LoginFailed, "bad_password")
	all = append(all, old.ID)
	for _, e := range []string{"Ops@Example.com", "OPS@example.com", "ops@example.com"} {
		all = append(all, rec(e, &ip1, store.LoginFailed, "bad_password").ID)
	}
	all = append(all, rec("ops@example.com", &ip1, store.LoginThrottled, "throttled").ID)
	all = append(all, rec("ops@example.com", &ip2, store.LoginSucceeded, "").ID)
	last := rec("other@example.com", &ip1, store.LoginFailed, "unknown_email")
	all = append(all, last.ID)
	if last.Stage != store.StagePassword || last.UserAgent != "curl" || *last.UserID != u.ID {
		t.Fatalf("recorded = %+v", last)
	}
	// The first failure falls out of a one-hour window.
	if _, err := db.Pool.Exec(ctx, `UPDATE login_attempts SET created_at = now() - interval '2 hours' WHERE id = $1`, rawID(old.ID)); err != nil {
		t.Fatal(err)
	}

	f, err := st.LoginFailuresByEmail(ctx, "OPS@EXAMPLE.COM", time.Now().Add(-time.Hour))
	if err != nil || f.Count != 3 || f.LastAt == nil || f.LastAt.Before(start) {
		t.Fatalf("by email = %+v, %v", f, err)
	}
	if f, _ := st.LoginFailuresByEmail(ctx, "ops@example.com", time.Now().Add(-3*time.Hour)); f.Count != 4 {
		t.Fatalf("by email over 3h = %d", f.Count)
	}
	if f, err := st.LoginFailuresByIP(ctx, ip1, time.Now().Add(-time.Hour)); err != nil || f.Count != 4 || !f.LastAt.Equal(last.CreatedAt) {
		t.Fatalf("by ip = %+v, %v (last %v)", f, err, last.CreatedAt)
	}
	if f, err := st.LoginFailuresByIP(ctx, ip2, time.Now().Add(-time.Hour)); err != nil || f.Count != 0 || f.LastAt != nil {
		t.Fatalf("ip with only a success = %+v, %v", f, err)
	}

	for name, c := range map[string]struct {
		p    store.CreateLoginAttemptParams
		want error
	}{
		"failed, no reason": {store.CreateLoginAttemptParams{Email: "a@b.c", Result: store.LoginFailed}, store.ErrInvalid},
		"bad result":        {store.CreateLoginAttemptParams{Email: "a@b.c", Result: "maybe", Reason: "x"}, store.ErrInvalid},
		"bad stage":         {store.CreateLoginAttemptParams{Email: "a@b.c", Stage: "otp", Result: store.LoginSucceeded}, store.ErrInvalid},
		"unknown user":      {store.CreateLoginAttemptParams{UserID: refTo(store.NewID()), Email: "a@b.c", Result: store.LoginSucceeded}, store.ErrMissingParent},
	} {
		if _, err := st.CreateLoginAttempt(ctx, c.p); !errors.Is(err, c.want) {
			t.Errorf("%s: %v, want %v", name, err, c.want)
		}
	}
	tf, err := st.CreateLoginAttempt(ctx, store.CreateLoginAttemptParams{Email: "nobody@example.com", Stage: store.StageTwoFactor, Result: store.LoginFailed, Reason: "bad_totp"})
	if err != nil || tf.UserID != nil || tf.IPAddress != nil || tf.Stage != store.StageTwoFactor {
		t.Fatalf("anonymous 2fa attempt = %+v, %v", tf, err)
	}
	all = append(all, tf.ID)

	// Paging over everything, newest first, each once.
	var got []store.ID
	var before *store.ID
	for {
		page, err := st.LoginAttempts(ctx, store.LoginAttemptFilter{Before: before, Limit: 2})
		if err != nil {
			t.Fatal(err)
		}
		for _, a := range page {
			got = append(got, a.ID)
		}
		if len(page) < 2 || len(got) > 20 {
			break
		}
		before = &page[len(page)-1].ID
	}
	slices.Reverse(all)
	if !slices.Equal(got, all) {
		t.Fatalf("paged = %v\nwant    %v", got, all)
	}
	for name, c := range map[string]struct {
		f    store.LoginAttemptFilter
		want int
	}{
		"email any case": {store.LoginAttemptFilter{Email: "OPS@example.COM"}, 6},
		"ip":             {store.LoginAttemptFilter{IP: &ip1}, 6},
		"result":         {store.LoginAttemptFilter{Result: store.LoginFailed}, 6},
		"user":           {store.LoginAttemptFilter{UserID: &u.ID}, 7},
		"since":          {store.LoginAttemptFilter{Since: refTo(time.Now().Add(-time.Hour)), Result: store.LoginFailed, IP: &ip1}, 4},
	} {
		list, err := st.LoginAttempts(ctx, c.f)
		if err != nil || len(list) != c.want {
			t.Errorf("%s: %d rows, %v; want %d", name, len(list), err, c.want)
		}
	}

	// The trail outlives the account.
	if err := st.DeleteUser(ctx, u.ID); err != nil {
		t.Fatal(err)
	}
	list, err := st.LoginAttempts(ctx, store.LoginAttemptFilter{Email: "ops@example.com"})
	if err != nil || len(list) != 6 || list[0].UserID != nil {
		t.Fatalf("after user delete: %d, %v", len(list), err)
	}
}
