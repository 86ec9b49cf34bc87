package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/jackc/pgx/v5"
	"go.uber.org/goleak"

	"github.com/c360dev/c360/internal/logbuf"
	"github.com/c360dev/c360/internal/pgtest"
	"github.com/c360dev/c360/postgres"
)

// On shutdown every websocket is closed with 1001 before the hub stops, so
// no subscription is ended first: a graphql-ws client resubscribes after it
// reconnects, but not to a subscription it was told was complete. The hook
// that closes them runs on a goroutine http.Server.Shutdown does not wait
// for; with many connections the hub stopped while it was still closing
// them, and most subscriptions got an error and complete before their 1001.
func TestServeShutdownClosesWebsocketsBeforeEndingSubscriptions(t *testing.T) {
	c := newCLI(t)
	slug := uniqueSlug("shutws")
	var cr creds
	decodeOne(t, c.mustRun("workspace", "create", "--slug", slug, "--json"), &cr)
	addr := freeAddr(t)
	var stdout, stderr logbuf.Buffer
	env := map[string]string{"DATABASE_URL": c.env["DATABASE_URL"], "C360_ADDR": addr, "C360_SHUTDOWN_TIMEOUT": "10s",
		"C360_RATE_KEY_RPS": "100000", "C360_RATE_KEY_BURST": "100000"}
	m := NewMain(&stdout, &stderr, func(k string) string { return env[k] })
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx, []string{"serve", "--no-migrate"}) }()
	waitHealthy(t, "http://"+addr, done, &stderr)

	const conns = 400
	d := websocket.Dialer{Subprotocols: []string{"graphql-transport-ws"}, HandshakeTimeout: 5 * time.Second}
	// What each connection saw after subscribing: the types of its
	// messages, then its close code (-1: no close frame).
	type seen struct {
		types []string
		code  int
	}
	results := make([]seen, conns)
	var wg sync.WaitGroup
	for i := range conns {
		conn, _, err := d.Dial("ws://"+addr+"/graphql", nil)
		if err != nil {
			t.Fatalf("websocket %d: %v", i, err)
		}
		defer conn.Close()
		conn.WriteJSON(map[string]any{"type": "connection_init", "payload": map[string]any{"authorization": "Bearer " + cr.APIKey}})
		var ack struct{ Type string }
		if err := conn.ReadJSON(&ack); err != nil || ack.Type != "connection_ack" {
			t.Fatalf("connection_init %d: %+v %v", i, ack, err)
		}
		conn.WriteJSON(map[string]any{"id": "1", "type": "subscribe", "payload": map[string]any{
			"query": `subscription { customerChanges { kind } }`}})
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				_, b, err := conn.ReadMessage()
				if err != nil {
					results[i].code = -1
					var ce *websocket.CloseError
					if errors.As(err, &ce) {
						results[i].code = ce.Code
					}
					return
				}
				var msg struct{ Type string }
				json.Unmarshal(b, &msg)
				results[i].types = append(results[i].types, msg.Type)
			}
		}()
	}
	// Every subscription is open before the shutdown starts.
	waitFor(t, "the subscriptions", func() bool {
		resp, err := http.Get("http://" + addr + "/metrics")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		return metricAtLeast(resp, "c360_subscriptions", conns)
	})
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("serve returned %v after cancel, want nil", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatalf("serve did not return within 15 s\nstderr: %s", stderr.String())
	}
	wg.Wait()
	ended, notGoingAway := 0, 0
	for _, r := range results {
		if len(r.types) > 0 {
			ended++
		}
		if r.code != websocket.CloseGoingAway {
			notGoingAway++
		}
	}
	if ended > 0 || notGoingAway > 0 {
		t.Errorf("of %d subscriptions, %d got messages (their end) before the close, and %d closed without 1001", conns, ended, notGoingAway)
	}
}

// waitHealthy waits for a serve started in the background to answer
// /readyz with 200 "ready", failing the test if it ends or does not answer
// within 10 s.
func waitHealthy(t *testing.T, base string, done <-chan error, stderr *logbuf.Buffer) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		// /readyz, not /healthz: /healthz answers while migrations run,
		// before the API is served.
		if resp, err := http.Get(base + "/readyz"); err == nil {
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK && strings.TrimSpace(string(body)) == "ready" {
				return
			}
		}
		select {
		case err := <-done:
			t.Fatalf("serve ended before it answered: %v\nstderr: %s", err, stderr.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("GET /readyz did not answer 200 within 10 s\nstderr: %s", stderr.String())
		}
	}
}

// waitFor polls cond for up to 15 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(15 * time.Second); !cond(); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// metricAtLeast reports whether the Prometheus text in resp has metric at
// least at want.
func metricAtLeast(resp *http.Response, metric string, want float64) bool {
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), metric+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			return err == nil && f >= want
		}
	}
	return false
}

// Settings that would leave the server running wrong are refused at start,
// as usage errors (exit 2) naming the variable: a shutdown deadline that is
// not positive, a region phone numbers are not known by (every national
// number would fail to parse), a public URL without a scheme (every Twilio
// signature would fail), a pool size that is not a number.
func TestBadSettingsRefusedAtStart(t *testing.T) {
	c := newCLI(t)
	for _, tc := range []struct{ name, value string }{
		{"C360_SHUTDOWN_TIMEOUT", "0s"},
		{"C360_SHUTDOWN_TIMEOUT", "-5s"},
		{"C360_BODY_READ_TIMEOUT", "0s"},
		{"C360_SHUTDOWN_DELAY", "-1s"},
		{"C360_SHUTDOWN_DELAY", "2m"},
		{"C360_SHUTDOWN_DELAY", "soon"},
		{"C360_BODY_READ_TIMEOUT", "thirty"},
		{"C360_DEFAULT_REGION", "UK"},
		{"C360_DEFAULT_REGION", "USA"},
		{"C360_PUBLIC_URL", "c360.example.com"},
		{"C360_PUBLIC_URL", "ftp://c360.example.com"},
		{"C360_DB_MAX_CONNS", "abc"},
	} {
		env := map[string]string{"DATABASE_URL": c.env["DATABASE_URL"], "C360_ADDR": freeAddr(t), tc.name: tc.value}
		var stdout, stderr logbuf.Buffer
		m := NewMain(&stdout, &stderr, func(k string) string { return env[k] })
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err := m.Run(ctx, []string{"serve", "--no-migrate"})
		cancel()
		if err == nil || exitCode(err) != 2 || !strings.Contains(err.Error(), tc.name) {
			t.Errorf("%s=%s: serve returned %v (exit %d), want a usage error naming it", tc.name, tc.value, err, exitCode(err))
		}
	}
	// The region is checked in its ISO form, whatever its case.
	c.env["C360_DEFAULT_REGION"] = "gb"
	c.mustRun("migrate", "status")
}

// Every setting is checked before serve opens the database: a bad one
// leaves pending migrations pending, and is named even when the database
// cannot be reached.
func TestBadSettingsRefusedBeforeTheDatabase(t *testing.T) {
	empty := pgtest.EmptyDatabase(t, "badsettings")
	serve := func(dbURL, name, value string) error {
		t.Helper()
		env := map[string]string{"DATABASE_URL": dbURL, "C360_ADDR": freeAddr(t)}
		env[name] = value
		var stdout, stderr logbuf.Buffer
		m := NewMain(&stdout, &stderr, func(k string) string { return env[k] })
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		return m.Run(ctx, []string{"serve"})
	}
	for _, tc := range []struct{ name, value string }{
		{"C360_WS_PING_INTERVAL", "often"},
		{"C360_PUBLIC_URL", "c360.example.com"},
		{"C360_RATE_KEY_RPS", "fast"},
		{"C360_TWILIO_API_URL", "api.twilio.test"},
		{"C360_SUBSCRIBER_QUEUE", "0"},
		{"C360_NOTIFY_INTERVAL", "-1ms"},
		{"C360_RESYNC_INTERVAL", "-1s"},
		{"C360_RESYNC_INTERVAL", "10ms"},
		{"C360_RESYNC_INTERVAL", "never"},
		{"C360_AUDIT_READS", "sync"},
		{"C360_AUDIT_READS", "Assistant"},
		{"C360_ALLOWED_ORIGINS", "console.example.com"},
		{"C360_ADDR", "8080"},
		{"C360_METRICS_ADDR", "9090"},
		{"C360_PPROF_ADDR", "127.0.0.1:99999"},
		{"C360_PPROF_ADDR", "localhost:"},
		{"C360_ADDR", ":nope"},
	} {
		if err := serve(empty, tc.name, tc.value); err == nil || exitCode(err) != 2 || !strings.Contains(err.Error(), tc.name) {
			t.Errorf("%s=%s: serve returned %v (exit %d), want a usage error naming it", tc.name, tc.value, err, exitCode(err))
		}
	}
	// An address in use is found before the database is opened too.
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	if err := serve(empty, "C360_METRICS_ADDR", taken.Addr().String()); err == nil || !strings.Contains(err.Error(), "C360_METRICS_ADDR") {
		t.Errorf("C360_METRICS_ADDR in use: serve returned %v, want an error naming it", err)
	}
	status := (&cli{t: t, env: map[string]string{"DATABASE_URL": empty}}).mustRun("migrate", "status")
	if strings.Contains(status, "applied") || !strings.Contains(status, "pending") {
		t.Errorf("after serve refused its settings, migrate status says:\n%s\nwant every migration pending", status)
	}
	// Nothing listens on port 1: the setting is named, not the database.
	down := "postgres://c360@127.0.0.1:1/c360?sslmode=disable"
	if err := serve(down, "C360_PUBLIC_URL", "c360.example.com"); err == nil || exitCode(err) != 2 || !strings.Contains(err.Error(), "C360_PUBLIC_URL") {
		t.Errorf("with the database down, C360_PUBLIC_URL=c360.example.com: serve returned %v (exit %d), want a usage error naming it", err, exitCode(err))
	}
	if err := serve(down, "C360_ADDR", "8080"); err == nil || exitCode(err) != 2 || !strings.Contains(err.Error(), "C360_ADDR") {
		t.Errorf("with the database down, C360_ADDR=8080: serve returned %v (exit %d), want a usage error naming it", err, exitCode(err))
	}
}

// On shutdown the cross-replica notifications are flushed before the audit
// writer drains: with the audit log locked, the drain waits out the
// deadline, and the commits made before shutdown must still reach other
// replicas' subscribers.
func TestServeFlushesNotificationsBeforeTheAuditDrain(t *testing.T) {
	before := goleak.IgnoreCurrent()
	c := newCLI(t)
	slug := uniqueSlug("shutflush")
	var cr creds
	decodeOne(t, c.mustRun("workspace", "create", "--slug", slug, "--json"), &cr)
	var assistant struct{ APIKey string }
	decodeOne(t, c.mustRun("apikey", "create", "--workspace", slug, "--role", "assistant", "--json"), &assistant)
	ctx := context.Background()
	listener, err := pgx.Connect(ctx, c.env["DATABASE_URL"])
	if err != nil {
		t.Fatal(err)
	}
	defer listener.Close(ctx)
	if _, err := listener.Exec(ctx, "LISTEN "+postgres.ChangesChannel); err != nil {
		t.Fatal(err)
	}
	locker, err := pgx.Connect(ctx, c.env["DATABASE_URL"])
	if err != nil {
		t.Fatal(err)
	}
	defer locker.Close(ctx)

	addr := freeAddr(t)
	var stdout, stderr logbuf.Buffer
	// A notification waits up to 10 s, past the deadline: only the flush
	// at stop sends the one of the commit below (with the usual 5 ms, the
	// notifier's own ticks would send it while the drain waits).
	// The assistant's read is to be queued for the background writer (by
	// default it would wait on the locked log, and be refused).
	env := map[string]string{"DATABASE_URL": c.env["DATABASE_URL"], "C360_ADDR": addr,
		"C360_SHUTDOWN_TIMEOUT": "3s", "C360_NOTIFY_INTERVAL": "10s", "C360_AUDIT_READS": "async"}
	m := NewMain(&stdout, &stderr, func(k string) string { return env[k] })
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- m.Run(sctx, []string{"serve", "--no-migrate"}) }()
	base := "http://" + addr
	waitHealthy(t, base, done, &stderr)

	post := func(key, query string) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodPost, base+"/graphql", strings.NewReader(`{"query":`+strconv.Quote(query)+`}`))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Authorization", "Bearer "+key)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || strings.Contains(string(body), `"errors"`) {
			t.Fatalf("%s: %d %s", query, resp.StatusCode, body)
		}
	}
	// The audit log locked: the assistant's read below is queued for it,
	// and its writer waits.
	tx, err := locker.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	if _, err := tx.Exec(ctx, `LOCK TABLE audit_log IN ACCESS EXCLUSIVE MODE`); err != nil {
		t.Fatal(err)
	}
	post(cr.APIKey, `mutation { identify(input: {identities: [{type: "email", value: "flush@example.com"}]}) { id } }`)
	post(assistant.APIKey, `{ customerByIdentity(type: "email", value: "flush@example.com") { id traits } }`)
	cancel()
	// serve returns at the deadline, with the drain still stuck, and a
	// process exits then: the notification must have been sent by then.
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatalf("serve did not return within 10 s\nstderr: %s", stderr.String())
	}
	wctx, wcancel := context.WithTimeout(ctx, 200*time.Millisecond)
	defer wcancel()
	if _, err := listener.WaitForNotification(wctx); err != nil {
		t.Errorf("no change notification by the time serve returned, with the audit drain stuck: %v", err)
	}
	// A process would exit here; the test's cleanups, unstuck, end before
	// the package's leak check.
	tx.Rollback(ctx)
	goleak.VerifyNone(t, before)
}
