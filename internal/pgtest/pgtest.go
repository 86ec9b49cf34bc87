// Package pgtest gives tests a real, migrated PostgreSQL database. Each test
// binary gets a database of its own, created from TEST_DATABASE_URL and
// dropped when the binary exits, so packages testing in parallel never see
// each other's rows. Tests never skip for want of a database: without
// TEST_DATABASE_URL they fail and say how to get one (make test).
package pgtest

import (
	"context"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"go.uber.org/goleak"

	"github.com/c360dev/c360/postgres"
)

var (
	once    sync.Once
	dbURL   string
	initErr error
)

// URL returns the URL of this test binary's migrated database.
func URL(t testing.TB) string {
	t.Helper()
	once.Do(func() { dbURL, initErr = create() })
	if initErr != nil {
		t.Fatalf("test database: %v", initErr)
	}
	return dbURL
}

// Open returns a store on this binary's database, closed at the test's end.
func Open(t testing.TB, opts ...postgres.Option) *postgres.DB {
	t.Helper()
	db, err := postgres.Open(context.Background(), URL(t), opts...)
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	// Tests run ingest as production does: with group commit.
	db.StartIngest(postgres.IngestConfig{})
	t.Cleanup(db.Close)
	return db
}

// Workspace creates a fresh workspace with a unique slug and returns its id
// and credentials.
func Workspace(t testing.TB, db *postgres.DB) (int64, string, string) {
	t.Helper()
	slug := fmt.Sprintf("t%d", time.Now().UnixNano()%1e15)
	creds, err := db.CreateWorkspace(context.Background(), slug, "test")
	if err != nil {
		t.Fatalf("create workspace: %v", err)
	}
	return creds.ID, creds.Slug, creds.APIKey
}

// EmptyDatabase creates a database of its own for the test, with no
// migration applied, dropped when the test ends, and returns its URL.
func EmptyDatabase(t testing.TB, suffix string) string {
	t.Helper()
	name := fmt.Sprintf("c360_t_%s_%d_%s", sanitize(filepath.Base(os.Args[0])), os.Getpid(), sanitize(suffix))
	u, err := newDatabase(name)
	if err != nil {
		t.Fatalf("test database: %v", err)
	}
	t.Cleanup(func() {
		if err := dropDatabase(name); err != nil {
			t.Error(err)
		}
	})
	return u
}

// newDatabase creates the database name afresh and returns its URL.
func newDatabase(name string) (string, error) {
	base := os.Getenv("TEST_DATABASE_URL")
	if base == "" {
		return "", fmt.Errorf("TEST_DATABASE_URL is not set: run the tests with `make test`, which starts a local PostgreSQL")
	}
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, base)
	if err != nil {
		return "", fmt.Errorf("connect to TEST_DATABASE_URL: %w", err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "DROP DATABASE IF EXISTS "+name); err != nil {
		return "", err
	}
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		return "", fmt.Errorf("create database: %w", err)
	}
	u, err := url.Parse(base)
	if err != nil {
		return "", err
	}
	u.Path = "/" + name
	return u.String(), nil
}

// dropDatabase drops the database name, whoever is connected to it.
func dropDatabase(name string) error {
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, os.Getenv("TEST_DATABASE_URL"))
	if err != nil {
		return fmt.Errorf("drop %s: %w", name, err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)"); err != nil {
		return fmt.Errorf("drop %s: %w", name, err)
	}
	return nil
}

func create() (string, error) {
	name := fmt.Sprintf("c360_t_%s_%d", sanitize(filepath.Base(os.Args[0])), os.Getpid())
	dbURL, err := newDatabase(name)
	if err != nil {
		return "", err
	}
	ctx := context.Background()
	db, err := postgres.Open(ctx, dbURL)
	if err != nil {
		return "", err
	}
	defer db.Close()
	m, err := db.NewMigrator()
	if err != nil {
		return "", err
	}
	defer m.Close()
	if err := m.Up(ctx, slog.New(slog.DiscardHandler)); err != nil {
		return "", err
	}
	return dbURL, nil
}

// Drop removes this binary's database; call it from TestMain after m.Run.
// A database it could not drop is named on stderr.
func Drop() {
	if dbURL == "" {
		return
	}
	u, _ := url.Parse(dbURL)
	if err := dropDatabase(strings.TrimPrefix(u.Path, "/")); err != nil {
		fmt.Fprintln(os.Stderr, "pgtest:", err)
	}
}

func sanitize(s string) string {
	s = strings.TrimSuffix(s, ".test")
	var b strings.Builder
	for _, r := range strings.ToLower(s) {
		if (r >= 'a' && r <= 'z') || (r >= '0' && r <= '9') {
			b.WriteRune(r)
		}
	}
	if b.Len() > 20 {
		return b.String()[:20]
	}
	return b.String()
}

// Main runs a test binary's tests, drops its database, and, when they
// passed, fails the binary if any goroutine outlived them: every store,
// batcher and server a test opens must have been closed.
func Main(m *testing.M, ignore ...goleak.Option) {
	code := m.Run()
	Drop()
	if code == 0 {
		if err := goleak.Find(ignore...); err != nil {
			fmt.Fprintf(os.Stderr, "goleak: %v\n", err)
			code = 1
		}
	}
	os.Exit(code)
}
