package faults

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/jackc/pgx/v5"

	"github.com/c360dev/c360/identity"
	"github.com/c360dev/c360/postgres"
)

// On SIGTERM, c360 stops accepting connections, closes websockets with 1001
// (clients reconnect elsewhere and resume with their cursor), lets in-flight
// requests finish — here, Twilio webhooks and a Segment batch held up on a
// lock the test holds — and stores them, flushes the cross-replica
// notifications of their commits, and exits 0 well within
// C360_SHUTDOWN_TIMEOUT.
func TestGracefulShutdown(t *testing.T) {
	c := StartCluster(t)
	a := newApp(t, c)
	// A long notify interval: the commits of the in-flight requests are still
	// waiting to be announced when the process stops, so only the flush at
	// stop can announce them.
	srv := a.serve(t, "C360_SHUTDOWN_TIMEOUT=10s", "C360_NOTIFY_INTERVAL=1s")
	client := newClient(32)
	ctx := context.Background()

	seed := newDelivery("shutseed", 0, "hello")
	phone := seed.form.Get("From")
	if r := a.deliver(client, seed); r.status != http.StatusOK {
		t.Fatalf("seed delivery: %d %v", r.status, r.err)
	}
	var found struct {
		CustomerByIdentity struct{ ID string } `json:"customerByIdentity"`
	}
	if errs := a.graphql(t, a.apiKey, `query($v: String!) { customerByIdentity(type: "phone", value: $v) { id } }`,
		map[string]any{"v": phone}, &found); len(errs) > 0 || found.CustomerByIdentity.ID == "" {
		t.Fatalf("customerByIdentity: %+v", errs)
	}
	customer := found.CustomerByIdentity.ID
	closed := subscribe(t, a, customer)
	notified := listen(t, a)

	// Hold the phone's identity lock: ingest of anything naming it waits.
	lock := a.conn(t)
	key := identity.Key(a.ws, identity.Identity{Type: identity.TypePhone, Value: phone})
	if _, err := lock.Exec(ctx, `SELECT pg_advisory_lock($1)`, key); err != nil {
		t.Fatal(err)
	}
	var (
		wg       sync.WaitGroup
		inflight []delivery
		results  = make([]result, 10)
		batch    int
	)
	for i := range results {
		d := newDelivery("shutdown", i*25, "in flight at SIGTERM") // i*25: the seed's phone
		inflight = append(inflight, d)
		wg.Add(1)
		go func() { defer wg.Done(); results[i] = a.deliver(client, d) }()
	}
	wg.Add(1)
	go func() { defer wg.Done(); batch = a.segmentBatch(t, phone, 100) }()
	waitForLockWaiters(t, a, 1)

	term := time.Now()
	srv.signal(syscall.SIGTERM)

	select {
	case code := <-closed:
		if code != websocket.CloseGoingAway {
			t.Errorf("websocket closed with %d, want %d (going away)", code, websocket.CloseGoingAway)
		}
		t.Logf("websocket closed with %d %s after SIGTERM", code, time.Since(term).Round(time.Millisecond))
	case <-time.After(3 * time.Second):
		t.Errorf("websocket not closed within 3 s of SIGTERM")
	}
	refusedAfter := time.Duration(-1)
	for deadline := time.Now().Add(2 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		conn, err := net.DialTimeout("tcp", a.addr, time.Second)
		if err == nil {
			conn.Close()
			continue
		}
		if errors.Is(err, syscall.ECONNREFUSED) {
			refusedAfter = time.Since(term)
			break
		}
	}
	if refusedAfter < 0 {
		t.Errorf("new connections still accepted 2 s after SIGTERM")
	} else {
		t.Logf("new connections refused %s after SIGTERM", refusedAfter.Round(time.Millisecond))
	}

	// The requests in flight are still waiting; let them go.
	time.Sleep(time.Until(term.Add(1500 * time.Millisecond)))
	released := time.Now()
	if _, err := lock.Exec(ctx, `SELECT pg_advisory_unlock($1)`, key); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	for i, r := range results {
		if r.status != http.StatusOK {
			t.Errorf("in-flight delivery %s: %d %v, want 200", inflight[i].sid, r.status, r.err)
		}
	}
	if batch != http.StatusOK {
		t.Errorf("in-flight Segment batch: %d, want 200", batch)
	}
	code, exited := srv.wait(10 * time.Second)
	took := time.Since(term)
	if !exited {
		t.Fatalf("still running 10 s after SIGTERM (C360_SHUTDOWN_TIMEOUT=10s)")
	}
	if code != 0 {
		t.Errorf("exit code %d, want 0", code)
	}
	t.Logf("exited %d %s after SIGTERM (in-flight requests released at 1.5 s)", code, took.Round(time.Millisecond))

	events, messages := a.stored(t)
	for _, d := range inflight {
		if events[d.sid] != 1 || messages[d.sid] != 1 {
			t.Errorf("in-flight %s stored %d/%d times, want 1", d.sid, events[d.sid], messages[d.sid])
		}
	}
	var segment int
	if err := a.conn(t).QueryRow(ctx, `SELECT count(*) FROM events WHERE workspace_id = $1 AND source = 'segment'`, a.ws).Scan(&segment); err != nil {
		t.Fatal(err)
	}
	if segment != 101 {
		t.Errorf("Segment events stored = %d, want the batch's 101", segment)
	}

	// The in-flight commits happened after SIGTERM, when the lock was
	// released; other replicas hear of them.
	timeout := time.After(3 * time.Second)
	for heard := false; !heard; {
		select {
		case n := <-notified:
			if n.at.After(released) && slices.Contains(n.customers, customer) {
				heard = true
				t.Logf("change notification for customer %s heard %s after the in-flight requests were released",
					customer, n.at.Sub(released).Round(time.Millisecond))
			}
		case <-timeout:
			t.Errorf("no change notification for customer %s after the in-flight commits: the pending notifications were not flushed at stop", customer)
			heard = true
		}
	}
}

// A request stuck on the database (a lock wait) and one stuck sending its
// body cannot hold the process past C360_SHUTDOWN_TIMEOUT: it exits by the
// deadline, non-zero, and the stuck webhook is not answered 2xx (Twilio
// retries it).
func TestShutdownDeadline(t *testing.T) {
	c := StartCluster(t)
	a := newApp(t, c)
	srv := a.serve(t, "C360_SHUTDOWN_TIMEOUT=2s")
	client := newClient(4)
	ctx := context.Background()

	d := newDelivery("stuck", 0, "stuck behind a lock")
	lock := a.conn(t)
	key := identity.Key(a.ws, identity.Identity{Type: identity.TypePhone, Value: d.form.Get("From")})
	if _, err := lock.Exec(ctx, `SELECT pg_advisory_lock($1)`, key); err != nil {
		t.Fatal(err)
	}
	stuck := make(chan result, 1)
	go func() { stuck <- a.deliver(client, d) }()
	waitForLockWaiters(t, a, 1)
	slow, err := net.Dial("tcp", a.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer slow.Close()
	fmt.Fprintf(slow, "POST /v1/track HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"userId\":", a.addr)

	term := time.Now()
	srv.signal(syscall.SIGTERM)
	code, exited := srv.wait(4 * time.Second)
	took := time.Since(term)
	if !exited {
		t.Fatalf("still running 4 s after SIGTERM with C360_SHUTDOWN_TIMEOUT=2s")
	}
	t.Logf("exited %d %s after SIGTERM with a request stuck on a lock and one stuck sending its body", code, took.Round(time.Millisecond))
	if took > 2500*time.Millisecond {
		t.Errorf("exit %s after SIGTERM, want within the 2 s deadline", took)
	}
	if code == 0 {
		t.Errorf("exit code 0, want non-zero: requests were cut off at the deadline")
	}
	if !strings.Contains(srv.log.String(), "requests still in flight at the deadline") {
		t.Errorf("the log does not say that requests were cut off")
	}
	r := <-stuck
	if r.status == http.StatusOK {
		t.Errorf("the stuck delivery was answered 200")
	}
	if _, err := lock.Exec(ctx, `SELECT pg_advisory_unlock($1)`, key); err != nil {
		t.Fatal(err)
	}
	events, _ := a.stored(t)
	t.Logf("the stuck delivery got %d (%v); stored %d times (its transaction died with the process; Twilio's retry stores it)",
		r.status, r.err, events[d.sid])
}

// subscribe opens a graphql-transport-ws subscription to the customer's
// changes and returns a channel that receives the close code.
func subscribe(t *testing.T, a *app, customer string) <-chan int {
	t.Helper()
	d := websocket.Dialer{Subprotocols: []string{"graphql-transport-ws"}, HandshakeTimeout: 5 * time.Second}
	conn, _, err := d.Dial("ws://"+a.addr+"/graphql", nil)
	if err != nil {
		t.Fatalf("websocket: %v", err)
	}
	t.Cleanup(func() { conn.Close() })
	send := func(v any) {
		if err := conn.WriteJSON(v); err != nil {
			t.Fatalf("websocket write: %v", err)
		}
	}
	send(map[string]any{"type": "connection_init", "payload": map[string]any{"authorization": "Bearer " + a.apiKey}})
	var ack struct{ Type string }
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	if err := conn.ReadJSON(&ack); err != nil || ack.Type != "connection_ack" {
		t.Fatalf("connection_init: %+v %v", ack, err)
	}
	conn.SetReadDeadline(time.Time{})
	send(map[string]any{"id": "1", "type": "subscribe", "payload": map[string]any{
		"query":     `subscription($id: ID!) { customerChanged(id: $id) { cursor kind version } }`,
		"variables": map[string]any{"id": customer},
	}})
	// The close code, -1 for no close frame, -2 when the subscription was
	// ended (complete or error) before the close: a graphql-ws client would
	// not subscribe again after it reconnects.
	closed := make(chan int, 1)
	go func() {
		for {
			_, b, err := conn.ReadMessage()
			if err != nil {
				var ce *websocket.CloseError
				if errors.As(err, &ce) {
					closed <- ce.Code
				} else {
					closed <- -1
				}
				return
			}
			var m struct{ Type string }
			if json.Unmarshal(b, &m) == nil && (m.Type == "complete" || m.Type == "error") {
				closed <- -2
				return
			}
		}
	}()
	return closed
}

// notification is a change notification heard on the database.
type notification struct {
	at        time.Time
	customers []string
}

// listen LISTENs on the change channel, as another replica does, and
// returns what it hears.
func listen(t *testing.T, a *app) <-chan notification {
	t.Helper()
	conn, err := pgx.Connect(context.Background(), a.dbURL)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(context.Background(), "LISTEN "+postgres.ChangesChannel); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	out := make(chan notification, 1024)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			n, err := conn.WaitForNotification(ctx)
			if err != nil {
				return
			}
			dec, err := postgres.DecodeNotification(n.Payload)
			if err != nil {
				continue
			}
			var ids []string
			for _, cs := range dec.Customers {
				for _, c := range cs {
					ids = append(ids, fmt.Sprint(c))
				}
			}
			out <- notification{at: time.Now(), customers: ids}
		}
	}()
	t.Cleanup(func() {
		cancel()
		<-done
		conn.Close(context.Background())
	})
	return out
}

// waitForLockWaiters waits until n transactions wait on an advisory lock.
func waitForLockWaiters(t *testing.T, a *app, n int) {
	t.Helper()
	conn := a.conn(t)
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		var waiting int
		if err := conn.QueryRow(context.Background(),
			`SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted`).Scan(&waiting); err != nil {
			t.Fatal(err)
		}
		if waiting >= n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no ingest waits on the lock after 5 s")
		}
	}
}

// segmentBatch posts a Segment batch of n track calls and an identify
// that names phone, and returns the status.
func (a *app) segmentBatch(t *testing.T, phone string, n int) int {
	calls := []any{map[string]any{"type": "identify", "anonymousId": "shutdown-anon", "traits": map[string]any{"phone": phone},
		"messageId": "shutdown-identify"}}
	for i := range n {
		calls = append(calls, map[string]any{"type": "track", "userId": fmt.Sprintf("shutdown-u%d", i), "event": "Slow Batch",
			"messageId": fmt.Sprintf("shutdown-%d", i)})
	}
	body, _ := json.Marshal(map[string]any{"batch": calls})
	req, _ := http.NewRequest(http.MethodPost, a.base()+"/v1/batch", bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Basic "+base64.StdEncoding.EncodeToString([]byte(a.writeKey+":")))
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Errorf("Segment batch: %v", err)
		return 0
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	if res.StatusCode != http.StatusOK {
		t.Logf("Segment batch: %d %s", res.StatusCode, b)
	}
	return res.StatusCode
}
