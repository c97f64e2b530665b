package accounts_test

import (
	"errors"
	"testing"
	"time"

	"github.com/berthhq/berth/controller/internal/accounts"
	"github.com/berthhq/berth/controller/internal/notify"
	"github.com/berthhq/berth/controller/internal/store"
)

// The security events an admin must see reach every admin's inbox through
// the default rule: a new admin, an API token created, repeated failed
// logins. An operator created is not news.
func TestSecurityEventsNotifyAdmins(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ada := e.user(store.RoleAdmin, "ada@example.com", adaPW)
	admin := e.actor("ada@example.com", adaPW)
	if _, err := e.svc.CreateUser(e.ctx, admin, store.RoleOperator, "op@example.com", "operator-password-long-enough"); err != nil {
		t.Fatal(err)
	}
	e.secret("operator-password-long-enough")
	if _, err := e.svc.CreateUser(e.ctx, admin, store.RoleAdmin, "root2@example.com", "second-admin-password-long"); err != nil {
		t.Fatal(err)
	}
	e.secret("second-admin-password-long")
	tok, _, err := e.svc.CreateToken(e.ctx, admin, "ci", []store.Scope{store.ScopeRead}, nil)
	if err != nil {
		t.Fatal(err)
	}
	e.secret(tok)
	for i := 0; i < 20; i++ {
		_, err := e.svc.Login(e.ctx, "ada@example.com", "wrong-password-"+string(rune('a'+i)), meta(ipA, "test"))
		if errors.Is(err, accounts.ErrThrottled) {
			e.clock.Advance(time.Minute)
			continue
		}
		if err == nil {
			t.Fatal("wrong password accepted")
		}
	}
	inbox, err := e.st.Notifications(e.ctx, ada.ID, store.NotificationFilter{})
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]int{}
	for _, n := range inbox {
		got[n.Kind]++
		if n.Kind == notify.KindAdminCreated && n.Title != "New admin root2@example.com created by ada@example.com" {
			t.Errorf("title %q", n.Title)
		}
	}
	if got[notify.KindAdminCreated] != 1 || got[notify.KindTokenCreated] != 1 || got[notify.KindLoginFailures] < 1 || len(got) != 3 {
		t.Fatalf("inbox kinds %v", got)
	}
	e.checkNoLeaks()
}
