package postgres_test

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/c360dev/c360"
	"github.com/c360dev/c360/internal/logbuf"
	"github.com/c360dev/c360/internal/pgtest"
	"github.com/c360dev/c360/postgres"
)

func TestNotificationPayloads(t *testing.T) {
	pending := map[int64]map[int64]struct{}{7: {}, 9: nil}
	for i := int64(1); i <= 3000; i++ {
		pending[7][1000000+i] = struct{}{}
	}
	payloads := postgres.EncodeNotifications("abc", pending)
	if len(payloads) < 3 {
		t.Fatalf("%d payloads, want the 3000 ids split over several", len(payloads))
	}
	got := map[int64]bool{}
	whole := false
	for _, p := range payloads {
		if len(p) >= 8000 {
			t.Fatalf("payload of %d bytes, want < 8000", len(p))
		}
		n, err := postgres.DecodeNotification(p)
		if err != nil || n.Origin != "abc" {
			t.Fatalf("decode %q: %+v, %v", p[:40], n, err)
		}
		for _, id := range n.Customers[7] {
			got[id] = true
		}
		if ids, ok := n.Customers[9]; ok && ids == nil {
			whole = true
		}
	}
	if len(got) != 3000 || !whole {
		t.Fatalf("decoded %d ids (want 3000), workspace 9 whole: %v", len(got), whole)
	}
	for _, bad := range []string{"", "v2 x 1:2", "v1 x nope", "v1 x 1:a"} {
		if _, err := postgres.DecodeNotification(bad); err == nil {
			t.Errorf("DecodeNotification(%q) succeeded", bad)
		}
	}
}

// Many commits' worth of Add calls go out in one NOTIFY statement, never one
// per event; another replica's listener hears them, its own are ignored.
func TestNotifierBatchesAndListenerWakes(t *testing.T) {
	db := pgtest.Open(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	quiet := slog.New(slog.DiscardHandler)

	// A raw listener counts notifications.
	conn, err := pgx.Connect(ctx, pgtest.URL(t))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, "LISTEN "+postgres.ChangesChannel); err != nil {
		t.Fatal(err)
	}

	var mu sync.Mutex
	woken := map[int64][]int64{}
	resyncs := 0
	l := &postgres.Listener{DB: db, Origin: "replica-b", Logger: quiet,
		Wake: func(ws int64, ids []int64) {
			mu.Lock()
			woken[ws] = append(woken[ws], ids...)
			mu.Unlock()
		},
		Resync: func() { mu.Lock(); resyncs++; mu.Unlock() },
	}
	na := &postgres.Notifier{DB: db, Origin: "replica-a", Interval: 50 * time.Millisecond, Logger: quiet}
	nb := &postgres.Notifier{DB: db, Origin: "replica-b", Interval: 5 * time.Millisecond, Logger: quiet}
	var wg sync.WaitGroup
	for _, run := range []func(context.Context) error{l.Run, na.Run, nb.Run} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			run(ctx)
		}()
	}
	defer func() { cancel(); wg.Wait() }()
	waitUntil(t, "a resync", func() bool { mu.Lock(); defer mu.Unlock(); return resyncs == 1 })

	// 200 commits within the interval: one statement.
	for i := int64(1); i <= 200; i++ {
		na.Add(1, []int64{i, i + 1000})
	}
	nb.Add(1, []int64{5555}) // the listener's own origin: ignored
	waitUntil(t, "400 wakes", func() bool { mu.Lock(); defer mu.Unlock(); return len(woken[1]) >= 400 })
	notes := 0
	for {
		wctx, wcancel := context.WithTimeout(ctx, 300*time.Millisecond)
		_, err := conn.WaitForNotification(wctx)
		wcancel()
		if err != nil {
			break
		}
		notes++
	}
	if notes != 2 { // one from a, one from b
		t.Fatalf("%d notifications for 201 commits, want 2 (one per replica's batch)", notes)
	}
	mu.Lock()
	defer mu.Unlock()
	ids := slices.Clone(woken[1])
	slices.Sort(ids)
	if len(ids) != 400 || ids[0] != 1 || ids[399] != 1200 || slices.Contains(ids, 5555) {
		t.Fatalf("woken with %d ids (%v...), want 400 from replica a and none of its own", len(ids), ids[:min(5, len(ids))])
	}
}

// waitUntil polls cond until it holds, for at most 10 s.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// The feed reads the hub relies on.
func TestChangeFeedReads(t *testing.T) {
	db := pgtest.Open(t)
	ws, _, _ := pgtest.Workspace(t, db)
	ctx := context.Background()
	ingestOne := func(ids []c360.Identity, traits map[string]any) int64 {
		now := time.Now().UTC()
		res, err := db.Ingest(ctx, ws, []*c360.Event{{Type: c360.EventIdentify, Identities: ids, Traits: traits,
			Source: "test", DedupeKey: time.Now().Format(time.RFC3339Nano), OccurredAt: now, ReceivedAt: now}})
		if err != nil {
			t.Fatal(err)
		}
		return res[0].CustomerID
	}
	a := ingestOne([]c360.Identity{{Type: "email", Value: "feed-a@example.com"}}, map[string]any{"x": 1})
	ingestOne([]c360.Identity{{Type: "email", Value: "feed-a@example.com"}}, map[string]any{"x": 2})
	b := ingestOne([]c360.Identity{{Type: "phone", Value: "+14155550177"}}, nil)

	rows, err := db.ChangesAfter(ctx, []c360.Change{{WorkspaceID: ws, CustomerID: a, Version: 0}, {WorkspaceID: ws, CustomerID: b, Version: 0}}, 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != 3 || rows[0].CustomerID != a || rows[1].Version != 2 || rows[2].CustomerID != b {
		t.Fatalf("ChangesAfter = %+v", rows)
	}
	if rows, _ := db.ChangesAfter(ctx, []c360.Change{{WorkspaceID: ws + 1000, CustomerID: a}}, 10); len(rows) != 0 {
		t.Fatalf("another workspace's position read %d rows", len(rows))
	}

	// Merge b into a (or a into b): the survivor's absorbing version.
	ingestOne([]c360.Identity{{Type: "email", Value: "feed-a@example.com"}, {Type: "phone", Value: "+14155550177"}}, nil)
	va, ma, err := db.CustomerState(ctx, ws, a)
	if err != nil {
		t.Fatal(err)
	}
	vb, mb, _ := db.CustomerState(ctx, ws, b)
	survivor, merged, sv := a, b, va
	if ma != 0 {
		survivor, merged, sv = b, a, vb
	}
	if ma+mb != survivor {
		t.Fatalf("merged_into a=%d b=%d, want exactly one pointing at the other", ma, mb)
	}
	v, err := db.MergeVersion(ctx, ws, survivor, merged)
	if err != nil || v != sv {
		t.Fatalf("MergeVersion = %d, %v, want %d (the survivor's merge change)", v, err, sv)
	}
	if _, _, err := db.CustomerState(ctx, ws+1000, a); c360.ErrorCode(err) != c360.ENOTFOUND {
		t.Fatalf("CustomerState in another workspace: %v, want NOT_FOUND", err)
	}
	m, err := db.VersionsBefore(ctx, ws, []int64{a, b}, time.Now().Add(time.Hour))
	if err != nil || m[a] != va || m[b] != vb {
		t.Fatalf("VersionsBefore = %v, %v, want a:%d b:%d", m, err, va, vb)
	}
}

// The listener's reconnect backoff doubles while the database stays
// unreachable, up to MaxBackoff, and starts over at MinBackoff once a
// connection has listened for a while: a later outage is a new one. A
// connection dropped as soon as it listens does not start it over.
func TestListenerBackoffStartsOverAfterAReconnect(t *testing.T) {
	const minBackoff, maxBackoff = 50 * time.Millisecond, 400 * time.Millisecond
	proxy := startProxy(t, pgtest.URL(t))
	db, err := postgres.Open(context.Background(), proxy.url)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()

	steps := &timeline{}
	var dropOnListen atomic.Bool
	l := &postgres.Listener{DB: db, Origin: "replica-b", Logger: slog.New(steps),
		MinBackoff: minBackoff, MaxBackoff: maxBackoff,
		Resync: func() {
			steps.add("listening")
			if dropOnListen.Load() {
				proxy.setUp(false)
			}
		},
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { l.Run(ctx) })
	defer wg.Wait()
	defer cancel()

	// The database is unreachable: the waits double, then stay at the maximum.
	got := steps.waitFor(t, func(s []string) bool { return len(s) >= 5 })
	if want := []string{"wait 50ms", "wait 100ms", "wait 200ms", "wait 400ms", "wait 400ms"}; !slices.Equal(got[:5], want) {
		t.Fatalf("steps = %v, want %v", got, want)
	}

	// It answers again; the listener listens for longer than MaxBackoff,
	// then loses its connection (and cannot connect for a while): the waits
	// start over from the first.
	proxy.setUp(true)
	steps.waitFor(t, func(s []string) bool { return slices.Contains(s, "listening") })
	time.Sleep(2 * maxBackoff)
	proxy.setUp(false)
	got = steps.waitFor(t, func(s []string) bool { return len(s) >= slices.Index(s, "listening")+3 })
	i := slices.Index(got, "listening")
	if after := got[i+1 : i+3]; !slices.Equal(after, []string{"wait 50ms", "wait 100ms"}) {
		t.Fatalf("steps after a connection that listened for %s: %v, want [wait 50ms wait 100ms] (all: %v)", 2*maxBackoff, after, got)
	}

	// A connection lost as soon as it listens is the same outage going on:
	// the wait keeps growing.
	dropOnListen.Store(true)
	proxy.setUp(true)
	got = steps.waitFor(t, func(s []string) bool {
		j := lastIndex(s, "listening")
		return j > i && len(s) > j+1
	})
	j := lastIndex(got, "listening")
	before, _ := time.ParseDuration(strings.TrimPrefix(got[j-1], "wait "))
	if after, want := got[j+1], fmt.Sprintf("wait %s", min(2*before, maxBackoff)); after != want {
		t.Fatalf("step after a connection dropped at once: %s, want %s (all: %v)", after, want, got)
	}
}

// A listener whose connection goes silent (a path that died without a
// reset: a failover, a dropped route) notices at its next health check,
// within HealthTimeout, and listens again on a new connection, which
// resyncs: its subscribers do not go without other replicas' changes until
// TCP gives up.
func TestListenerReconnectsFromASilentConnection(t *testing.T) {
	proxy := startProxy(t, pgtest.URL(t))
	proxy.setUp(true)
	db, err := postgres.Open(context.Background(), proxy.url)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var resyncs atomic.Int64
	l := &postgres.Listener{DB: db, Origin: "replica-s", Logger: slog.New(slog.DiscardHandler),
		HealthInterval: 100 * time.Millisecond, HealthTimeout: 300 * time.Millisecond, MinBackoff: 50 * time.Millisecond,
		Resync: func() { resyncs.Add(1) }}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { l.Run(ctx) })
	defer wg.Wait()
	defer cancel()
	for deadline := time.Now().Add(5 * time.Second); resyncs.Load() < 1; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the listener did not listen")
		}
	}
	proxy.muteOpen()
	for deadline := time.Now().Add(5 * time.Second); resyncs.Load() < 2; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("5 s after its connection went silent, the listener has not listened again")
		}
	}
}

func lastIndex(s []string, v string) int {
	for i := len(s) - 1; i >= 0; i-- {
		if s[i] == v {
			return i
		}
	}
	return -1
}

// timeline records what a listener did, in order: "wait <d>" for each
// reconnect it announces in its log, and what the test adds. It is the
// listener's slog.Handler.
type timeline struct {
	mu    sync.Mutex
	steps []string
}

func (tl *timeline) add(step string) {
	tl.mu.Lock()
	defer tl.mu.Unlock()
	tl.steps = append(tl.steps, step)
}

// waitFor returns the steps once cond holds for them.
func (tl *timeline) waitFor(t *testing.T, cond func([]string) bool) []string {
	t.Helper()
	var got []string
	waitUntil(t, "the timeline's steps", func() bool {
		tl.mu.Lock()
		defer tl.mu.Unlock()
		got = slices.Clone(tl.steps)
		return cond(got)
	})
	return got
}

func (tl *timeline) Enabled(context.Context, slog.Level) bool { return true }
func (tl *timeline) WithAttrs([]slog.Attr) slog.Handler       { return tl }
func (tl *timeline) WithGroup(string) slog.Handler            { return tl }
func (tl *timeline) Handle(_ context.Context, r slog.Record) error {
	r.Attrs(func(a slog.Attr) bool {
		if a.Key == "in" {
			tl.add("wait " + a.Value.String())
		}
		return true
	})
	return nil
}

// proxy forwards TCP connections to PostgreSQL while it is up. While down
// it has dropped every connection it forwarded and closes each new one at
// once, as a database that is restarting would.
type proxy struct {
	url     string // the test database's URL, through the proxy
	ln      net.Listener
	network string
	addr    string
	wg      sync.WaitGroup

	mu   sync.Mutex
	up   bool
	open []net.Conn
	// mute, one per forwarded connection: set, it swallows what either
	// side sends, as a path that went dead without a reset does.
	mute []*atomic.Bool
}

// startProxy starts a proxy, down, to the database at dbURL.
func startProxy(t *testing.T, dbURL string) *proxy {
	t.Helper()
	cfg, err := pgconn.ParseConfig(dbURL)
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{network: "tcp", addr: net.JoinHostPort(cfg.Host, strconv.Itoa(int(cfg.Port)))}
	if strings.HasPrefix(cfg.Host, "/") {
		p.network, p.addr = "unix", fmt.Sprintf("%s/.s.PGSQL.%d", cfg.Host, cfg.Port)
	}
	if p.ln, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	u, err := url.Parse(dbURL)
	if err != nil {
		t.Fatal(err)
	}
	q := u.Query()
	q.Del("host")
	u.Host, u.RawQuery = p.ln.Addr().String(), q.Encode()
	p.url = u.String()
	p.wg.Go(p.accept)
	t.Cleanup(func() {
		p.ln.Close()
		p.setUp(false)
		p.wg.Wait()
	})
	return p
}

func (p *proxy) accept() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return // closed
		}
		s, err := net.Dial(p.network, p.addr)
		if err != nil {
			c.Close()
			continue
		}
		p.mu.Lock()
		if !p.up {
			p.mu.Unlock()
			c.Close()
			s.Close()
			continue
		}
		mute := new(atomic.Bool)
		p.open = append(p.open, c, s)
		p.mute = append(p.mute, mute)
		p.mu.Unlock()
		for _, pair := range [][2]net.Conn{{c, s}, {s, c}} {
			p.wg.Go(func() {
				buf := make([]byte, 32<<10)
				for {
					n, err := pair[1].Read(buf)
					if n > 0 && !mute.Load() {
						if _, err := pair[0].Write(buf[:n]); err != nil {
							break
						}
					}
					if err != nil {
						break
					}
				}
				pair[0].Close()
				pair[1].Close()
			})
		}
	}
}

// muteOpen makes every connection open now swallow what it is sent, and
// answer nothing, without closing it; later connections work.
func (p *proxy) muteOpen() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, m := range p.mute {
		m.Store(true)
	}
}

// setUp lets connections through, or drops every open one and refuses the
// next ones.
func (p *proxy) setUp(up bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.up = up
	if !up {
		for _, c := range p.open {
			c.Close()
		}
		p.open = nil
	}
}

// A NOTIFY that fails (here: its context ended) keeps its batch pending,
// and the next flush sends it: other replicas still hear of those changes.
func TestNotifierKeepsAFailedBatch(t *testing.T) {
	db := pgtest.Open(t)
	ctx := context.Background()
	conn, err := db.Pool.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Release()
	if _, err := conn.Exec(ctx, "LISTEN "+postgres.ChangesChannel); err != nil {
		t.Fatal(err)
	}
	n := &postgres.Notifier{DB: db, Origin: "replica-f", Logger: slog.New(slog.DiscardHandler)}
	n.Add(7, []int64{11, 12})
	failed, cancel := context.WithCancel(ctx)
	cancel()
	if n.FlushNow(failed) {
		t.Fatal("a flush with an ended context reported success")
	}
	if pairs, whole := n.PendingCount(); pairs != 2 || whole {
		t.Fatalf("after the failed flush: %d pairs pending (whole %v), want the 2 again", pairs, whole)
	}
	// A workspace past MaxPending waits whole, and stays whole through a
	// failed flush.
	whole := &postgres.Notifier{DB: db, Origin: "replica-g", MaxPending: 2, Logger: slog.New(slog.DiscardHandler)}
	whole.Add(8, []int64{1, 2, 3})
	if whole.FlushNow(failed) {
		t.Fatal("a flush with an ended context reported success")
	}
	if pairs, w := whole.PendingCount(); pairs != 0 || !w {
		t.Fatalf("after a failed flush of a whole workspace: %d pairs (whole %v), want the workspace whole", pairs, w)
	}

	n.Add(7, []int64{13})
	if !n.FlushNow(ctx) {
		t.Fatal("the retry failed")
	}
	wctx, wcancel := context.WithTimeout(ctx, 5*time.Second)
	defer wcancel()
	note, err := conn.Conn().WaitForNotification(wctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"11", "12", "13"} {
		if !strings.Contains(note.Payload, id) || !strings.Contains(note.Payload, "replica-f 7:") {
			t.Errorf("payload %q, want workspace 7 with customers 11, 12 and 13", note.Payload)
		}
	}
}

// A notifier whose last flush, at stop, fails says how many customers'
// changes other replicas were not told of (their hubs find them at their
// next periodic resync), as counts: no customer id is logged.
func TestNotifierLogsWhatItsLastFlushLost(t *testing.T) {
	proxy := startProxy(t, pgtest.URL(t)) // down: every statement fails
	db, err := postgres.Open(context.Background(), proxy.url)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var log logbuf.Buffer
	n := &postgres.Notifier{DB: db, Origin: "replica-l", Interval: time.Hour, MaxPending: 3,
		Logger: slog.New(slog.NewJSONHandler(&log, nil))}
	n.Add(7, []int64{987654321, 987654322})
	n.Add(8, []int64{987654323, 987654324, 987654325, 987654326}) // past MaxPending: workspace 8 whole
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); n.Run(ctx) }()
	cancel()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("the notifier did not stop")
	}
	out := log.String()
	if !strings.Contains(out, "not sent at stop") || !strings.Contains(out, `"customers":2`) ||
		!strings.Contains(out, `"whole_workspaces":1`) {
		t.Fatalf("log after a failed last flush:\n%s\nwant the 2 customers and 1 whole workspace not notified", out)
	}
	if strings.Contains(out, "98765432") {
		t.Fatalf("log names customer ids:\n%s", out)
	}
}
