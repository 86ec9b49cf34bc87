package segment_test

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/c360dev/c360/internal/pgtest"
	"github.com/c360dev/c360/postgres"
)

// When the store cannot take a call now, the tracking API answers 503 with
// Retry-After, so that the SDK keeps the calls and sends them again;
// nothing is stored or kept as a dead letter, and the retry is stored
// once. A 200 would tell the SDK to drop calls that were never stored.

// wantRetryLater requires a 503 that asks for a retry in a second.
func wantRetryLater(t *testing.T, r response) {
	t.Helper()
	if r.Status != http.StatusServiceUnavailable || r.Success {
		t.Errorf("got %+v, want 503 without success: nothing was stored", r)
	}
	if r.RetryAfter != "1" {
		t.Errorf("Retry-After = %q, want \"1\"", r.RetryAfter)
	}
	if !strings.Contains(r.Message, "retry") {
		t.Errorf("message = %q, want it to ask for a retry", r.Message)
	}
}

// count runs a query that counts.
func count(t *testing.T, db *postgres.DB, sql string, args ...any) int {
	t.Helper()
	var n int
	if err := db.Pool.QueryRow(context.Background(), sql, args...).Scan(&n); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return n
}

// stored counts the events and dead letters of messageId.
func (e *env) stored(t *testing.T, messageID string) (events, deadLetters int) {
	t.Helper()
	return count(t, e.db, `SELECT count(*) FROM events WHERE workspace_id = $1 AND dedupe_key = $2`, e.ws, messageID),
		count(t, e.db, `SELECT count(*) FROM dead_letters WHERE workspace_id = $1 AND dedupe_key = $2`, e.ws, messageID)
}

// The database does not grant ingest's locks in time (lock_timeout), for a
// batch and for a single call: neither is acknowledged nor kept as a dead
// letter, and each retry is stored once.
func TestDatabaseBusy(t *testing.T) {
	e := newEnvOn(t, pgtest.OpenStore(t, url.Values{"lock_timeout": {"100"}}, postgres.IngestConfig{}), slog.DiscardHandler)
	for _, c := range []struct{ path, body, id string }{
		{"/v1/batch", `{"batch":[{"type":"track","userId":"busy-1","event":"Order Completed","messageId":"busy-batch"}]}`, "busy-batch"},
		{"/v1/track", `{"userId":"busy-2","event":"Order Completed","messageId":"busy-track"}`, "busy-track"},
		{"/v1/identify", `{"userId":"busy-3","traits":{"plan":"pro"},"messageId":"busy-identify"}`, "busy-identify"},
	} {
		release := pgtest.LockEvents(t, e.db)
		r := e.post(t, c.path, basic(e.writeKey), []byte(c.body))
		release()
		wantRetryLater(t, r)
		if ev, dl := e.stored(t, c.id); ev != 0 || dl != 0 {
			t.Errorf("%s: events, dead letters = %d, %d after a 503; want 0, 0", c.path, ev, dl)
		}
		e.mustPost(t, c.path, []byte(c.body)) // the SDK's retry
		e.mustPost(t, c.path, []byte(c.body))
		if ev, dl := e.stored(t, c.id); ev != 1 || dl != 0 {
			t.Errorf("%s: events, dead letters = %d, %d after the retries; want 1, 0", c.path, ev, dl)
		}
	}
}

// The ingest queue is full: a batch is refused at once with 503, not held
// and not acknowledged.
func TestIngestOverloaded(t *testing.T) {
	// One worker with room for one waiting request; the lock timeout is
	// longer than the test, so only the full queue refuses.
	e := newEnvOn(t, pgtest.OpenStore(t, url.Values{"lock_timeout": {"60000"}}, postgres.IngestConfig{Workers: 1, Queue: 1}), slog.DiscardHandler)
	release := pgtest.LockEvents(t, e.db)
	const n = 6
	type answer struct {
		id string
		r  response
	}
	answers := make(chan answer, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			id := fmt.Sprintf("full-%d", i)
			answers <- answer{id, e.post(t, "/v1/batch", basic(e.writeKey),
				[]byte(`{"batch":[{"type":"track","userId":"u-`+id+`","event":"E","messageId":"`+id+`"}]}`))}
		}()
	}
	// At most two requests fit (one applying, one waiting); the others
	// are refused while the lock is still held.
	var got []answer
	timeout := time.After(10 * time.Second)
	for len(got) < n-2 {
		select {
		case a := <-answers:
			got = append(got, a)
		case <-timeout:
			t.Fatalf("%d answers while ingest was held, want the %d the full queue refuses: %+v", len(got), n-2, got)
		}
	}
	release()
	wg.Wait()
	close(answers)
	for a := range answers {
		got = append(got, a)
	}
	refused := 0
	for _, a := range got {
		ev, dl := e.stored(t, a.id)
		switch a.r.Status {
		case http.StatusServiceUnavailable:
			refused++
			wantRetryLater(t, a.r)
			if ev != 0 || dl != 0 {
				t.Errorf("%s refused 503 but stored: events %d, dead letters %d", a.id, ev, dl)
			}
		case http.StatusOK:
			if ev != 1 || dl != 0 {
				t.Errorf("%s acknowledged but events %d, dead letters %d; want 1, 0", a.id, ev, dl)
			}
		default:
			t.Errorf("%s: %+v, want 200 or 503", a.id, a.r)
		}
	}
	if refused < n-2 {
		t.Errorf("%d of %d batches refused with the queue full, want at least %d", refused, n, n-2)
	}
}
