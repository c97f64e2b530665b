package accounts_test

import (
	"errors"
	"strings"
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
	if _, err := e.svc.InviteUser(e.ctx, admin, "dan@example.com", store.RoleAdmin); err != nil {
		t.Fatal(err)
	}
	link := e.mailedToken("dan@example.com", "invite")
	e.secret("dan-has-a-long-password")
	if _, err := e.svc.AcceptInvite(e.ctx, link, "dan-has-a-long-password", meta(ipB, "")); err != nil {
		t.Fatal(err)
	}
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
	var titles []string
	for _, n := range inbox {
		got[n.Kind]++
		if n.Kind == notify.KindAdminCreated {
			titles = append(titles, n.Title)
		}
	}
	if strings.Join(titles, "|") != "New admin dan@example.com joined (invitation accepted)|New admin root2@example.com created by ada@example.com" {
		t.Errorf("titles %q", titles)
	}
	if got[notify.KindAdminCreated] != 2 || got[notify.KindTokenCreated] != 1 || got[notify.KindLoginFailures] < 1 || len(got) != 3 {
		t.Fatalf("inbox kinds %v", got)
	}
	e.checkNoLeaks()
}
