// Package migrations holds the numbered SQL migrations, embedded in the binary
// and applied with goose. Migrations are append-only: a merged file is never edited.
// A migration that creates a table grants c360_app what it needs on it, as
// 00007 does: 00023 removed the default privileges that granted every new table
// (those of the role that ran it, which one role running every migration makes
// 00006's: docs/security.md).
// Migrations that need Go (00021, which re-normalizes stored emails with
// identity.Normalizer) are registered with goose by the postgres package
// (postgres/migrate_email.go) and have no file here.
package migrations

import "embed"

// FS holds every migration file.
//
//go:embed *.sql
var FS embed.FS
