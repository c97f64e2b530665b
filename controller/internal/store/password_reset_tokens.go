package store

import (
	"context"
	"net/netip"
	"time"

	"github.com/berthhq/berth/gen/dbsqlc"
)

// ResetPurpose says what a single-use link is for.
type ResetPurpose string

// The link purposes. An invitation is a link through which an invited user
// sets a first password.
const (
	PurposeReset  ResetPurpose = "reset"
	PurposeInvite ResetPurpose = "invite"
)

// PasswordResetToken is a reset or invite link; the token itself is never
// stored, only its SHA-256, which is not a field.
type PasswordResetToken struct {
	ID          ID
	UserID      ID
	Email       string // the address the link was sent to
	Purpose     ResetPurpose
	RequestedIP *netip.Addr
	ExpiresAt   time.Time
	UsedAt      *time.Time
	CreatedAt   time.Time
}

func resetTokenFromRow(r dbsqlc.PasswordResetToken) PasswordResetToken {
	return PasswordResetToken{
		ID: fromPG(r.ID), UserID: fromPG(r.UserID), Email: r.Email, Purpose: ResetPurpose(r.Purpose),
		RequestedIP: r.RequestedIp, ExpiresAt: r.ExpiresAt, UsedAt: r.UsedAt, CreatedAt: r.CreatedAt,
	}
}

// CreatePasswordResetTokenParams describes a new link. TokenHash is the
// SHA-256 of the token sent by email (32 bytes); Purpose defaults to reset.
type CreatePasswordResetTokenParams struct {
	ID          ID
	UserID      ID
	Email       string
	Purpose     ResetPurpose
	TokenHash   []byte
	RequestedIP *netip.Addr
	ExpiresAt   time.Time
}

// CreatePasswordResetToken stores a link. A user has at most one unused link
// per purpose: this one replaces (and so voids) the previous one.
func (s *Store) CreatePasswordResetToken(ctx context.Context, p CreatePasswordResetTokenParams) (PasswordResetToken, error) {
	if p.ID == (ID{}) {
		p.ID = NewID()
	}
	if p.Purpose == "" {
		p.Purpose = PurposeReset
	}
	r, err := s.q.CreatePasswordResetToken(ctx, dbsqlc.CreatePasswordResetTokenParams{
		ID: pgID(p.ID), UserID: pgID(p.UserID), Email: p.Email, Purpose: string(p.Purpose),
		TokenHash: p.TokenHash, RequestedIp: p.RequestedIP, ExpiresAt: p.ExpiresAt,
	})
	if err != nil {
		return PasswordResetToken{}, mapErr("create password reset token", err)
	}
	return resetTokenFromRow(r), nil
}

// ConsumePasswordResetToken redeems a link, once: ErrNotFound when the hash
// is unknown, for another purpose, used, expired, sent to an address that
// is no longer the user's, or the user is disabled. Check and use are one statement, so two
// concurrent redemptions cannot both succeed.
func (s *Store) ConsumePasswordResetToken(ctx context.Context, hash []byte, purpose ResetPurpose) (PasswordResetToken, error) {
	r, err := s.q.ConsumePasswordResetToken(ctx, dbsqlc.ConsumePasswordResetTokenParams{TokenHash: hash, Purpose: string(purpose)})
	if err != nil {
		return PasswordResetToken{}, mapErr("consume password reset token", err)
	}
	return resetTokenFromRow(r), nil
}

// PendingPasswordResetToken is a user's unused link for purpose, expired or
// not (e.g. "invitation sent, expires at"); ErrNotFound when there is none.
func (s *Store) PendingPasswordResetToken(ctx context.Context, userID ID, purpose ResetPurpose) (PasswordResetToken, error) {
	r, err := s.q.GetLivePasswordResetToken(ctx, dbsqlc.GetLivePasswordResetTokenParams{UserID: pgID(userID), Purpose: string(purpose)})
	if err != nil {
		return PasswordResetToken{}, mapErr("get pending password reset token", err)
	}
	return resetTokenFromRow(r), nil
}

// DeleteUserPasswordResetTokens voids a user's unused links.
func (s *Store) DeleteUserPasswordResetTokens(ctx context.Context, userID ID) (int64, error) {
	n, err := s.q.DeleteUserPasswordResetTokens(ctx, pgID(userID))
	return n, mapErr("delete user password reset tokens", err)
}

// DeleteExpiredPasswordResetTokens sweeps expired links and links used
// before usedBefore.
func (s *Store) DeleteExpiredPasswordResetTokens(ctx context.Context, usedBefore time.Time) (int64, error) {
	n, err := s.q.DeleteExpiredPasswordResetTokens(ctx, usedBefore)
	return n, mapErr("delete expired password reset tokens", err)
}

// PasswordResetTokenByHash finds a link by its hash whatever its state (used,
// expired), to explain why ConsumePasswordResetToken refused it.
func (s *Store) PasswordResetTokenByHash(ctx context.Context, hash []byte, purpose ResetPurpose) (PasswordResetToken, error) {
	r, err := s.q.GetPasswordResetTokenByHash(ctx, dbsqlc.GetPasswordResetTokenByHashParams{TokenHash: hash, Purpose: string(purpose)})
	if err != nil {
		return PasswordResetToken{}, mapErr("get password reset token", err)
	}
	return resetTokenFromRow(r), nil
}
