// Package migrations holds the numbered SQL migrations, embedded in the binary
// and applied with goose. Migrations are append-only: a merged file is never edited.
package migrations

import "embed"

// FS holds every migration file.
//
//go:embed *.sql
var FS embed.FS
