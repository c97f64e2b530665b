package accounts

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/berthhq/berth/controller/internal/audit/kind"
	"github.com/berthhq/berth/controller/internal/mail"
	"github.com/berthhq/berth/controller/internal/store"
)

func validRole(r store.UserRole) error {
	switch r {
	case store.RoleAdmin, store.RoleOperator, store.RoleViewer:
		return nil
	}
	return invalid("role must be admin, operator or viewer, not %q", r)
}

func mapUserErr(err error) error {
	switch {
	case errors.Is(err, store.ErrConflict):
		return ErrEmailTaken
	case errors.Is(err, store.ErrNotFound):
		return ErrNotFound
	}
	return err
}

// CreateUser creates an active account with a password (admins only).
func (s *Service) CreateUser(ctx context.Context, a Actor, role store.UserRole, email, pw string) (store.User, error) {
	if err := s.require(a, store.ScopeAdmin); err != nil {
		return store.User{}, err
	}
	email, err := normalizeEmail(email)
	if err != nil {
		return store.User{}, err
	}
	if err := validRole(role); err != nil {
		return store.User{}, err
	}
	hash, err := hashNew(pw)
	if err != nil {
		return store.User{}, err
	}
	var u store.User
	err = s.st.InTx(ctx, func(tx *store.Store) error {
		var err error
		if u, err = tx.CreateUser(ctx, store.CreateUserParams{Email: email, PasswordHash: hash, Role: role, Status: store.UserActive}); err != nil {
			return mapUserErr(err)
		}
		if err := s.event(ctx, tx, kind.UserCreated, store.SeverityInfo, &u.ID, a.label(), a.Meta,
			map[string]any{"email": u.Email, "role": string(role)}); err != nil {
			return err
		}
		return s.activity(ctx, tx, a, kind.UserCreated, "user", &u.ID, u.Email, map[string]any{
			"email": change(nil, u.Email), "role": change(nil, string(role)), "password": changed,
		})
	})
	if err != nil {
		return store.User{}, fmt.Errorf("create user: %w", err)
	}
	return u, nil
}

// Invitation is what InviteUser and ResendInvite did.
type Invitation struct {
	User store.User
	// Mailed is true when the link went to a mail server.
	Mailed bool
	// Link is the single-use link, set only when no mail server is
	// configured: the admin hands it over, and it is shown once (never
	// logged or stored; only its hash is kept).
	Link string
}

// InviteUser creates an invited account (admins only) and mails it a
// single-use link, valid InviteTTL, to choose a password. Without a mail
// server nothing is mailed and the link is returned instead. When the mail
// cannot be sent the account still exists: the error wraps ErrMailFailed
// and the returned user is valid; ResendInvite tries again.
func (s *Service) InviteUser(ctx context.Context, a Actor, email string, role store.UserRole) (Invitation, error) {
	if err := s.require(a, store.ScopeAdmin); err != nil {
		return Invitation{}, err
	}
	email, err := normalizeEmail(email)
	if err != nil {
		return Invitation{}, err
	}
	if err := validRole(role); err != nil {
		return Invitation{}, err
	}
	var u store.User
	tok := randomToken()
	err = s.st.InTx(ctx, func(tx *store.Store) error {
		var err error
		if u, err = tx.CreateUser(ctx, store.CreateUserParams{Email: email, Role: role, Status: store.UserInvited}); err != nil {
			return mapUserErr(err)
		}
		if err := s.createInvite(ctx, tx, u, tok, a.Meta); err != nil {
			return err
		}
		if err := s.event(ctx, tx, kind.UserInvited, store.SeverityInfo, &u.ID, a.label(), a.Meta,
			map[string]any{"email": u.Email, "role": string(role)}); err != nil {
			return err
		}
		return s.activity(ctx, tx, a, kind.UserInvited, "user", &u.ID, u.Email, map[string]any{
			"email": change(nil, u.Email), "role": change(nil, string(role)),
		})
	})
	if err != nil {
		return Invitation{}, fmt.Errorf("invite user: %w", err)
	}
	return s.sendInvite(ctx, a, u, tok)
}

// ResendInvite issues a new invitation link for an invited user (the old
// one stops working) and mails it, or returns it without a mail server
// (admins only).
func (s *Service) ResendInvite(ctx context.Context, a Actor, id store.ID) (Invitation, error) {
	if err := s.require(a, store.ScopeAdmin); err != nil {
		return Invitation{}, err
	}
	var u store.User
	tok := randomToken()
	err := s.st.InTx(ctx, func(tx *store.Store) error {
		var err error
		if u, err = tx.User(ctx, id); err != nil {
			return mapUserErr(err)
		}
		if u.Status != store.UserInvited {
			return invalid("%s is not an invited user", u.Email)
		}
		if err := s.createInvite(ctx, tx, u, tok, a.Meta); err != nil {
			return err
		}
		return s.activity(ctx, tx, a, kind.UserInviteResent, "user", &u.ID, u.Email, nil)
	})
	if err != nil {
		return Invitation{}, fmt.Errorf("resend invite: %w", err)
	}
	return s.sendInvite(ctx, a, u, tok)
}

func (s *Service) createInvite(ctx context.Context, tx *store.Store, u store.User, tok string, meta Meta) error {
	_, err := tx.CreatePasswordResetToken(ctx, store.CreatePasswordResetTokenParams{
		UserID: u.ID, Email: u.Email, Purpose: store.PurposeInvite, TokenHash: hashToken(tok),
		RequestedIP: meta.ip(), ExpiresAt: s.now().Add(s.cfg.InviteTTL),
	})
	return err
}

// sendInvite mails synchronously: the admin should learn at once that the
// invitation did not go out. Without a mail server it mails nothing and
// hands the link back, since a dropped invitation reported as sent leaves
// the invitee waiting for a mail that never comes.
func (s *Service) sendInvite(ctx context.Context, a Actor, u store.User, tok string) (Invitation, error) {
	if !mail.Delivers(s.mail) {
		return Invitation{User: u, Link: s.link("invite", tok)}, nil
	}
	err := s.mail.Send(ctx, mail.Message{
		To:      u.Email,
		Subject: "You are invited to Berth",
		Text: fmt.Sprintf("%s invited you to Berth as %s.\n\n"+
			"Open this link within %s to choose your password:\n\n%s\n\n"+
			"If you did not expect this, ignore this mail.\n",
			a.label(), u.Role, humanDuration(s.cfg.InviteTTL), s.link("invite", tok)),
	})
	if err != nil {
		s.log.ErrorContext(ctx, "invitation mail failed", "to", u.Email, "err", err)
		return Invitation{User: u}, fmt.Errorf("%w: %w", ErrMailFailed, err)
	}
	return Invitation{User: u, Mailed: true}, nil
}

// AcceptInvite redeems an invitation link: the account gets its first
// password and becomes active. It does not sign the user in.
func (s *Service) AcceptInvite(ctx context.Context, token, pw string, meta Meta) (store.User, error) {
	hash, err := hashNew(pw)
	if err != nil {
		return store.User{}, err
	}
	var u store.User
	err = s.st.InTx(ctx, func(tx *store.Store) error {
		t, err := s.consumeLink(ctx, tx, token, store.PurposeInvite)
		if err != nil {
			return err
		}
		if u, err = tx.AcceptUserInvite(ctx, t.UserID, hash); errors.Is(err, store.ErrNotFound) {
			return ErrLinkInvalid // no longer invited
		} else if err != nil {
			return err
		}
		a := userActor(u, nil, meta)
		if err := s.event(ctx, tx, kind.UserInviteAccepted, store.SeverityInfo, &u.ID, a.label(), meta, nil); err != nil {
			return err
		}
		return s.activity(ctx, tx, a, kind.UserInviteAccepted, "user", &u.ID, u.Email, map[string]any{
			"status": change(string(store.UserInvited), string(store.UserActive)), "password": changed,
		})
	})
	if err != nil {
		return store.User{}, fmt.Errorf("accept invite: %w", err)
	}
	return u, nil
}

// DisableUser disables an account (admins only). In the same transaction
// all its sessions are deleted, all its API tokens revoked and its pending
// links voided, so access ends at once. An admin cannot disable themself,
// nor the last active admin.
func (s *Service) DisableUser(ctx context.Context, a Actor, id store.ID) (store.User, error) {
	if err := s.require(a, store.ScopeAdmin); err != nil {
		return store.User{}, err
	}
	if id == a.UserID {
		return store.User{}, ErrCannotDisableSelf
	}
	var u store.User
	err := s.st.InTx(ctx, func(tx *store.Store) error {
		// Lock the admins first, then read the target, so the count below
		// cannot go stale under a concurrent disable.
		admins, err := tx.LockActiveAdmins(ctx)
		if err != nil {
			return err
		}
		old, err := tx.User(ctx, id)
		if err != nil {
			return mapUserErr(err)
		}
		if old.Status == store.UserDisabled {
			u = old
			return nil
		}
		if old.Role == store.RoleAdmin && old.Status == store.UserActive &&
			slices.Contains(admins, old.ID) && len(admins) <= 1 {
			return ErrLastAdmin
		}
		if u, err = tx.SetUserStatus(ctx, id, store.UserDisabled); err != nil {
			return err
		}
		sessions, err := tx.RevokeUserSessions(ctx, id, nil)
		if err != nil {
			return err
		}
		tokens, err := tx.RevokeUserAPITokens(ctx, id)
		if err != nil {
			return err
		}
		if _, err := tx.DeleteUserPasswordResetTokens(ctx, id); err != nil {
			return err
		}
		if err := s.event(ctx, tx, kind.UserDisabled, store.SeverityWarning, &id, a.label(), a.Meta,
			map[string]any{"email": u.Email, "sessions_revoked": sessions, "tokens_revoked": tokens}); err != nil {
			return err
		}
		return s.activity(ctx, tx, a, kind.UserDisabled, "user", &id, u.Email, map[string]any{
			"status": change(string(old.Status), string(u.Status)),
		})
	})
	if err != nil {
		return store.User{}, fmt.Errorf("disable user: %w", err)
	}
	return u, nil
}

// EnableUser re-enables a disabled account (admins only). One that never
// set a password goes back to invited (resend the invitation). Its revoked
// API tokens stay revoked.
func (s *Service) EnableUser(ctx context.Context, a Actor, id store.ID) (store.User, error) {
	if err := s.require(a, store.ScopeAdmin); err != nil {
		return store.User{}, err
	}
	var u store.User
	err := s.st.InTx(ctx, func(tx *store.Store) error {
		old, err := tx.User(ctx, id)
		if err != nil {
			return mapUserErr(err)
		}
		if old.Status != store.UserDisabled {
			u = old
			return nil
		}
		status := store.UserActive
		if !old.HasPassword {
			status = store.UserInvited
		}
		if u, err = tx.SetUserStatus(ctx, id, status); err != nil {
			return err
		}
		if err := s.event(ctx, tx, kind.UserEnabled, store.SeverityInfo, &id, a.label(), a.Meta,
			map[string]any{"email": u.Email}); err != nil {
			return err
		}
		return s.activity(ctx, tx, a, kind.UserEnabled, "user", &id, u.Email, map[string]any{
			"status": change(string(old.Status), string(u.Status)),
		})
	})
	if err != nil {
		return store.User{}, fmt.Errorf("enable user: %w", err)
	}
	return u, nil
}

// ListUsers lists every account, newest first (admins only).
func (s *Service) ListUsers(ctx context.Context, a Actor) ([]store.User, error) {
	if err := s.require(a, store.ScopeAdmin); err != nil {
		return nil, err
	}
	var out []store.User
	var before *store.ID
	for {
		page, err := s.st.Users(ctx, store.UserFilter{Before: before, Limit: 500})
		if err != nil {
			return nil, fmt.Errorf("list users: %w", err)
		}
		out = append(out, page...)
		if len(page) < 500 {
			return out, nil
		}
		before = &page[len(page)-1].ID
	}
}

// User gets one account: admins may see anyone, others only themselves.
func (s *Service) User(ctx context.Context, a Actor, id store.ID) (store.User, error) {
	if a.UserID == (store.ID{}) {
		return store.User{}, ErrUnauthenticated
	}
	if id != a.UserID && !a.Allows(store.ScopeAdmin) {
		return store.User{}, ErrNotFound
	}
	u, err := s.st.User(ctx, id)
	if err != nil {
		return store.User{}, fmt.Errorf("get user: %w", mapUserErr(err))
	}
	return u, nil
}
