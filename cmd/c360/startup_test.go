package main

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/pressly/goose/v3/lock"

	"github.com/c360dev/c360/internal/logbuf"
	"github.com/c360dev/c360/internal/pgtest"
	"github.com/c360dev/c360/postgres"
)

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

// While serve's migrations wait for another process's migration (which
// holds the migrations' lock), its listener answers: /healthz 200, since
// the process is alive and a liveness probe must not kill it, /readyz 503
// saying it migrates, the API 503. Once the lock is released, serve
// migrates and serves: /readyz answers 200.
func TestServeAnswersHealthWhileMigrating(t *testing.T) {
	// A database never migrated: with nothing pending, goose would not
	// take the lock at all.
	dbURL := pgtest.EmptyDatabase(t, "startup")
	ctx := context.Background()
	db, err := postgres.Open(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	other, err := db.Pool.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Release()
	if _, err := other.Exec(ctx, "SELECT pg_advisory_lock($1)", lock.DefaultLockID); err != nil {
		t.Fatal(err)
	}
	locked := true
	unlock := func() {
		if locked {
			locked = false
			if _, err := other.Exec(ctx, "SELECT pg_advisory_unlock($1)", lock.DefaultLockID); err != nil {
				t.Fatal(err)
			}
		}
	}
	defer unlock()

	addr := freeAddr(t)
	var stdout, stderr logbuf.Buffer
	env := map[string]string{"DATABASE_URL": dbURL, "C360_ADDR": addr, "C360_SHUTDOWN_TIMEOUT": "5s"}
	m := NewMain(&stdout, &stderr, func(k string) string { return env[k] })
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- m.Run(sctx, []string{"serve"}) }()
	base := "http://" + addr
	client := &http.Client{Timeout: time.Second}

	waitFor(t, "serve waiting for the migrations' lock", func() bool {
		return strings.Contains(stderr.String(), "waiting for another process's migration")
	})
	if status, body := get(client, base+"/healthz"); status != http.StatusOK || body != "ok" {
		t.Errorf("GET /healthz while migrating = %d %q, want 200 ok", status, body)
	}
	if status, body := get(client, base+"/readyz"); status != http.StatusServiceUnavailable || body != "not ready: migrating" {
		t.Errorf("GET /readyz while migrating = %d %q, want 503 not ready: migrating", status, body)
	}
	resp, err := client.Post(base+"/graphql", "application/json", strings.NewReader(`{"query":"{ __typename }"}`))
	if err != nil || resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" {
		t.Errorf("POST /graphql while migrating = %v %v, want 503 with Retry-After", resp, err)
	}
	if resp != nil {
		resp.Body.Close()
	}

	unlock()
	waitFor(t, "serve ready", func() bool {
		select {
		case err := <-done:
			t.Fatalf("serve ended: %v\nstderr: %s", err, stderr.String())
		default:
		}
		status, _ := get(client, base+"/readyz")
		return status == http.StatusOK
	})
	if status, body := get(client, base+"/healthz"); status != http.StatusOK || body != "ok" {
		t.Errorf("GET /healthz once serving = %d %q, want 200 ok", status, body)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("serve returned %v, want nil", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("serve did not return within 10 s of cancel")
	}
}

// With C360_SHUTDOWN_DELAY, SIGTERM first makes /readyz answer 503
// "shutting down" while everything else is still served, so a load
// balancer takes the replica out before its listener closes; then the
// graceful shutdown runs as without it.
func TestServeShutdownDelay(t *testing.T) {
	c := newCLI(t)
	const delay = 1500 * time.Millisecond
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
	if took := time.Since(start); took >= delay {
		t.Fatalf("the checks took %s, longer than the delay: the test proves nothing", took)
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
