package store

import (
	"errors"
	"fmt"

	"github.com/berthhq/berth/controller/internal/secrets"
)

// Column names an encrypted column.
type Column struct{ Table, Column string }

// EncryptedColumns is every column that holds a secrets envelope. Key
// rotation walks exactly this list, and a schema test checks it against the
// catalog so a new encrypted column cannot be forgotten.
var EncryptedColumns = []Column{
	{"users", "two_factor_secret"},
	{"users", "recovery_codes"},
	{"servers", "ssh_private_key"},
	{"git_credentials", "credentials"},
	{"apps", "env_vars"},
	{"apps", "env_production"},
	{"apps", "env_staging"},
	{"apps", "webhook_secret"},
	{"backup_destinations", "credentials"},
	{"notify_channels", "config"},
	{"backup_encryption_keys", "identity"},
	{"acme_accounts", "private_key"},
	{"dns_providers", "credentials"},
}

var errNoKeys = errors.New("store: no keyring configured for encrypted columns")

func (s *Store) seal(table, column string, id ID, plaintext []byte) ([]byte, error) {
	if plaintext == nil {
		return nil, nil
	}
	if s.keys == nil {
		return nil, errNoKeys
	}
	ct, err := s.keys.Keyring().Encrypt(plaintext, secrets.AD{Table: table, Column: column, RowID: id})
	if err != nil {
		return nil, fmt.Errorf("seal %s.%s: %w", table, column, err)
	}
	return ct, nil
}

func (s *Store) open(table, column string, id ID, ciphertext []byte) ([]byte, error) {
	if ciphertext == nil {
		return nil, nil
	}
	if s.keys == nil {
		return nil, errNoKeys
	}
	ad := secrets.AD{Table: table, Column: column, RowID: id}
	pt, err := s.keys.Keyring().Decrypt(ciphertext, ad)
	if errors.Is(err, secrets.ErrUnknownKey) {
		// Another process rotated keys since we loaded them.
		if changed, rerr := s.keys.Reload(); rerr == nil && changed {
			pt, err = s.keys.Keyring().Decrypt(ciphertext, ad)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("open %s.%s: %w", table, column, err)
	}
	return pt, nil
}
