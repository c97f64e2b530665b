package store_test

import (
	"bytes"
	"context"
	"errors"
	"net/netip"
	"slices"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5/pgtype"

	"github.com/berthhq/berth/controller/internal/secrets"
	"github.com/berthhq/berth/controller/internal/store"
	"github.com/berthhq/berth/controller/internal/testdb"
)

// keyedStore is a fresh database and a store that can seal and open
// encrypted columns.
func keyedStore(t *testing.T) (*testdb.DB, *store.Store) {
	t.Helper()
	kr, err := secrets.Generate()
	if err != nil {
		t.Fatal(err)
	}
	db := testdb.New(t)
	return db, store.New(db.Pool, secrets.NewSource(kr, ""))
}

func mkUser(t *testing.T, st *store.Store, email string) store.User {
	t.Helper()
	u, err := st.CreateUser(context.Background(), store.CreateUserParams{Email: email, PasswordHash: "$argon2id$x", Role: store.RoleAdmin})
	if err != nil {
		t.Fatalf("create user %s: %v", email, err)
	}
	return u
}

func rawID(id store.ID) pgtype.UUID { return pgtype.UUID{Bytes: id, Valid: true} }

func refTo[T any](v T) *T { return &v }

func TestUsers(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	_, st := keyedStore(t)

	u, err := st.CreateUser(ctx, store.CreateUserParams{Email: "Ops@Example.com", Name: "Ops", PasswordHash: "$argon2id$h1", Role: store.RoleAdmin})
	if err != nil {
		t.Fatal(err)
	}
	if u.Status != store.UserActive || !u.HasPassword || u.PasswordChangedAt == nil || u.DisabledAt != nil || u.Role != store.RoleAdmin || u.TwoFactorEnabled {
		t.Fatalf("created = %+v", u)
	}
	inv, err := st.CreateUser(ctx, store.CreateUserParams{Email: "new@example.com", Role: store.RoleViewer})
	if err != nil || inv.Status != store.UserInvited || inv.HasPassword {
		t.Fatalf("invited = %+v, %v", inv, err)
	}

	// Lookups: by id, and by email in any case.
	if got, err := st.User(ctx, u.ID); err != nil || got.Email != "Ops@Example.com" || got.Name != "Ops" {
		t.Fatalf("get = %+v, %v", got, err)
	}
	if got, err := st.UserByEmail(ctx, "ops@EXAMPLE.com"); err != nil || got.ID != u.ID {
		t.Fatalf("by email = %+v, %v", got, err)
	}
	if _, err := st.UserByEmail(ctx, "nobody@example.com"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("unknown email: %v", err)
	}
	if _, err := st.User(ctx, store.NewID()); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("unknown id: %v", err)
	}

	// Constraints.
	for name, p := range map[string]store.CreateUserParams{
		"other case":       {Email: "OPS@example.com", PasswordHash: "x", Role: store.RoleAdmin},
		"bad email":        {Email: "nope", PasswordHash: "x", Role: store.RoleAdmin},
		"bad role":         {Email: "r@example.com", PasswordHash: "x", Role: "root"},
		"no role":          {Email: "r@example.com", PasswordHash: "x"},
		"active, no pass":  {Email: "p@example.com", Role: store.RoleAdmin, Status: store.UserActive},
		"untrimmed email":  {Email: " t@example.com", PasswordHash: "x", Role: store.RoleAdmin},
		"bad status":       {Email: "s@example.com", PasswordHash: "x", Role: store.RoleAdmin, Status: "gone"},
		"created disabled": {Email: "d@example.com", PasswordHash: "x", Role: store.RoleAdmin, Status: store.UserDisabled},
	} {
		_, err := st.CreateUser(ctx, p)
		want := store.ErrInvalid
		switch name {
		case "other case":
			want = store.ErrConflict
		case "created disabled":
			want = nil
		}
		if want == nil && err != nil || want != nil && !errors.Is(err, want) {
			t.Errorf("%s: err = %v, want %v", name, err, want)
		}
	}
	if d, err := st.UserByEmail(ctx, "d@example.com"); err != nil || d.Status != store.UserDisabled || d.DisabledAt == nil {
		t.Fatalf("created disabled = %+v, %v", d, err)
	}

	// Profile, role, status.
	if got, err := st.UpdateUserProfile(ctx, u.ID, store.UserProfile{Name: refTo("Operations")}); err != nil || got.Name != "Operations" || got.Email != "Ops@Example.com" {
		t.Fatalf("rename = %+v, %v", got, err)
	}
	if _, err := st.UpdateUserProfile(ctx, u.ID, store.UserProfile{Email: refTo("NEW@example.com")}); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("email taken: %v", err)
	}
	if _, err := st.UpdateUserProfile(ctx, store.NewID(), store.UserProfile{Name: refTo("x")}); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("update unknown: %v", err)
	}
	if got, err := st.SetUserRole(ctx, u.ID, store.RoleOperator); err != nil || got.Role != store.RoleOperator {
		t.Fatalf("set role = %+v, %v", got, err)
	}
	if _, err := st.SetUserRole(ctx, u.ID, "god"); !errors.Is(err, store.ErrInvalid) {
		t.Fatalf("bad role: %v", err)
	}
	dis, err := st.SetUserStatus(ctx, u.ID, store.UserDisabled)
	if err != nil || dis.Status != store.UserDisabled || dis.DisabledAt == nil {
		t.Fatalf("disable = %+v, %v", dis, err)
	}
	if again, _ := st.SetUserStatus(ctx, u.ID, store.UserDisabled); again.DisabledAt == nil || !again.DisabledAt.Equal(*dis.DisabledAt) {
		t.Fatalf("disabling twice moved disabled_at: %v -> %v", dis.DisabledAt, again.DisabledAt)
	}
	if en, err := st.SetUserStatus(ctx, u.ID, store.UserActive); err != nil || en.DisabledAt != nil || en.Status != store.UserActive {
		t.Fatalf("enable = %+v, %v", en, err)
	}
	if _, err := st.SetUserStatus(ctx, inv.ID, store.UserActive); !errors.Is(err, store.ErrInvalid) {
		t.Fatalf("activating a user without a password: %v", err)
	}

	// Passwords and invites.
	if h, err := st.UserPasswordHash(ctx, inv.ID); err != nil || h != "" {
		t.Fatalf("invited hash = %q, %v", h, err)
	}
	acc, err := st.AcceptUserInvite(ctx, inv.ID, "$argon2id$h2")
	if err != nil || acc.Status != store.UserActive || !acc.HasPassword || acc.PasswordChangedAt == nil {
		t.Fatalf("accept = %+v, %v", acc, err)
	}
	if _, err := st.AcceptUserInvite(ctx, inv.ID, "$argon2id$h3"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("accepting twice: %v", err)
	}
	if _, err := st.SetUserPassword(ctx, u.ID, "$argon2id$h4"); err != nil {
		t.Fatal(err)
	}
	if h, err := st.UserPasswordHash(ctx, u.ID); err != nil || h != "$argon2id$h4" {
		t.Fatalf("hash = %q, %v", h, err)
	}
	if _, err := st.SetUserPassword(ctx, u.ID, ""); !errors.Is(err, store.ErrInvalid) {
		t.Fatalf("empty hash: %v", err)
	}
	ip := netip.MustParseAddr("203.0.113.7")
	if err := st.RecordUserLogin(ctx, u.ID, &ip); err != nil {
		t.Fatal(err)
	}
	if got, _ := st.User(ctx, u.ID); got.LastLoginAt == nil || got.LastLoginIP == nil || *got.LastLoginIP != ip {
		t.Fatalf("last login = %v %v", got.LastLoginAt, got.LastLoginIP)
	}

	// Delete.
	if err := st.DeleteUser(ctx, acc.ID); err != nil {
		t.Fatal(err)
	}
	if err := st.DeleteUser(ctx, acc.ID); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("delete twice: %v", err)
	}
}

func TestUsersListAndCount(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	_, st := keyedStore(t)
	var created []store.ID // oldest first
	for i := range 7 {
		p := store.CreateUserParams{Email: string(rune('a'+i)) + "@example.com", Role: store.RoleViewer}
		if i%2 == 0 {
			p.PasswordHash, p.Role = "$argon2id$x", store.RoleAdmin
		}
		u, err := st.CreateUser(ctx, p)
		if err != nil {
			t.Fatal(err)
		}
		created = append(created, u.ID)
	}
	// Pages of 3: every user exactly once, newest first.
	var got []store.ID
	var before *store.ID
	for pages := 0; ; pages++ {
		page, err := st.Users(ctx, store.UserFilter{Before: before, Limit: 3})
		if err != nil {
			t.Fatal(err)
		}
		if pages > 5 || len(page) > 3 {
			t.Fatalf("paging does not end: page %d has %d rows", pages, len(page))
		}
		for _, u := range page {
			got = append(got, u.ID)
		}
		if len(page) < 3 {
			break
		}
		before = &page[len(page)-1].ID
	}
	want := slices.Clone(created)
	slices.Reverse(want)
	if !slices.Equal(got, want) {
		t.Fatalf("paged ids = %v, want %v", got, want)
	}

	active, err := st.Users(ctx, store.UserFilter{Status: store.UserActive})
	if err != nil || len(active) != 4 {
		t.Fatalf("active = %d, %v", len(active), err)
	}
	for _, u := range active {
		if u.Status != store.UserActive || u.Role != store.RoleAdmin {
			t.Fatalf("status filter let through %+v", u)
		}
	}
	viewers, err := st.Users(ctx, store.UserFilter{Role: store.RoleViewer, Status: store.UserInvited})
	if err != nil || len(viewers) != 3 {
		t.Fatalf("invited viewers = %d, %v", len(viewers), err)
	}
	for _, c := range []struct {
		status store.UserStatus
		role   store.UserRole
		want   int64
	}{{"", "", 7}, {store.UserActive, "", 4}, {store.UserInvited, store.RoleViewer, 3}, {store.UserDisabled, "", 0}, {"", store.RoleOperator, 0}} {
		if n, err := st.CountUsers(ctx, c.status, c.role); err != nil || n != c.want {
			t.Errorf("count(%q, %q) = %d, %v; want %d", c.status, c.role, n, err, c.want)
		}
	}
}

func TestUserTwoFactor(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db, st := keyedStore(t)
	u := mkUser(t, st, "a@example.com")
	other := mkUser(t, st, "b@example.com")
	secret := []byte("JBSWY3DPEHPK3PXP-totp-secret")

	if _, err := st.UserTwoFactorSecret(ctx, u.ID); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("no secret yet: %v", err)
	}
	if err := st.SetUserTwoFactor(ctx, u.ID, secret); err != nil {
		t.Fatal(err)
	}
	if err := st.SetUserTwoFactor(ctx, store.NewID(), secret); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("unknown user: %v", err)
	}
	if err := store.New(db.Pool, nil).SetUserTwoFactor(ctx, u.ID, secret); err == nil {
		t.Fatal("a store without keys sealed a secret")
	}
	got, err := st.UserTwoFactorSecret(ctx, u.ID)
	if err != nil || !bytes.Equal(got, secret) {
		t.Fatalf("secret = %q, %v", got, err)
	}
	if u2, _ := st.User(ctx, u.ID); !u2.TwoFactorPending || u2.TwoFactorEnabled {
		t.Fatalf("before confirm: pending %v enabled %v", u2.TwoFactorPending, u2.TwoFactorEnabled)
	}

	// At rest it is an envelope, not the secret.
	var raw []byte
	if err := db.Pool.QueryRow(ctx, `SELECT two_factor_secret FROM users WHERE id = $1`, rawID(u.ID)).Scan(&raw); err != nil {
		t.Fatal(err)
	}
	if len(raw) <= len(secret) || bytes.Contains(raw, secret) || bytes.Contains(raw, secret[:8]) {
		t.Fatalf("stored value reveals the secret: %x", raw)
	}
	// Moved to another row, or to another column, it does not open.
	if _, err := db.Pool.Exec(ctx, `UPDATE users SET two_factor_secret = $1 WHERE id = $2`, raw, rawID(other.ID)); err != nil {
		t.Fatal(err)
	}
	if _, err := st.UserTwoFactorSecret(ctx, other.ID); !errors.Is(err, secrets.ErrCorrupt) {
		t.Fatalf("moved ciphertext opened: %v", err)
	}
	if _, err := db.Pool.Exec(ctx, `UPDATE users SET recovery_codes = $1 WHERE id = $2`, raw, rawID(u.ID)); err != nil {
		t.Fatal(err)
	}
	if _, err := st.UserRecoveryCodes(ctx, u.ID); !errors.Is(err, secrets.ErrCorrupt) {
		t.Fatalf("ciphertext moved across columns opened: %v", err)
	}

	// Confirm, then each step is accepted once.
	if _, err := st.UseUserTOTPStep(ctx, other.ID, 1); err != nil {
		t.Fatal(err)
	}
	cu, err := st.ConfirmUserTwoFactor(ctx, u.ID, 100)
	if err != nil || !cu.TwoFactorEnabled || cu.TwoFactorPending || cu.TwoFactorLastUsedStep == nil || *cu.TwoFactorLastUsedStep != 100 {
		t.Fatalf("confirm = %+v, %v", cu, err)
	}
	if _, err := st.ConfirmUserTwoFactor(ctx, u.ID, 101); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("confirming twice: %v", err)
	}
	for _, c := range []struct {
		step int64
		ok   bool
	}{{100, false}, {99, false}, {101, true}, {101, false}, {103, true}, {102, false}} {
		if ok, err := st.UseUserTOTPStep(ctx, u.ID, c.step); err != nil || ok != c.ok {
			t.Errorf("use step %d = %v, %v; want %v", c.step, ok, err, c.ok)
		}
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	accepted := 0
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ok, err := st.UseUserTOTPStep(ctx, u.ID, 200)
			if err != nil {
				t.Error(err)
			}
			if ok {
				mu.Lock()
				accepted++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if accepted != 1 {
		t.Fatalf("one code accepted %d times concurrently", accepted)
	}

	// Disabling removes secret and codes.
	if err := st.SetUserRecoveryCodes(ctx, u.ID, []string{"code-one-1111"}); err != nil {
		t.Fatal(err)
	}
	off, err := st.DisableUserTwoFactor(ctx, u.ID)
	if err != nil || off.TwoFactorEnabled || off.TwoFactorPending || off.HasRecoveryCodes || off.TwoFactorLastUsedStep != nil {
		t.Fatalf("disable = %+v, %v", off, err)
	}
	if _, err := st.UserTwoFactorSecret(ctx, u.ID); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("secret after disable: %v", err)
	}
	if _, err := st.UseUserTOTPStep(ctx, u.ID, 500); err != nil {
		t.Fatal(err)
	}
	if ok, _ := st.UseUserTOTPStep(ctx, u.ID, 501); ok {
		t.Fatal("a TOTP step was accepted for a user without 2FA")
	}
}

func TestUserRecoveryCodes(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db, st := keyedStore(t)
	u := mkUser(t, st, "a@example.com")
	other := mkUser(t, st, "b@example.com")
	codes := []string{"alpha-1111-2222", "bravo-3333-4444", "charlie-5555-6666"}

	if _, err := st.UserRecoveryCodes(ctx, u.ID); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("no codes yet: %v", err)
	}
	if used, n, err := st.ConsumeUserRecoveryCode(ctx, u.ID, func(string) bool { return true }); err != nil || used || n != 0 {
		t.Fatalf("consume without codes = %v %d %v", used, n, err)
	}
	if err := st.SetUserRecoveryCodes(ctx, u.ID, codes); err != nil {
		t.Fatal(err)
	}
	if got, err := st.UserRecoveryCodes(ctx, u.ID); err != nil || !slices.Equal(got, codes) {
		t.Fatalf("codes = %v, %v", got, err)
	}
	if uu, _ := st.User(ctx, u.ID); !uu.HasRecoveryCodes || uu.RecoveryCodesGeneratedAt == nil {
		t.Fatalf("flags = %v %v", uu.HasRecoveryCodes, uu.RecoveryCodesGeneratedAt)
	}
	var raw []byte
	if err := db.Pool.QueryRow(ctx, `SELECT recovery_codes FROM users WHERE id = $1`, rawID(u.ID)).Scan(&raw); err != nil {
		t.Fatal(err)
	}
	for _, c := range codes {
		if bytes.Contains(raw, []byte(c)) {
			t.Fatalf("stored value reveals %q", c)
		}
	}
	if _, err := db.Pool.Exec(ctx, `UPDATE users SET recovery_codes = $1 WHERE id = $2`, raw, rawID(other.ID)); err != nil {
		t.Fatal(err)
	}
	if _, err := st.UserRecoveryCodes(ctx, other.ID); !errors.Is(err, secrets.ErrCorrupt) {
		t.Fatalf("moved codes opened: %v", err)
	}

	is := func(want string) func(string) bool { return func(c string) bool { return c == want } }
	if used, n, err := st.ConsumeUserRecoveryCode(ctx, u.ID, is("bravo-3333-4444")); err != nil || !used || n != 2 {
		t.Fatalf("consume = %v %d %v", used, n, err)
	}
	if used, n, err := st.ConsumeUserRecoveryCode(ctx, u.ID, is("bravo-3333-4444")); err != nil || used || n != 2 {
		t.Fatalf("consume a used code = %v %d %v", used, n, err)
	}
	if got, _ := st.UserRecoveryCodes(ctx, u.ID); !slices.Equal(got, []string{"alpha-1111-2222", "charlie-5555-6666"}) {
		t.Fatalf("remaining = %v", got)
	}

	// One code presented many times at once is accepted once.
	var wg sync.WaitGroup
	var mu sync.Mutex
	accepted := 0
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			used, _, err := st.ConsumeUserRecoveryCode(ctx, u.ID, is("alpha-1111-2222"))
			if err != nil {
				t.Error(err)
			}
			if used {
				mu.Lock()
				accepted++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if accepted != 1 {
		t.Fatalf("one recovery code accepted %d times", accepted)
	}
	if used, n, err := st.ConsumeUserRecoveryCode(ctx, u.ID, is("charlie-5555-6666")); err != nil || !used || n != 0 {
		t.Fatalf("last code = %v %d %v", used, n, err)
	}
	// All used is an empty list, still "has codes" until regenerated.
	if got, err := st.UserRecoveryCodes(ctx, u.ID); err != nil || len(got) != 0 {
		t.Fatalf("after using all = %v, %v", got, err)
	}
	if err := st.SetUserRecoveryCodes(ctx, u.ID, nil); err != nil {
		t.Fatal(err)
	}
	if uu, _ := st.User(ctx, u.ID); uu.HasRecoveryCodes || uu.RecoveryCodesGeneratedAt != nil {
		t.Fatalf("cleared codes: %v %v", uu.HasRecoveryCodes, uu.RecoveryCodesGeneratedAt)
	}
	if err := st.SetUserRecoveryCodes(ctx, store.NewID(), codes); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("unknown user: %v", err)
	}
}
