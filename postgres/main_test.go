package postgres_test

import (
	"testing"

	"github.com/c360dev/c360/internal/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }
