// Package db embeds Berth's schema migrations (golang-migrate format) so the
// controller binary carries them and applies them on start. The sqlc queries
// in queries/ are compiled into the gen module by `make generate`.
package db

import "embed"

// Migrations holds every NNNNNN_name.up.sql / .down.sql pair under migrations/.
//
//go:embed migrations/*.sql
var Migrations embed.FS

// MigrationsDir is the directory inside Migrations that holds the files.
const MigrationsDir = "migrations"
