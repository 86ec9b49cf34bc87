package chatbot_test

import (
	"context"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/c360dev/c360"
	"github.com/c360dev/c360/connectors/chatbot"
	"github.com/c360dev/c360/internal/pgtest"
	"github.com/c360dev/c360/postgres"
)

// When the store cannot take a request now, the bot is answered 503 with
// Retry-After and an UNAVAILABLE error, never {"accepted": n}; nothing is
// stored or kept as a dead letter, and the bot's retry is stored once.

// wantRetryLater requires a 503 that asks the bot to retry in a second and
// acknowledges nothing.
func wantRetryLater(t *testing.T, a answer) {
	t.Helper()
	if a.Status != http.StatusServiceUnavailable || a.Code != c360.EUNAVAILABLE {
		t.Errorf("answer %d %s, want 503 %s", a.Status, a.Body, c360.EUNAVAILABLE)
	}
	if got := a.Header.Get("Retry-After"); got != "1" {
		t.Errorf("Retry-After = %q, want \"1\"", got)
	}
	if !strings.Contains(a.Message, "retry") || strings.Contains(a.Body, "accepted") {
		t.Errorf("body = %s, want a message asking for a retry and no count of accepted events", a.Body)
	}
}

// stored counts the events and dead letters of session sid.
func (e *env) stored(t *testing.T, sid string) (events, deadLetters int) {
	t.Helper()
	for _, c := range []struct {
		table string
		n     *int
	}{{"events", &events}, {"dead_letters", &deadLetters}} {
		if err := e.db.Pool.QueryRow(context.Background(),
			`SELECT count(*) FROM `+c.table+` WHERE workspace_id = $1 AND dedupe_key LIKE $2 || ':%'`, e.ws, sid).Scan(c.n); err != nil {
			t.Fatal(err)
		}
	}
	return events, deadLetters
}

// The database does not grant ingest's locks in time (lock_timeout): the
// transaction fails inside ingest, for a reason that is not the events',
// so the request is neither acknowledged nor kept as dead letters.
func TestDatabaseBusy(t *testing.T) {
	e := newEnvOn(t, pgtest.OpenStore(t, url.Values{"lock_timeout": {"100"}}, postgres.IngestConfig{}))
	body := session("s-busy")
	release := pgtest.LockEvents(t, e.db)
	a, err := e.send(e.slug, body, chatbot.Sign(e.secret, now, body))
	release()
	if err != nil {
		t.Fatal(err)
	}
	wantRetryLater(t, a)
	for _, table := range []string{"events", "messages", "customers", "dead_letters"} {
		if n := e.count(t, table); n != 0 {
			t.Errorf("%s = %d after a 503, want 0", table, n)
		}
	}
	for i := range 2 { // the bot's retries
		if a := e.signed(t, body); a.Status != http.StatusOK || a.Accepted != 6 || a.Duplicates != 6*i {
			t.Fatalf("retry %d: %+v, want 200 with 6 accepted, %d duplicates", i+1, a, 6*i)
		}
	}
	if ev, dl := e.stored(t, "s-busy"); ev != 6 || dl != 0 {
		t.Errorf("events, dead letters = %d, %d after the retries; want 6, 0", ev, dl)
	}
}

// The ingest queue is full: the request is refused at once, not held.
func TestIngestOverloaded(t *testing.T) {
	// One worker with room for one waiting request; the lock timeout is
	// longer than the test, so only the full queue refuses.
	e := newEnvOn(t, pgtest.OpenStore(t, url.Values{"lock_timeout": {"60000"}}, postgres.IngestConfig{Workers: 1, Queue: 1}))
	release := pgtest.LockEvents(t, e.db)

	type result struct {
		sid string
		a   answer
		err error
	}
	results := make(chan result, 3)
	send := func(sid string) {
		body := session(sid)
		a, err := e.send(e.slug, body, chatbot.Sign(e.secret, now, body))
		results <- result{sid, a, err}
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	defer release() // before wg.Wait, should the test fail early
	wg.Go(func() { send("s-held") })
	pgtest.WaitForLockWait(t, e.db, "events") // the worker holds s-held's group
	// One of these two takes the queue's one place, the other is refused;
	// which is up to the scheduler.
	wg.Go(func() { send("s-q1") })
	wg.Go(func() { send("s-q2") })

	var refused result
	select {
	case refused = <-results:
	case <-time.After(10 * time.Second):
		t.Fatal("no answer while the queue is full, want a 503 at once")
	}
	if refused.err != nil {
		t.Fatal(refused.err)
	}
	if refused.sid == "s-held" {
		t.Fatalf("the request being stored was answered first (%+v), want a queued one refused", refused.a)
	}
	wantRetryLater(t, refused.a)

	release()
	for range 2 {
		r := <-results
		if r.err != nil || r.a.Status != http.StatusOK || r.a.Accepted != 6 {
			t.Errorf("%s: %+v %v, want 200 with 6 accepted once the lock is released", r.sid, r.a, r.err)
		}
		if ev, _ := e.stored(t, r.sid); ev != 6 {
			t.Errorf("%s: %d events, want 6", r.sid, ev)
		}
	}
	if ev, dl := e.stored(t, refused.sid); ev != 0 || dl != 0 {
		t.Errorf("refused %s: events, dead letters = %d, %d; want 0, 0", refused.sid, ev, dl)
	}
	if a := e.signed(t, session(refused.sid)); a.Status != http.StatusOK || a.Accepted != 6 || a.Duplicates != 0 {
		t.Errorf("%s retried: %+v, want 200 with 6 accepted, none a duplicate", refused.sid, a)
	}
}
