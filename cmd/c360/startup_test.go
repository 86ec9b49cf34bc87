package main

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/pressly/goose/v3/lock"

	"github.com/c360dev/c360/internal/logbuf"
	"github.com/c360dev/c360/internal/pgtest"
	"github.com/c360dev/c360/postgres"
)

// post sends an unauthenticated GraphQL query and answers the status,
// headers and body; status 0 when nothing answered.
func post(client *http.Client, url string) (int, http.Header, string) {
	resp, err := client.Post(url, "application/json", strings.NewReader(`{"query":"{ __typename }"}`))
	if err != nil {
		return 0, nil, err.Error()
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, strings.TrimSpace(string(body))
}

// get answers a GET's status and body; status 0 when nothing answered.
func get(client *http.Client, url string) (int, string) {
	resp, err := client.Get(url)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, strings.TrimSpace(string(body))
}

// holdMigrationLock takes the migrations' lock on db's database, as
// another process migrating would, and answers its release (which may be
// called again; the test's end releases it too).
func holdMigrationLock(t *testing.T, db *postgres.DB) (unlock func()) {
	ctx := context.Background()
	other, err := db.Pool.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := other.Exec(ctx, "SELECT pg_advisory_lock($1)", lock.DefaultLockID); err != nil {
		t.Fatal(err)
	}
	locked := true
	unlock = func() {
		if locked {
			locked = false
			if _, err := other.Exec(ctx, "SELECT pg_advisory_unlock($1)", lock.DefaultLockID); err != nil {
				t.Error(err)
			}
			other.Release()
		}
	}
	t.Cleanup(unlock)
	return unlock
}

// migratingServe runs serve on dbURL with startupWait, until the test
// ends, and waits until it waits for the migrations' lock. stop cancels
// it and answers what it returned.
type migrating struct {
	base     string
	stderr   *logbuf.Buffer
	finished chan struct{} // closed once serve returned err
	err      error
	cancel   func()
}

func migratingServe(t *testing.T, dbURL string, startupWait time.Duration) *migrating {
	addr := freeAddr(t)
	s := &migrating{base: "http://" + addr, stderr: &logbuf.Buffer{}, finished: make(chan struct{})}
	var stdout logbuf.Buffer
	env := map[string]string{"DATABASE_URL": dbURL, "C360_ADDR": addr, "C360_SHUTDOWN_TIMEOUT": "5s"}
	m := NewMain(&stdout, s.stderr, func(k string) string { return env[k] })
	m.startupWait = startupWait
	ctx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	go func() {
		defer close(s.finished)
		s.err = m.Run(ctx, []string{"serve"})
	}()
	t.Cleanup(func() {
		if ok, _ := s.stop(); !ok {
			t.Error("serve did not return within 10 s of cancel")
		}
	})
	waitFor(t, "serve waiting for the migrations' lock", func() bool {
		return strings.Contains(s.stderr.String(), "waiting for another process's migration")
	})
	return s
}

// stop cancels serve and answers what it returned; false if it did not
// within 10 s.
func (s *migrating) stop() (bool, error) {
	s.cancel()
	select {
	case <-s.finished:
		return true, s.err
	case <-time.After(10 * time.Second):
		return false, nil
	}
}

// While serve's migrations wait for another process's migration (which
// holds the migrations' lock), its listener answers: /healthz 200, since
// the process is alive and a liveness probe must not kill it, /readyz 503
// saying it migrates; any other request waits for the server and is
// answered by it once it serves, as if it had waited in the listen
// backlog (a restart loses no webhook). Once the lock is released, serve
// migrates and serves: /readyz answers 200.
func TestServeAnswersHealthWhileMigrating(t *testing.T) {
	// A database migrated but for its newest migration: with nothing
	// pending, goose would not take the lock at all; with one, serve is
	// wired soon after the lock is released.
	dbURL := pgtest.EmptyDatabase(t, "startup")
	ctx := context.Background()
	db, err := postgres.Open(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(db.Close) // after the lock's release: Close waits for it
	mig, err := db.NewMigrator()
	if err != nil {
		t.Fatal(err)
	}
	if err := mig.Up(ctx, slog.New(slog.DiscardHandler)); err != nil {
		t.Fatal(err)
	}
	if err := mig.Down(ctx); err != nil {
		t.Fatal(err)
	}
	mig.Close()
	unlock := holdMigrationLock(t, db)

	// The wait covers the lock's poll (5 s) after the release.
	const startupWait = 20 * time.Second
	srv := migratingServe(t, dbURL, startupWait)
	base := srv.base
	client := &http.Client{Timeout: time.Second}
	if status, body := get(client, base+"/healthz"); status != http.StatusOK || body != "ok" {
		t.Errorf("GET /healthz while migrating = %d %q, want 200 ok", status, body)
	}
	if status, body := get(client, base+"/readyz"); status != http.StatusServiceUnavailable || body != "not ready: migrating" {
		t.Errorf("GET /readyz while migrating = %d %q, want 503 not ready: migrating", status, body)
	}

	// A request that comes while the lock is held is answered by the
	// server once it serves (401: no API key), not refused.
	type answered struct {
		status int
		body   string
	}
	waiting := make(chan answered, 1)
	go func() {
		status, _, body := post(&http.Client{Timeout: 2 * startupWait}, base+"/graphql")
		waiting <- answered{status, body}
	}()
	time.Sleep(500 * time.Millisecond)
	select {
	case a := <-waiting:
		t.Fatalf("POST /graphql answered %d %s while the migrations' lock was held, want it to wait", a.status, a.body)
	default:
	}
	unlock()
	select {
	case a := <-waiting:
		if a.status != http.StatusUnauthorized {
			t.Errorf("POST /graphql sent while migrating, answered once serving = %d %s, want 401 from the server", a.status, a.body)
		}
	case <-time.After(2 * startupWait):
		t.Fatal("POST /graphql sent while migrating was not answered once serving")
	}

	waitFor(t, "serve ready", func() bool {
		select {
		case <-srv.finished:
			t.Fatalf("serve ended: %v\nstderr: %s", srv.err, srv.stderr.String())
		default:
		}
		status, _ := get(client, base+"/readyz")
		return status == http.StatusOK
	})
	if status, body := get(client, base+"/healthz"); status != http.StatusOK || body != "ok" {
		t.Errorf("GET /healthz once serving = %d %q, want 200 ok", status, body)
	}
	if ok, err := srv.stop(); ok && err != nil {
		t.Errorf("serve returned %v, want nil", err)
	}
}

// servingBehindAHeldLock starts serve on a new, empty database whose
// migration lock another session holds for the rest of the test, so that
// serve stays migrating, and returns its base URL. Requests wait up to
// startupWait for it.
func servingBehindAHeldLock(t *testing.T, name string, startupWait time.Duration) string {
	t.Helper()
	dbURL := pgtest.EmptyDatabase(t, name)
	db, err := postgres.Open(context.Background(), dbURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(db.Close) // after the lock's release: Close waits for it
	holdMigrationLock(t, db)
	return migratingServe(t, dbURL, startupWait).base
}

// A request that waits for a migrating serve longer than its bound is
// answered 503 with Retry-After in GraphQL's error shape, which GraphQL
// clients read and providers retry on, not held for the whole migration.
func TestServeRefusesWhatWaitsTooLongWhileMigrating(t *testing.T) {
	const startupWait = time.Second
	base := servingBehindAHeldLock(t, "startupwait", startupWait)

	start := time.Now()
	status, header, body := post(&http.Client{Timeout: 10 * startupWait}, base+"/graphql")
	took := time.Since(start)
	if status != http.StatusServiceUnavailable || header.Get("Retry-After") == "" ||
		header.Get("Content-Type") != "application/json" || took < startupWait {
		t.Errorf("POST /graphql while migrating = %d %v %s after %s, want 503 with Retry-After after %s", status, header, body, took, startupWait)
	}
	var answer struct {
		Errors []struct {
			Message    string
			Extensions struct{ Code string }
		}
	}
	if err := json.Unmarshal([]byte(body), &answer); err != nil || len(answer.Errors) != 1 ||
		answer.Errors[0].Extensions.Code != "UNAVAILABLE" || !strings.Contains(answer.Errors[0].Message, "migrating") {
		t.Errorf("POST /graphql while migrating answered %s, want a GraphQL error UNAVAILABLE naming the migration", body)
	}
}

// A client that closes its side for writing while its request waits for
// the server to start (net/http cancels the request's context then, as
// for a client that has gone) is answered 503, not an empty 200.
func TestServeAnswersAHalfClosedClientWhileMigrating(t *testing.T) {
	base := servingBehindAHeldLock(t, "startuphalf", time.Minute)
	conn, err := net.Dial("tcp", strings.TrimPrefix(base, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := io.WriteString(conn, "GET /graphql?query=%7B__typename%7D HTTP/1.1\r\nHost: c360\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond) // the request waits for the server
	conn.(*net.TCPConn).CloseWrite()
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	answer, _ := io.ReadAll(conn)
	if !strings.HasPrefix(string(answer), "HTTP/1.1 503") || !strings.Contains(string(answer), "UNAVAILABLE") {
		t.Errorf("a half-closed client waiting for the start got %q, want a 503 UNAVAILABLE", answer)
	}
}

// With C360_SHUTDOWN_DELAY, SIGTERM first makes /readyz answer 503
// "shutting down" while everything else is still served, so a load
// balancer takes the replica out before its listener closes; then the
// graceful shutdown runs as without it.
func TestServeShutdownDelay(t *testing.T) {
	c := newCLI(t)
	// Long enough for the checks below on a loaded machine: past it, they
	// would find the listener closed and fail on their own.
	const delay = 5 * time.Second
	addr := freeAddr(t)
	var stdout, stderr logbuf.Buffer
	env := map[string]string{"DATABASE_URL": c.env["DATABASE_URL"], "C360_ADDR": addr, "C360_SHUTDOWN_TIMEOUT": "5s",
		"C360_SHUTDOWN_DELAY": delay.String()}
	m := NewMain(&stdout, &stderr, func(k string) string { return env[k] })
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx, []string{"serve", "--no-migrate"}) }()
	base := "http://" + addr
	waitHealthy(t, base, done, &stderr)
	client := &http.Client{Timeout: time.Second}

	start := time.Now()
	cancel()
	waitFor(t, "not ready", func() bool {
		status, _ := get(client, base+"/readyz")
		return status == http.StatusServiceUnavailable
	})
	if status, body := get(client, base+"/readyz"); status != http.StatusServiceUnavailable || body != "not ready: shutting down" {
		t.Errorf("GET /readyz during the delay = %d %q, want 503 not ready: shutting down", status, body)
	}
	// Still served: the health check, and the API (a refusal of its own,
	// not a connection refused).
	if status, body := get(client, base+"/healthz"); status != http.StatusOK || body != "ok" {
		t.Errorf("GET /healthz during the delay = %d %q, want 200 ok", status, body)
	}
	resp, err := client.Post(base+"/graphql", "application/json", strings.NewReader(`{"query":"{ __typename }"}`))
	if err != nil || resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("POST /graphql during the delay = %v %v, want 401 (served)", resp, err)
	}
	if resp != nil {
		resp.Body.Close()
	}
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("serve returned %v, want nil", err)
		}
		if took := time.Since(start); took < delay {
			t.Errorf("serve returned %s after cancel, before the delay %s", took, delay)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("serve did not return within 10 s of cancel")
	}
}

// C360_RESYNC_INTERVAL=off (or 0) turns the periodic resync off: a single
// serve process wakes its hub directly after each of its commits and needs
// no notification. A negative interval, one under 100ms or a word other
// than off is refused naming the setting.
func TestResyncIntervalCanBeTurnedOff(t *testing.T) {
	for _, tc := range []struct {
		value string
		want  time.Duration // 0: refused
	}{
		{"", 5 * time.Second},
		{"2s", 2 * time.Second},
		{"100ms", 100 * time.Millisecond},
		{"off", -1},
		{"0", -1},
		{"0s", -1},
		{"10ms", 0},
		{"-1s", 0},
		{"never", 0},
	} {
		env := map[string]string{"C360_RESYNC_INTERVAL": tc.value}
		var stdout, stderr logbuf.Buffer
		m := NewMain(&stdout, &stderr, func(k string) string { return env[k] })
		rs, err := m.realtimeSettings()
		switch {
		case tc.want == 0 && (err == nil || exitCode(err) != 2 || !strings.Contains(err.Error(), "C360_RESYNC_INTERVAL")):
			t.Errorf("C360_RESYNC_INTERVAL=%q: got %v, %v, want a usage error naming it", tc.value, rs.resyncEvery, err)
		case tc.want != 0 && (err != nil || rs.resyncEvery != tc.want):
			t.Errorf("C360_RESYNC_INTERVAL=%q: got %v, %v, want %v (negative: never)", tc.value, rs.resyncEvery, err, tc.want)
		}
	}
}
