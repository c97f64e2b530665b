package backups

import (
	"context"
	"errors"
	"fmt"

	"filippo.io/age"

	"github.com/berthhq/berth/controller/internal/audit/kind"
	"github.com/berthhq/berth/controller/internal/auth"
	"github.com/berthhq/berth/controller/internal/store"
)

// The keyring is age X25519 (filippo.io/age): the agent encrypts to a
// recipient and needs no secret for a backup; the identity is sealed at
// rest by the controller's secrets keyring. Rotation adds a key that new
// backups use; old backups name theirs (backups.encryption_key_id) and
// decrypt with it.

// currentKey is the key new backups use, made on first use. Two
// controllers making the first key at once are serialised by an advisory
// lock, so the keyring never starts with two.
func (s *Service) currentKey(ctx context.Context) (store.BackupEncryptionKey, error) {
	k, err := s.st.NewestBackupEncryptionKey(ctx)
	if err == nil || !errors.Is(err, store.ErrNotFound) {
		return k, err
	}
	err = s.st.InTx(ctx, func(tx *store.Store) error {
		if err := tx.LockBackupEncryptionKeys(ctx); err != nil {
			return err
		}
		if k, err = tx.NewestBackupEncryptionKey(ctx); err == nil || !errors.Is(err, store.ErrNotFound) {
			return err
		}
		k, err = s.newKey(ctx, tx)
		if err == nil {
			s.systemActivity(ctx, tx, store.ActorSystem, "system", kind.BackupKeyCreated, "backup_key", k.ID, k.Recipient, map[string]any{"recipient": k.Recipient})
		}
		return err
	})
	return k, err
}

func (s *Service) newKey(ctx context.Context, tx *store.Store) (store.BackupEncryptionKey, error) {
	id, err := age.GenerateX25519Identity()
	if err != nil {
		return store.BackupEncryptionKey{}, fmt.Errorf("generate backup key: %w", err)
	}
	return tx.CreateBackupEncryptionKey(ctx, id.Recipient().String(), store.BackupIdentity(id.String()))
}

// identityFor opens the identity a backup was encrypted to: its server's
// key derived from the keyring key it names (see serverkey.go).
func (s *Service) identityFor(ctx context.Context, b store.Backup) (store.BackupIdentity, error) {
	if b.EncryptionKeyID == nil {
		return "", fmt.Errorf("%w: backup %s names no encryption key", ErrRefused, b.ID)
	}
	kid, err := store.ParseID(*b.EncryptionKeyID)
	if err != nil {
		return "", fmt.Errorf("%w: backup %s names an unknown encryption key", ErrRefused, b.ID)
	}
	if b.ServerID == nil {
		return "", errServerRemoved
	}
	keyring, err := s.st.BackupEncryptionIdentity(ctx, kid)
	if err != nil {
		return "", err
	}
	id, err := serverIdentity(keyring, *b.ServerID)
	if err != nil {
		return "", err
	}
	return store.BackupIdentity(id.String()), nil
}

// Keys lists the keyring (recipients only), newest first.
func (s *Service) Keys(ctx context.Context, pr *auth.Principal) ([]store.BackupEncryptionKey, error) {
	if err := require(pr, store.ScopeRead); err != nil {
		return nil, err
	}
	return s.st.BackupEncryptionKeys(ctx)
}

// RotateKey makes a new key that new backups use (admin). Old keys stay:
// their backups still decrypt.
func (s *Service) RotateKey(ctx context.Context, pr *auth.Principal, peer Peer) (store.BackupEncryptionKey, error) {
	if err := require(pr, store.ScopeAdmin); err != nil {
		return store.BackupEncryptionKey{}, err
	}
	var k store.BackupEncryptionKey
	err := s.st.InTx(ctx, func(tx *store.Store) error {
		if err := tx.LockBackupEncryptionKeys(ctx); err != nil {
			return err
		}
		var err error
		if k, err = s.newKey(ctx, tx); err != nil {
			return err
		}
		s.activity(ctx, tx, pr, peer, kind.BackupKeyCreated, "backup_key", k.ID, k.Recipient, map[string]any{"recipient": k.Recipient})
		return nil
	})
	if err == nil {
		// Held schedules carry the recipient: every agent gets the new one.
		s.notify(ctx, "held:all")
	}
	return k, err
}
