package backups

import (
	"context"
	"crypto/hkdf"
	"crypto/sha256"
	"fmt"
	"strings"

	"filippo.io/age"

	"github.com/berthhq/berth/controller/internal/store"
)

// Each server encrypts to its own age X25519 key, derived from the keyring
// key (HKDF-SHA256 of the keyring identity, salted, with the server's id as
// info), so the identity a verify or restore job hands one agent opens that
// server's backups only: a compromised server cannot decrypt the others'.
// Derived, not stored: no schema change, rotation still works (a backup
// names its keyring key and was made on its server), and the controller can
// always recompute any server's identity for a download.

const serverKeySalt = "berth backup server key v1"

// serverIdentity derives server's identity from a keyring identity.
func serverIdentity(keyring store.BackupIdentity, server store.ID) (*age.X25519Identity, error) {
	seed, err := hkdf.Key(sha256.New, []byte(strings.TrimSpace(string(keyring))), []byte(serverKeySalt), server.String(), 32)
	if err != nil {
		return nil, fmt.Errorf("derive the server's backup key: %w", err)
	}
	id, err := age.ParseX25519Identity(strings.ToUpper(bech32Encode("age-secret-key-", seed)))
	if err != nil {
		return nil, fmt.Errorf("derive the server's backup key: %w", err)
	}
	return id, nil
}

// serverRecipient is what a backup made on server with keyring key kid is
// encrypted to.
func (s *Service) serverRecipient(ctx context.Context, kid, server store.ID) (string, error) {
	keyring, err := s.st.BackupEncryptionIdentity(ctx, kid)
	if err != nil {
		return "", err
	}
	id, err := serverIdentity(keyring, server)
	if err != nil {
		return "", err
	}
	return id.Recipient().String(), nil
}

// bech32Encode is BIP 173's encoding (age's key format) without its length
// limit; age.ParseX25519Identity checks the checksum it writes.
func bech32Encode(hrp string, data []byte) string {
	var values []byte
	var acc uint32
	bits := 0
	for _, b := range data {
		acc = acc<<8 | uint32(b)
		bits += 8
		for bits >= 5 {
			bits -= 5
			values = append(values, byte(acc>>uint(bits))&31)
		}
		acc &= 1<<uint(bits) - 1
	}
	if bits > 0 {
		values = append(values, byte(acc<<uint(5-bits))&31)
	}
	var exp []byte
	for i := 0; i < len(hrp); i++ {
		exp = append(exp, hrp[i]>>5)
	}
	exp = append(exp, 0)
	for i := 0; i < len(hrp); i++ {
		exp = append(exp, hrp[i]&31)
	}
	mod := bech32Polymod(append(append(exp, values...), 0, 0, 0, 0, 0, 0)) ^ 1
	for i := 0; i < 6; i++ {
		values = append(values, byte(mod>>uint(5*(5-i)))&31)
	}
	const charset = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"
	var sb strings.Builder
	sb.WriteString(hrp)
	sb.WriteByte('1')
	for _, v := range values {
		sb.WriteByte(charset[v])
	}
	return sb.String()
}

func bech32Polymod(values []byte) uint32 {
	gen := [5]uint32{0x3b6a57b2, 0x26508e6d, 0x1ea119fa, 0x3d4233dd, 0x2a1462b3}
	chk := uint32(1)
	for _, v := range values {
		top := chk >> 25
		chk = (chk&0x1ffffff)<<5 ^ uint32(v)
		for i := 0; i < 5; i++ {
			if (top>>uint(i))&1 == 1 {
				chk ^= gen[i]
			}
		}
	}
	return chk
}
