// Package store is the controller's only door to PostgreSQL.
//
// Queries are written in db/queries and compiled by sqlc into gen/dbsqlc; the
// generated types never leave this package. At this boundary:
//
//   - IDs are ULIDs (type ID) outside and uuid inside: the 16 bytes are the
//     same, so uuid order is ULID order and ids sort by creation time.
//   - pgx.ErrNoRows becomes ErrNotFound; unique, foreign-key and check
//     violations become ErrConflict, ErrReferenced/ErrMissingParent and
//     ErrInvalid, each wrapped with the constraint's name.
//   - Encrypted columns (EncryptedColumns) are never part of the ordinary
//     row structs, so a secret cannot reach an API response or a log by
//     accident. They are read and written only through dedicated methods that
//     take or return plaintext and seal it with the keyring, bound to the
//     table, column and row id.
//
// Store methods run on the pool; InTx runs a function with a Store bound to
// one transaction, so the same methods compose into atomic units.
package store
