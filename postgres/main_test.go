package postgres_test

import (
	"os"
	"testing"

	"github.com/c360dev/c360/internal/pgtest"
)

func TestMain(m *testing.M) {
	code := m.Run()
	pgtest.Drop()
	os.Exit(code)
}
