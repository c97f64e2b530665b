package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/berthhq/berth/gen/dbsqlc"
)

// UserRole is what a user may do in the UI and API.
type UserRole string

// The user roles.
const (
	RoleAdmin    UserRole = "admin"
	RoleOperator UserRole = "operator"
	RoleViewer   UserRole = "viewer"
)

// UserStatus is an account's lifecycle state.
type UserStatus string

// The user statuses. An invited user has no password yet; a disabled one
// keeps its row (and so the audit trail) but cannot log in.
const (
	UserInvited  UserStatus = "invited"
	UserActive   UserStatus = "active"
	UserDisabled UserStatus = "disabled"
)

// User is an account. The password hash and the encrypted 2FA columns are not
// fields: they are read only through UserPasswordHash, UserTwoFactorSecret
// and UserRecoveryCodes, so a User can be rendered or logged safely.
type User struct {
	ID                ID
	Email             string
	Name              string
	HasPassword       bool
	PasswordChangedAt *time.Time
	Role              UserRole
	Status            UserStatus
	// TwoFactorEnabled: an enrolment was confirmed, so login asks for a code.
	TwoFactorEnabled bool
	// TwoFactorPending: a secret is stored but not confirmed yet.
	TwoFactorPending         bool
	TwoFactorConfirmedAt     *time.Time
	TwoFactorLastUsedStep    *int64
	HasRecoveryCodes         bool
	RecoveryCodesGeneratedAt *time.Time
	LastLoginAt              *time.Time
	LastLoginIP              *netip.Addr
	DisabledAt               *time.Time
	CreatedAt                time.Time
	UpdatedAt                time.Time
}

func userFromRow(r dbsqlc.User) User {
	return User{
		ID: fromPG(r.ID), Email: r.Email, Name: r.Name,
		HasPassword: r.PasswordHash != nil, PasswordChangedAt: r.PasswordChangedAt,
		Role: UserRole(r.Role), Status: UserStatus(r.Status),
		TwoFactorEnabled:         r.TwoFactorConfirmedAt != nil,
		TwoFactorPending:         r.TwoFactorSecret != nil && r.TwoFactorConfirmedAt == nil,
		TwoFactorConfirmedAt:     r.TwoFactorConfirmedAt,
		TwoFactorLastUsedStep:    r.TwoFactorLastUsedStep,
		HasRecoveryCodes:         r.RecoveryCodes != nil,
		RecoveryCodesGeneratedAt: r.RecoveryCodesGeneratedAt,
		LastLoginAt:              r.LastLoginAt, LastLoginIP: r.LastLoginIp,
		DisabledAt: r.DisabledAt, CreatedAt: r.CreatedAt, UpdatedAt: r.UpdatedAt,
	}
}

func usersFromRows(rows []dbsqlc.User) []User {
	out := make([]User, len(rows))
	for i, r := range rows {
		out[i] = userFromRow(r)
	}
	return out
}

// CreateUserParams describes a new account. PasswordHash is an argon2id PHC
// string, empty for an invited user. Role is required. Status defaults to
// active with a password and invited without one.
type CreateUserParams struct {
	ID           ID
	Email        string
	Name         string
	PasswordHash string
	Role         UserRole
	Status       UserStatus
}

// CreateUser stores an account; ErrConflict when the email (in any case) is
// taken, ErrInvalid when a constraint refuses a value.
func (s *Store) CreateUser(ctx context.Context, p CreateUserParams) (User, error) {
	if p.ID == (ID{}) {
		p.ID = NewID()
	}
	if p.Status == "" {
		p.Status = UserInvited
		if p.PasswordHash != "" {
			p.Status = UserActive
		}
	}
	r, err := s.q.CreateUser(ctx, dbsqlc.CreateUserParams{
		ID: pgID(p.ID), Email: p.Email, Name: p.Name, PasswordHash: nullText(p.PasswordHash),
		Role: string(p.Role), Status: string(p.Status),
	})
	if err != nil {
		return User{}, mapErr("create user", err)
	}
	return userFromRow(r), nil
}

// User gets an account by id.
func (s *Store) User(ctx context.Context, id ID) (User, error) {
	r, err := s.q.GetUser(ctx, pgID(id))
	if err != nil {
		return User{}, mapErr("get user", err)
	}
	return userFromRow(r), nil
}

// UserByEmail gets an account by email, case-insensitively.
func (s *Store) UserByEmail(ctx context.Context, email string) (User, error) {
	r, err := s.q.GetUserByEmail(ctx, email)
	if err != nil {
		return User{}, mapErr("get user by email", err)
	}
	return userFromRow(r), nil
}

// UserFilter selects users; zero fields do not filter.
type UserFilter struct {
	Status UserStatus
	Role   UserRole
	Before *ID // keyset cursor: only users created before this one
	Limit  int // 0: DefaultPageSize
}

// Users lists accounts, newest first.
func (s *Store) Users(ctx context.Context, f UserFilter) ([]User, error) {
	before, lim := keyset(f.Before, f.Limit)
	rows, err := s.q.ListUsers(ctx, dbsqlc.ListUsersParams{Status: nullEnum(f.Status), Role: nullEnum(f.Role), Before: before, Lim: lim})
	if err != nil {
		return nil, mapErr("list users", err)
	}
	return usersFromRows(rows), nil
}

// CountUsers counts accounts with a status and role ("" for any).
func (s *Store) CountUsers(ctx context.Context, status UserStatus, role UserRole) (int64, error) {
	n, err := s.q.CountUsers(ctx, dbsqlc.CountUsersParams{Status: nullEnum(status), Role: nullEnum(role)})
	return n, mapErr("count users", err)
}

// UserProfile is a partial update: nil fields stay as they are.
type UserProfile struct {
	Email *string
	Name  *string
}

// UpdateUserProfile changes a user's email and/or name. Changing the email
// voids outstanding reset and invite links (they are bound to the address).
func (s *Store) UpdateUserProfile(ctx context.Context, id ID, p UserProfile) (User, error) {
	r, err := s.q.UpdateUserProfile(ctx, dbsqlc.UpdateUserProfileParams{ID: pgID(id), Email: p.Email, Name: p.Name})
	if err != nil {
		return User{}, mapErr("update user", err)
	}
	return userFromRow(r), nil
}

// SetUserRole changes a user's role.
func (s *Store) SetUserRole(ctx context.Context, id ID, role UserRole) (User, error) {
	r, err := s.q.SetUserRole(ctx, dbsqlc.SetUserRoleParams{ID: pgID(id), Role: string(role)})
	if err != nil {
		return User{}, mapErr("set user role", err)
	}
	return userFromRow(r), nil
}

// SetUserStatus moves an account between invited, active and disabled;
// disabled_at follows. Activating an account without a password is
// ErrInvalid. Disabling does not end sessions or tokens: the caller does that
// in the same transaction.
func (s *Store) SetUserStatus(ctx context.Context, id ID, status UserStatus) (User, error) {
	r, err := s.q.SetUserStatus(ctx, dbsqlc.SetUserStatusParams{ID: pgID(id), Status: string(status)})
	if err != nil {
		return User{}, mapErr("set user status", err)
	}
	return userFromRow(r), nil
}

// SetUserPassword stores a new argon2id hash and stamps password_changed_at.
func (s *Store) SetUserPassword(ctx context.Context, id ID, hash string) (User, error) {
	if hash == "" {
		return User{}, fmt.Errorf("set user password: empty hash: %w", ErrInvalid)
	}
	r, err := s.q.SetUserPassword(ctx, dbsqlc.SetUserPasswordParams{ID: pgID(id), PasswordHash: &hash})
	if err != nil {
		return User{}, mapErr("set user password", err)
	}
	return userFromRow(r), nil
}

// AcceptUserInvite sets an invited user's first password and activates the
// account; ErrNotFound when the user is not (or no longer) invited.
func (s *Store) AcceptUserInvite(ctx context.Context, id ID, hash string) (User, error) {
	if hash == "" {
		return User{}, fmt.Errorf("accept user invite: empty hash: %w", ErrInvalid)
	}
	r, err := s.q.AcceptUserInvite(ctx, dbsqlc.AcceptUserInviteParams{ID: pgID(id), PasswordHash: &hash})
	if err != nil {
		return User{}, mapErr("accept user invite", err)
	}
	return userFromRow(r), nil
}

// UserPasswordHash is the argon2id PHC string to verify a password against;
// "" for an invited user, who has none.
func (s *Store) UserPasswordHash(ctx context.Context, id ID) (string, error) {
	h, err := s.q.GetUserPasswordHash(ctx, pgID(id))
	if err != nil {
		return "", mapErr("get user password hash", err)
	}
	return textOf(h), nil
}

// RecordUserLogin stamps a successful login.
func (s *Store) RecordUserLogin(ctx context.Context, id ID, ip *netip.Addr) error {
	return mapErr("record user login", s.q.RecordUserLogin(ctx, dbsqlc.RecordUserLoginParams{ID: pgID(id), Ip: ip}))
}

// DeleteUser deletes an account with its sessions, links and inbox; the
// audit rows keep their text and lose the reference.
func (s *Store) DeleteUser(ctx context.Context, id ID) error {
	n, err := s.q.DeleteUser(ctx, pgID(id))
	return affected("delete user", n, err)
}

// SetUserTwoFactor stores a new TOTP secret, sealed, as an unconfirmed
// enrolment: 2FA is enforced only after ConfirmUserTwoFactor. It replaces an
// existing secret (and so turns enforcement off until confirmed): the caller
// must have re-authenticated the user.
func (s *Store) SetUserTwoFactor(ctx context.Context, id ID, secret []byte) error {
	if len(secret) == 0 {
		return fmt.Errorf("set user two-factor secret: empty secret: %w", ErrInvalid)
	}
	ct, err := s.seal("users", "two_factor_secret", id, secret)
	if err != nil {
		return err
	}
	n, err := s.q.SetUserTwoFactorSecret(ctx, dbsqlc.SetUserTwoFactorSecretParams{ID: pgID(id), Secret: ct})
	return affected("set user two-factor secret", n, err)
}

// ConfirmUserTwoFactor turns 2FA on after a valid code for step; that step
// counts as used. ErrNotFound when there is no pending enrolment.
func (s *Store) ConfirmUserTwoFactor(ctx context.Context, id ID, step int64) (User, error) {
	r, err := s.q.ConfirmUserTwoFactor(ctx, dbsqlc.ConfirmUserTwoFactorParams{ID: pgID(id), Step: &step})
	if err != nil {
		return User{}, mapErr("confirm user two-factor", err)
	}
	return userFromRow(r), nil
}

// DisableUserTwoFactor removes the secret and the recovery codes.
func (s *Store) DisableUserTwoFactor(ctx context.Context, id ID) (User, error) {
	r, err := s.q.DisableUserTwoFactor(ctx, pgID(id))
	if err != nil {
		return User{}, mapErr("disable user two-factor", err)
	}
	return userFromRow(r), nil
}

// UserTwoFactorSecret opens a user's TOTP secret; ErrNotFound when the user
// has none.
func (s *Store) UserTwoFactorSecret(ctx context.Context, id ID) ([]byte, error) {
	ct, err := s.q.GetUserTwoFactorSecret(ctx, pgID(id))
	if err != nil {
		return nil, mapErr("get user two-factor secret", err)
	}
	if ct == nil {
		return nil, fmt.Errorf("get user two-factor secret: %w", ErrNotFound)
	}
	return s.open("users", "two_factor_secret", id, ct)
}

// UseUserTOTPStep records that a code for step was accepted. It reports
// false when step is not newer than the last accepted one: a replayed (or
// concurrently used) code, to be refused and recorded. The check and the
// write are one statement, so one code cannot log in twice.
func (s *Store) UseUserTOTPStep(ctx context.Context, id ID, step int64) (bool, error) {
	n, err := s.q.UseUserTOTPStep(ctx, dbsqlc.UseUserTOTPStepParams{ID: pgID(id), Step: &step})
	if err != nil {
		return false, mapErr("use user totp step", err)
	}
	return n == 1, nil
}

// SetUserRecoveryCodes replaces a user's recovery codes (the caller decides
// whether they are the codes or their hashes), sealed as one JSON list; nil
// removes them.
func (s *Store) SetUserRecoveryCodes(ctx context.Context, id ID, codes []string) error {
	var ct []byte
	if codes != nil {
		var err error
		if ct, err = s.sealRecoveryCodes(id, codes); err != nil {
			return err
		}
	}
	n, err := s.q.SetUserRecoveryCodes(ctx, dbsqlc.SetUserRecoveryCodesParams{ID: pgID(id), Codes: ct})
	return affected("set user recovery codes", n, err)
}

// UserRecoveryCodes opens a user's remaining recovery codes; ErrNotFound
// when the user has none.
func (s *Store) UserRecoveryCodes(ctx context.Context, id ID) ([]string, error) {
	ct, err := s.q.GetUserRecoveryCodes(ctx, pgID(id))
	if err != nil {
		return nil, mapErr("get user recovery codes", err)
	}
	return s.openRecoveryCodes(id, ct)
}

// ConsumeUserRecoveryCode removes the first stored code for which match
// returns true (match does the constant-time comparison, or the hashing) and
// reports whether one matched and how many remain. The row stays locked from
// read to rewrite, so a code used twice at once is accepted once.
func (s *Store) ConsumeUserRecoveryCode(ctx context.Context, id ID, match func(stored string) bool) (used bool, remaining int, err error) {
	err = s.InTx(ctx, func(tx *Store) error {
		ct, err := tx.q.LockUserRecoveryCodes(ctx, pgID(id))
		if err != nil {
			return mapErr("lock user recovery codes", err)
		}
		codes, err := tx.openRecoveryCodes(id, ct)
		if errors.Is(err, ErrNotFound) {
			return nil // no codes: nothing matches
		}
		if err != nil {
			return err
		}
		remaining = len(codes)
		for i, c := range codes {
			if !match(c) {
				continue
			}
			rest := append(codes[:i:i], codes[i+1:]...)
			nct, err := tx.sealRecoveryCodes(id, rest)
			if err != nil {
				return err
			}
			if err := tx.q.ReplaceUserRecoveryCodes(ctx, dbsqlc.ReplaceUserRecoveryCodesParams{ID: pgID(id), Codes: nct}); err != nil {
				return mapErr("replace user recovery codes", err)
			}
			used, remaining = true, len(rest)
			return nil
		}
		return nil
	})
	if err != nil {
		return false, 0, err
	}
	return used, remaining, nil
}

func (s *Store) sealRecoveryCodes(id ID, codes []string) ([]byte, error) {
	if codes == nil {
		codes = []string{} // all used: an empty list, not "no codes"
	}
	pt, err := json.Marshal(codes)
	if err != nil {
		return nil, err
	}
	return s.seal("users", "recovery_codes", id, pt)
}

func (s *Store) openRecoveryCodes(id ID, ct []byte) ([]string, error) {
	if ct == nil {
		return nil, fmt.Errorf("get user recovery codes: %w", ErrNotFound)
	}
	pt, err := s.open("users", "recovery_codes", id, ct)
	if err != nil {
		return nil, err
	}
	var codes []string
	if err := json.Unmarshal(pt, &codes); err != nil {
		return nil, fmt.Errorf("decode user recovery codes: %w", err)
	}
	return codes, nil
}

// LockActiveAdmins locks the active admins' rows until the transaction ends
// and returns their ids. Call it inside InTx before disabling an admin, so
// two concurrent changes cannot both leave the other as the last admin and
// then disable it.
func (s *Store) LockActiveAdmins(ctx context.Context) ([]ID, error) {
	rows, err := s.q.LockActiveAdmins(ctx)
	if err != nil {
		return nil, mapErr("lock active admins", err)
	}
	out := make([]ID, len(rows))
	for i, r := range rows {
		out[i] = fromPG(r)
	}
	return out, nil
}
