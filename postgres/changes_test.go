package postgres_test

import (
	"context"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/c360dev/c360"
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
	waitUntil(t, func() bool { mu.Lock(); defer mu.Unlock(); return resyncs == 1 })

	// 200 commits within the interval: one statement.
	for i := int64(1); i <= 200; i++ {
		na.Add(1, []int64{i, i + 1000})
	}
	nb.Add(1, []int64{5555}) // the listener's own origin: ignored
	waitUntil(t, func() bool { mu.Lock(); defer mu.Unlock(); return len(woken[1]) >= 400 })
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

func waitUntil(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("timed out")
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
