// Package secrets encrypts the database's secret columns (users.two_factor_secret,
// servers.ssh_private_key, apps.env_vars, ...) with AES-256-GCM under a keyring
// of numbered keys.
//
// # Envelope (version 0x01)
//
// Every encrypted column holds one envelope, stored as bytea:
//
//	offset  size  field
//	0       1     version, 0x01
//	1       4     key id, uint32 big-endian, never 0
//	5       12    nonce, random (crypto/rand)
//	17      n     AES-256-GCM ciphertext of the n-byte plaintext
//	17+n    16    GCM tag
//
// An envelope is therefore always at least 33 bytes (empty plaintext).
//
// The key id is a fixed 4-byte number, not a length-prefixed name: a fixed
// header is parsed with one length check, leaves no second way to encode the
// same id, and rotation only ever needs "the next number" (highest id + 1).
// Four billion rotations is enough.
//
// # Associated data
//
// GCM authenticates, but does not encrypt, this byte string built from the
// envelope header and the place the value lives:
//
//	version   1 byte
//	key id    4 bytes, uint32 big-endian
//	len(table)  4 bytes, uint32 big-endian, then the table name bytes
//	len(column) 4 bytes, uint32 big-endian, then the column name bytes
//	row id    16 bytes (the row's ULID as stored in its uuid column)
//
// Binding table, column and row id means a ciphertext copied into another
// row, column or table fails to decrypt (ErrCorrupt), so someone with write
// access to the database cannot swap, say, one app's env_vars into another
// app. The length prefixes make the encoding injective: ("ab","c") and
// ("a","bc") give different bytes. Binding the header means no header byte can
// be changed without detection either.
//
// # Keys
//
// A Keyring holds numbered 32-byte keys. The key with the highest id is the
// primary: it encrypts; every key decrypts. Keys come from the
// BERTH_ENCRYPTION_KEYS environment variable or from a key file in the data
// directory (see Load), both in the text form "ID:BASE64", for example
//
//	BERTH_ENCRYPTION_KEYS=1:q3M2...=,2:Zm9v...=
//
// Choosing "highest id" rather than "last listed" makes the order of entries
// irrelevant, so reordering an env value by hand cannot silently change which
// key encrypts.
//
// Random 96-bit nonces keep collisions negligible for up to 2^32 encryptions
// per key; rotation starts a fresh count.
//
// # Rotation
//
// Rotation (berth keys rotate) is built from these primitives:
//
//  1. next, err := kr.AddKey(), then persist next (SaveKeyFile, or print
//     next.ExportKeys() for the operator to put in BERTH_ENCRYPTION_KEYS)
//     BEFORE writing any ciphertext under the new key; otherwise a crash
//     could leave data under a key that exists nowhere.
//  2. For each encrypted, non-NULL value: if next.NeedsRotation(ct), replace it
//     with next.Reencrypt(ct, ad), in batches. Values already under the primary
//     are skipped, so the loop is resumable after a crash: run it again.
//  3. When no value needs rotation, the old key may be dropped with RemoveKey.
//
// Errors never contain key bytes or plaintext.
package secrets
