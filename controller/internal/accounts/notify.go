package accounts

import (
	"context"
	"fmt"

	"github.com/berthhq/berth/controller/internal/audit/kind"
	"github.com/berthhq/berth/controller/internal/notify"
	"github.com/berthhq/berth/controller/internal/store"
)

// notifySecurity publishes, in st's transaction, the security events an
// admin must see: a new admin, 2FA disabled, an API token created, repeated
// failed logins. A failure to publish is logged and does not undo the
// change it reports (Publish runs in a savepoint).
func (s *Service) notifySecurity(ctx context.Context, st *store.Store, typ string, userID *store.ID, actor string, details map[string]any) {
	ev := notify.Event{Level: notify.Warning, Link: "/settings/security"}
	switch typ {
	case kind.UserCreated:
		if details["role"] != string(store.RoleAdmin) {
			return
		}
		ev.Kind, ev.Title = notify.KindAdminCreated, fmt.Sprintf("New admin %v created by %s", details["email"], actor)
	case kind.UserInviteAccepted:
		// An invited admin becomes one when the invitation is accepted.
		if userID == nil {
			return
		}
		u, err := st.User(ctx, *userID)
		if err != nil || u.Role != store.RoleAdmin {
			return
		}
		ev.Kind, ev.Title = notify.KindAdminCreated, fmt.Sprintf("New admin %s joined (invitation accepted)", u.Email)
	case kind.TwoFactorDisabled:
		ev.Kind, ev.Title = notify.KindTwoFactorDisabled, fmt.Sprintf("Two-factor authentication disabled (by %s)", actor)
	case kind.TokenCreated:
		ev.Kind, ev.Level, ev.Title = notify.KindTokenCreated, notify.Info, fmt.Sprintf("API token created by %s", actor)
	case kind.LoginFailedBurst:
		ev.Kind, ev.Title = notify.KindLoginFailures, fmt.Sprintf("Repeated failed logins (%v in %vs, %v)", details["failures"], details["window_seconds"], details["scope"])
		if details["scope"] == "account" {
			ev.Title = fmt.Sprintf("Repeated failed logins for %v (%v in %vs)", details["email"], details["failures"], details["window_seconds"])
		}
	default:
		return
	}
	if _, err := notify.Publish(ctx, st, ev); err != nil {
		s.log.ErrorContext(ctx, "publish security notification", "type", typ, "err", err)
	}
}
