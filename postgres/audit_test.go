package postgres_test

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/c360dev/c360"
	"github.com/c360dev/c360/internal/logbuf"
	"github.com/c360dev/c360/internal/pgtest"
	"github.com/c360dev/c360/postgres"
)

// noLeaks checks, after the test and its cleanups, that it left no
// goroutine running (the writers' included).
func noLeaks(t *testing.T) {
	opt := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, opt) })
}

func auditCount(t *testing.T, db *postgres.DB, ws int64) int {
	t.Helper()
	var n int
	if err := db.Pool.QueryRow(context.Background(), `SELECT count(*) FROM audit_log WHERE workspace_id = $1`, ws).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func TestRecordAndFindAudit(t *testing.T) {
	db := pgtest.Open(t)
	ctx := context.Background()
	wsA, _, _ := pgtest.Workspace(t, db)
	wsB, _, _ := pgtest.Workspace(t, db)
	p := &c360.Principal{WorkspaceID: wsA, KeyID: 7, KeyPrefix: "abcdefabcdef", Role: c360.RoleAgent}
	base := time.Date(2025, 5, 1, 12, 0, 0, 0, time.UTC)
	var entries []*c360.AuditEntry
	for i := 0; i < 5; i++ {
		e := c360.NewAuditEntry(p, wsA, c360.AuditPIIRead, base.Add(time.Duration(i)*time.Minute))
		e.CustomerID = int64(100 + i%2)
		e.Fields = []string{"identity.email", fmt.Sprintf("traits.f%d", i)}
		e.Detail = map[string]any{"operation": "Q"}
		entries = append(entries, e)
	}
	cli := c360.NewAuditEntry(nil, wsB, c360.AuditAPIKeyRevoke, base)
	cli.Detail = map[string]any{"prefix": "0123456789ab"}
	// One batch across workspaces, as the background writer sends it.
	if err := db.RecordAudit(ctx, append(entries, cli)); err != nil {
		t.Fatal(err)
	}

	got, cursors, more, err := db.FindAuditEntries(ctx, wsA, c360.AuditFilter{First: 10})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 5 || more || len(cursors) != 5 {
		t.Fatalf("entries of A = %d (more %v), want 5", len(got), more)
	}
	first := got[0]
	if !first.At.Equal(base.Add(4*time.Minute)) || first.Actor != "key abcdefabcdef" || first.KeyID != 7 ||
		first.Role != c360.RoleAgent || first.CustomerID != 100 || fmt.Sprint(first.Fields) != "[identity.email traits.f4]" ||
		first.Detail["operation"] != "Q" {
		t.Errorf("newest entry = %+v", first)
	}
	// Filters and pages.
	byCustomer, _, _, err := db.FindAuditEntries(ctx, wsA, c360.AuditFilter{First: 10, CustomerID: 101})
	if err != nil || len(byCustomer) != 2 {
		t.Errorf("customer 101 entries = %d (%v), want 2", len(byCustomer), err)
	}
	byAction, _, _, err := db.FindAuditEntries(ctx, wsA, c360.AuditFilter{First: 10, Action: c360.AuditCustomerMerge})
	if err != nil || len(byAction) != 0 {
		t.Errorf("merge entries = %d (%v), want 0", len(byAction), err)
	}
	page1, cur, more, err := db.FindAuditEntries(ctx, wsA, c360.AuditFilter{First: 3})
	if err != nil || len(page1) != 3 || !more {
		t.Fatalf("page 1 = %d more %v (%v)", len(page1), more, err)
	}
	page2, _, more, err := db.FindAuditEntries(ctx, wsA, c360.AuditFilter{First: 3, After: cur[2]})
	if err != nil || len(page2) != 2 || more || page2[0].ID != got[3].ID {
		t.Errorf("page 2 = %+v more %v (%v), want the last two", page2, more, err)
	}
	// Workspace B sees only its own entry: the command line's.
	b, _, _, err := db.FindAuditEntries(ctx, wsB, c360.AuditFilter{First: 10})
	if err != nil || len(b) != 1 || b[0].Actor != c360.ActorCLI || b[0].KeyID != 0 || b[0].Role != "" || b[0].CustomerID != 0 {
		t.Errorf("entries of B = %+v (%v), want one by cli", b, err)
	}
	for _, f := range []c360.AuditFilter{{First: 0}, {First: 101}, {First: 5, After: "nope"}} {
		if _, _, _, err := db.FindAuditEntries(ctx, wsA, f); c360.ErrorCode(err) != c360.EINVALID {
			t.Errorf("FindAuditEntries(%+v) = %v, want BAD_USER_INPUT", f, err)
		}
	}
}

// The audit log of a customer follows merges, as its events do: after B
// is merged into A, A's entries include those recorded for B, and B's id
// resolves to A. Another customer's entries stay out, and an id no
// customer has (an erased one's) still finds its own.
func TestAuditOfACustomerFollowsMerges(t *testing.T) {
	db := pgtest.Open(t)
	ctx := context.Background()
	ws, _, _ := pgtest.Workspace(t, db)
	a := ingest1(t, db, ws, track("a", ids("email", "a@example.com"))).CustomerID
	b := ingest1(t, db, ws, track("b", ids("email", "b@example.com"))).CustomerID
	c := ingest1(t, db, ws, track("c", ids("email", "c@example.com"))).CustomerID
	gone := c + 1_000
	p := &c360.Principal{WorkspaceID: ws, KeyID: 7, KeyPrefix: "abcdefabcdef", Role: c360.RoleAgent}
	base := time.Date(2025, 5, 1, 12, 0, 0, 0, time.UTC)
	var entries []*c360.AuditEntry
	for i, id := range []int64{a, b, c, gone, b, a} {
		e := c360.NewAuditEntry(p, ws, c360.AuditPIIRead, base.Add(time.Duration(i)*time.Minute))
		e.CustomerID = id
		entries = append(entries, e)
	}
	if err := db.RecordAudit(ctx, entries); err != nil {
		t.Fatal(err)
	}
	if _, err := db.MergeCustomers(ctx, ws, a, b, true, "key ad0000000001", "same person"); err != nil {
		t.Fatal(err)
	}
	customers := func(f c360.AuditFilter) []int64 {
		t.Helper()
		got, _, _, err := db.FindAuditEntries(ctx, ws, f)
		if err != nil {
			t.Fatal(err)
		}
		var out []int64
		for _, e := range got {
			out = append(out, e.CustomerID)
		}
		return out
	}
	ab := fmt.Sprint([]int64{a, b, b, a}) // newest first
	for _, id := range []int64{a, b} {
		if got := customers(c360.AuditFilter{First: 10, CustomerID: id}); fmt.Sprint(got) != ab {
			t.Errorf("entries of customer %d = %v, want %s (survivor %d, merged %d)", id, got, ab, a, b)
		}
	}
	if got := customers(c360.AuditFilter{First: 10, CustomerID: c}); fmt.Sprint(got) != fmt.Sprint([]int64{c}) {
		t.Errorf("entries of customer %d = %v, want its one", c, got)
	}
	if got := customers(c360.AuditFilter{First: 10, CustomerID: gone}); fmt.Sprint(got) != fmt.Sprint([]int64{gone}) {
		t.Errorf("entries of customer %d, which no row holds = %v, want its one", gone, got)
	}
	if got := customers(c360.AuditFilter{First: 10, CustomerID: b, Action: c360.AuditCustomerRead}); len(got) != 0 {
		t.Errorf("customer.read entries of customer %d = %v, want none", b, got)
	}
	// Pages of the merged customers' entries end where the next begin.
	var paged []int64
	f := c360.AuditFilter{First: 1, CustomerID: b}
	for range 5 {
		got, cursors, more, err := db.FindAuditEntries(ctx, ws, f)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range got {
			paged = append(paged, e.CustomerID)
		}
		if !more {
			break
		}
		f.After = cursors[len(cursors)-1]
	}
	if fmt.Sprint(paged) != ab {
		t.Errorf("entries of customer %d in pages of 1 = %v, want %s", b, paged, ab)
	}
}

// Entries of several workspaces are written in one round trip, all or
// none: an entry the database refuses (a workspace that does not exist)
// leaves the others unwritten too.
func TestRecordAuditIsOneRoundTripAllOrNone(t *testing.T) {
	counter := &pgtest.StatementCounter{}
	db := pgtest.Open(t, counter.Install)
	ctx := context.Background()
	wsA, _, _ := pgtest.Workspace(t, db)
	wsB, _, _ := pgtest.Workspace(t, db)
	at := time.Now()
	entries := []*c360.AuditEntry{c360.NewAuditEntry(nil, wsB, c360.AuditAPIKeyRevoke, at),
		c360.NewAuditEntry(nil, wsA, c360.AuditAPIKeyRevoke, at), c360.NewAuditEntry(nil, wsA, c360.AuditAPIKeyCreate, at)}
	if err := db.RecordAudit(ctx, entries); err != nil { // the pool's connection is made
		t.Fatal(err)
	}
	counter.Reset()
	if err := db.RecordAudit(ctx, entries); err != nil {
		t.Fatal(err)
	}
	if trips, n := counter.RoundTrips(), counter.Count(); trips != 1 || n != 2 {
		t.Errorf("%d round trips, %d statements, want 1 and 2 (an insert per workspace):\n%s", trips, n, counter.Statements())
	}
	if a, b := auditCount(t, db, wsA), auditCount(t, db, wsB); a != 4 || b != 2 {
		t.Fatalf("rows of A, B = %d, %d, want 4, 2", a, b)
	}

	gone := wsB + 1_000_000
	err := db.RecordAudit(ctx, []*c360.AuditEntry{c360.NewAuditEntry(nil, wsA, c360.AuditAPIKeyRevoke, at),
		c360.NewAuditEntry(nil, gone, c360.AuditAPIKeyRevoke, at)})
	if err == nil {
		t.Fatal("entries of a workspace that does not exist were written")
	}
	if a := auditCount(t, db, wsA); a != 4 {
		t.Errorf("rows of A after a refused batch = %d, want 4 (none of the batch)", a)
	}
}

// Under a steady stream the writer writes once per linger: entries that
// come while it writes wait for the next pass and its linger, instead of
// being written at once, a statement each.
func TestAuditWriterLingersUnderAStream(t *testing.T) {
	noLeaks(t)
	counter := &pgtest.StatementCounter{}
	db := pgtest.Open(t, counter.Install)
	ws, _, _ := pgtest.Workspace(t, db)
	w := postgres.NewAuditWriter(db, postgres.AuditWriterConfig{Linger: 50 * time.Millisecond, Logger: slog.New(slog.DiscardHandler)})
	defer w.Close()
	counter.Reset()
	start := time.Now()
	for i := 0; time.Since(start) < 400*time.Millisecond; i++ {
		e := c360.NewAuditEntry(nil, ws, c360.AuditAPIKeyRevoke, time.Now())
		w.EnqueueAudit([]*c360.AuditEntry{e})
		time.Sleep(time.Millisecond)
	}
	if err := w.Flush(t.Context()); err != nil {
		t.Fatal(err)
	}
	inserts := strings.Count(counter.Statements(), "INSERT INTO audit_log")
	// 400 ms at one pass per 50 ms linger, plus the Flush's.
	if inserts < 2 || inserts > 10 {
		t.Errorf("%d inserts for 400 ms of entries with a 50 ms linger, want about 8 (at most 10)", inserts)
	}
}

func TestAuditWriter(t *testing.T) {
	noLeaks(t)
	db := pgtest.Open(t)
	ctx := context.Background()
	ws, _, _ := pgtest.Workspace(t, db)
	entry := func(i int) *c360.AuditEntry {
		e := c360.NewAuditEntry(&c360.Principal{WorkspaceID: ws, KeyID: 1, KeyPrefix: "p", Role: c360.RoleAssistant},
			ws, c360.AuditCustomerRead, time.Now())
		e.CustomerID, e.Fields = int64(i+1), []string{"traits"}
		return e
	}

	t.Run("batches from many requests", func(t *testing.T) {
		w := postgres.NewAuditWriter(db, postgres.AuditWriterConfig{MaxBatch: 50, Logger: slog.New(slog.DiscardHandler)})
		defer w.Close()
		before := auditCount(t, db, ws)
		var wg sync.WaitGroup
		for g := 0; g < 8; g++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; i < 25; i++ {
					w.EnqueueAudit([]*c360.AuditEntry{entry(i), entry(i + 1)})
				}
			}()
		}
		wg.Wait()
		if err := w.Flush(ctx); err != nil {
			t.Fatal(err)
		}
		if got := auditCount(t, db, ws) - before; got != 400 || w.Dropped() != 0 {
			t.Errorf("rows written = %d, dropped %d; want 400 and 0", got, w.Dropped())
		}
	})

	t.Run("entries wait out the linger together", func(t *testing.T) {
		w := postgres.NewAuditWriter(db, postgres.AuditWriterConfig{Linger: time.Hour, Logger: slog.New(slog.DiscardHandler)})
		defer w.Close()
		before := auditCount(t, db, ws)
		for i := 0; i < 5; i++ {
			w.EnqueueAudit([]*c360.AuditEntry{entry(i)})
			time.Sleep(2 * time.Millisecond)
		}
		time.Sleep(50 * time.Millisecond)
		if got := auditCount(t, db, ws) - before; got != 0 {
			t.Errorf("rows written within the linger = %d, want 0", got)
		}
		start := time.Now()
		if err := w.Flush(ctx); err != nil {
			t.Fatal(err)
		}
		if got := auditCount(t, db, ws) - before; got != 5 {
			t.Errorf("rows after Flush = %d, want 5", got)
		}
		if d := time.Since(start); d > 10*time.Second {
			t.Errorf("Flush took %v: it waited out the linger", d)
		}
	})

	// A wake is a futex call on the request's path: a request makes one
	// only when it starts a batch (or fills one), not for every entry.
	t.Run("requests wake the writer once per batch", func(t *testing.T) {
		w := postgres.NewAuditWriter(db, postgres.AuditWriterConfig{MaxBatch: 100, Linger: time.Hour, Logger: slog.New(slog.DiscardHandler)})
		defer w.Close()
		before := auditCount(t, db, ws)
		for i := 0; i < 50; i++ {
			w.EnqueueAudit([]*c360.AuditEntry{entry(i)})
		}
		if got := postgres.AuditWakes(w); got != 1 {
			t.Errorf("wakes after 50 entries within a linger = %d, want 1", got)
		}
		for i := 50; i < 100; i++ {
			w.EnqueueAudit([]*c360.AuditEntry{entry(i)})
		}
		waitUntil(t, "the full batch of 100, without a Flush", func() bool { return auditCount(t, db, ws)-before == 100 })
		// The filling entry wakes the writer unless the first wake is
		// still unread (the writer then sees a full batch at once).
		wakes := postgres.AuditWakes(w)
		if wakes != 1 && wakes != 2 {
			t.Errorf("wakes after a batch of 100 filled = %d, want 2 (its start and its end), or 1", wakes)
		}
		// The writer takes a wake it no longer needs.
		waitUntil(t, "the writer to take its wake", func() bool { return !postgres.AuditWakePending(w) })
		w.EnqueueAudit([]*c360.AuditEntry{entry(0)})
		if got := postgres.AuditWakes(w); got != wakes+1 {
			t.Errorf("wakes after an entry starts the next batch = %d, want %d", got, wakes+1)
		}
		if err := w.Flush(ctx); err != nil || auditCount(t, db, ws)-before != 101 {
			t.Errorf("flush: %v, rows %d, want 101", err, auditCount(t, db, ws)-before)
		}
	})

	t.Run("close does not wait for the linger", func(t *testing.T) {
		w := postgres.NewAuditWriter(db, postgres.AuditWriterConfig{Linger: time.Hour, Logger: slog.New(slog.DiscardHandler)})
		before := auditCount(t, db, ws)
		for i := 0; i < 3; i++ {
			w.EnqueueAudit([]*c360.AuditEntry{entry(i)})
		}
		start := time.Now()
		w.Close()
		if d := time.Since(start); d > 10*time.Second {
			t.Errorf("Close took %v: it waited out the linger", d)
		}
		if got := auditCount(t, db, ws) - before; got != 3 {
			t.Errorf("rows after Close = %d, want 3", got)
		}
	})

	// stuck returns a writer whose first entry's pass is under way and
	// waits: audit_log is locked until the subtest ends. The entry is of a
	// workspace of its own: the canceled insert may still land once the
	// lock is gone, and the other subtests count ws's rows.
	stuck := func(t *testing.T, cfg postgres.AuditWriterConfig) *postgres.AuditWriter {
		t.Helper()
		cfg.Linger, cfg.CloseTimeout, cfg.Logger = time.Millisecond, 300*time.Millisecond, slog.New(slog.DiscardHandler)
		w := postgres.NewAuditWriter(db, cfg)
		tx, err := db.Pool.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { tx.Rollback(ctx) })
		if _, err := tx.Exec(ctx, `LOCK TABLE audit_log IN ACCESS EXCLUSIVE MODE`); err != nil {
			t.Fatal(err)
		}
		other, _, _ := pgtest.Workspace(t, db)
		w.EnqueueAudit([]*c360.AuditEntry{c360.NewAuditEntry(nil, other, c360.AuditAPIKeyRevoke, time.Now())})
		pgtest.WaitForLockWait(t, db, "audit_log")
		return w
	}

	t.Run("close is bounded while a write waits", func(t *testing.T) {
		w := stuck(t, postgres.AuditWriterConfig{})
		start := time.Now()
		w.Close()
		if d := time.Since(start); d > 3*time.Second {
			t.Errorf("Close took %v with a CloseTimeout of 300ms: it waited for the pass under way", d)
		}
		if w.Dropped() != 1 {
			t.Errorf("dropped = %d, want the entry the locked table kept out", w.Dropped())
		}
	})

	t.Run("entries being written count against MaxPending", func(t *testing.T) {
		w := stuck(t, postgres.AuditWriterConfig{MaxPending: 1})
		defer w.Close()
		w.EnqueueAudit([]*c360.AuditEntry{entry(0)})
		if w.Dropped() != 1 {
			t.Errorf("dropped = %d with one entry being written and MaxPending 1, want the second entry dropped", w.Dropped())
		}
	})

	// A Flush that comes while a pass writes may wait on entries of that
	// pass: it reports that pass's failure, and a later Flush does not.
	t.Run("a Flush reports the pass it came during", func(t *testing.T) {
		w := postgres.NewAuditWriter(db, postgres.AuditWriterConfig{Linger: time.Millisecond, Logger: slog.New(slog.DiscardHandler)})
		defer w.Close()
		gone := ws + 1_000_000 // refused by the foreign key, three times over about 0.7 s
		w.EnqueueAudit([]*c360.AuditEntry{c360.NewAuditEntry(nil, gone, c360.AuditAPIKeyRevoke, time.Now())})
		waitUntil(t, "the failing pass to start", func() bool { return postgres.AuditWriting(w) })
		if err := w.Flush(ctx); err == nil {
			t.Error("Flush during a failing pass = nil, want its error")
		}
		if err := w.Flush(ctx); err != nil {
			t.Errorf("Flush after it = %v, want nil: nothing queued before it failed", err)
		}
		if w.Dropped() != 1 {
			t.Errorf("dropped = %d, want the refused entry", w.Dropped())
		}
	})

	t.Run("a full batch does not wait for the linger", func(t *testing.T) {
		w := postgres.NewAuditWriter(db, postgres.AuditWriterConfig{MaxBatch: 10, Linger: time.Hour, Logger: slog.New(slog.DiscardHandler)})
		defer w.Close()
		before := auditCount(t, db, ws)
		for i := 0; i < 10; i++ {
			w.EnqueueAudit([]*c360.AuditEntry{entry(i)})
		}
		waitUntil(t, "a full batch of 10, without a Flush", func() bool { return auditCount(t, db, ws)-before == 10 })
	})

	t.Run("a full queue drops, never blocks", func(t *testing.T) {
		var logs logbuf.Buffer
		w := postgres.NewAuditWriter(db, postgres.AuditWriterConfig{MaxPending: 10, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
		defer w.Close()
		start := time.Now()
		for i := 0; i < 2000; i++ {
			w.EnqueueAudit([]*c360.AuditEntry{entry(i)})
		}
		if d := time.Since(start); d > time.Second {
			t.Errorf("enqueueing 2000 entries took %v", d)
		}
		if err := w.Flush(ctx); err != nil {
			t.Fatal(err)
		}
		if w.Dropped() == 0 {
			t.Error("no entry dropped with a queue of 10 and 2000 enqueued at once")
		}
		if logs.String() == "" {
			t.Error("drops were not logged")
		}
	})

	t.Run("close writes what is queued", func(t *testing.T) {
		w := postgres.NewAuditWriter(db, postgres.AuditWriterConfig{Logger: slog.New(slog.DiscardHandler)})
		before := auditCount(t, db, ws)
		for i := 0; i < 30; i++ {
			w.EnqueueAudit([]*c360.AuditEntry{entry(i)})
		}
		w.Close()
		if got := auditCount(t, db, ws) - before; got != 30 {
			t.Errorf("rows after Close = %d, want 30", got)
		}
		w.EnqueueAudit([]*c360.AuditEntry{entry(1)})
		if w.Dropped() != 1 {
			t.Errorf("dropped after enqueue on a closed writer = %d, want 1", w.Dropped())
		}
		if err := w.Flush(ctx); err == nil {
			t.Error("Flush on a closed writer succeeded")
		}
		w.Close() // twice is fine
	})
}

func TestKeyUsage(t *testing.T) {
	noLeaks(t)
	db := pgtest.Open(t)
	ctx := context.Background()
	ws, slug, key := pgtest.Workspace(t, db)
	lastUsed := func() *time.Time {
		t.Helper()
		keys, err := db.ListAPIKeys(ctx, ws)
		if err != nil {
			t.Fatal(err)
		}
		for _, k := range keys {
			if k.Role == c360.RoleAdmin {
				return k.LastUsedAt
			}
		}
		t.Fatal("no admin key")
		return nil
	}
	// Without a recorder, nothing is written.
	if _, err := db.Authenticate(ctx, key); err != nil {
		t.Fatal(err)
	}
	if lastUsed() != nil {
		t.Fatal("last_used_at set without a usage recorder")
	}
	u := postgres.NewKeyUsage(db, time.Minute, slog.New(slog.DiscardHandler))
	defer u.Close()
	for i := 0; i < 50; i++ { // from the cache, mostly
		if _, err := db.Authenticate(ctx, key); err != nil {
			t.Fatal(err)
		}
	}
	if err := u.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	first := lastUsed()
	if first == nil || time.Since(*first) > time.Minute {
		t.Fatalf("last_used_at = %v, want about now", first)
	}
	// Within the interval, another use writes nothing.
	time.Sleep(10 * time.Millisecond)
	if _, err := db.Authenticate(ctx, key); err != nil {
		t.Fatal(err)
	}
	if err := u.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if again := lastUsed(); !again.Equal(*first) {
		t.Errorf("last_used_at after a use within the minute = %v, want unchanged %v", again, first)
	}
	// Another replica's recorder, shortly after, finds the row recent and
	// leaves it: at most one write per key and minute across replicas.
	db2 := pgtest.Open(t)
	u2 := postgres.NewKeyUsage(db2, time.Minute, slog.New(slog.DiscardHandler))
	if _, err := db2.Authenticate(ctx, key); err != nil {
		t.Fatal(err)
	}
	if err := u2.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	u2.Close()
	if again := lastUsed(); !again.Equal(*first) {
		t.Errorf("last_used_at after another replica's use = %v, want unchanged %v", again, first)
	}
	// A short interval lets the next use through.
	u.Close()
	u3 := postgres.NewKeyUsage(db, time.Millisecond, slog.New(slog.DiscardHandler))
	defer u3.Close()
	time.Sleep(5 * time.Millisecond)
	if _, err := db.Authenticate(ctx, key); err != nil {
		t.Fatal(err)
	}
	if err := u3.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if later := lastUsed(); !later.After(*first) {
		t.Errorf("last_used_at = %v, want later than %v", later, first)
	}
	_ = slug
}

func TestRevokeAPIKey(t *testing.T) {
	db := pgtest.Open(t)
	ctx := context.Background()
	ws, slug, _ := pgtest.Workspace(t, db)
	secret, k, err := db.CreateAPIKey(ctx, slug, c360.RoleAgent, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Authenticate(ctx, secret); err != nil { // cached now
		t.Fatal(err)
	}
	r, revoked, err := db.RevokeAPIKey(ctx, ws, k.Prefix)
	if err != nil || !revoked || r.RevokedAt == nil || r.Prefix != k.Prefix {
		t.Fatalf("RevokeAPIKey = %+v, %v, %v", r, revoked, err)
	}
	// Revoking again changes nothing, and says so.
	again, revoked, err := db.RevokeAPIKey(ctx, ws, k.Prefix)
	if err != nil || revoked || again.RevokedAt == nil || !again.RevokedAt.Equal(*r.RevokedAt) {
		t.Errorf("RevokeAPIKey again = %+v, %v, %v; want the key as it was (revokedAt %v), revoked false", again, revoked, err, r.RevokedAt)
	}
	// This process forgets the key at once, cache or not.
	if _, err := db.Authenticate(ctx, secret); c360.ErrorCode(err) != c360.EUNAUTHENTICATED {
		t.Errorf("authenticate after revoke = %v, want UNAUTHENTICATED", err)
	}
	other, _, _ := pgtest.Workspace(t, db)
	if _, _, err := db.RevokeAPIKey(ctx, other, k.Prefix); c360.ErrorCode(err) != c360.ENOTFOUND {
		t.Errorf("revoke through another workspace = %v, want NOT_FOUND", err)
	}
	if _, _, err := db.IssueAPIKey(ctx, ws, c360.RoleAssistant, []string{"pii", "admin"}); c360.ErrorCode(err) != c360.EINVALID {
		t.Errorf("issue with an unknown scope = %v, want BAD_USER_INPUT", err)
	}
}
