package whatsapp_test

import (
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/c360dev/c360/internal/pgtest"
	"github.com/c360dev/c360/postgres"
)

// When the store cannot take a notification now, Meta is answered 503 with
// Retry-After, nothing is stored or kept as a dead letter, and Meta's retry
// is stored once.

// wantRetryLater requires a 503 that asks Meta to retry in a second.
func wantRetryLater(t *testing.T, status int, header http.Header, body string) {
	t.Helper()
	if status != http.StatusServiceUnavailable {
		t.Errorf("status = %d (%s), want 503", status, body)
	}
	if got := header.Get("Retry-After"); got != "1" {
		t.Errorf("Retry-After = %q, want \"1\"", got)
	}
	if !strings.Contains(body, "retry") {
		t.Errorf("body = %q, want it to ask for a retry", body)
	}
}

// stored counts what the delivery of wamid left: its events, its messages
// and dead letters kept for it.
func (e *env) stored(t *testing.T, wamid string) (events, messages, deadLetters int) {
	t.Helper()
	return count(t, e.db, `SELECT count(*) FROM events WHERE workspace_id = $1 AND dedupe_key = $2`, e.ws, wamid),
		count(t, e.db, `SELECT count(*) FROM messages WHERE workspace_id = $1 AND provider_id = $2`, e.ws, wamid),
		count(t, e.db, `SELECT count(*) FROM dead_letters WHERE workspace_id = $1 AND dedupe_key = $2`, e.ws, wamid)
}

func textNotification(wamid, from string) []byte {
	return []byte(notification(inboundValue(from, "Ada",
		fmt.Sprintf(`{"from":%q,"id":%q,"timestamp":"1700000000","type":"text","text":{"body":"hello"}}`, from, wamid))))
}

// The database does not grant ingest's locks in time (lock_timeout): the
// transaction fails inside ingest, for a reason that is not the event's, so
// it is neither acknowledged nor kept as a dead letter.
func TestDatabaseBusy(t *testing.T) {
	e := newEnvOn(t, pgtest.OpenStore(t, url.Values{"lock_timeout": {"100"}}, postgres.IngestConfig{}))
	body := textNotification("wamid.BUSY", "16505551241")
	release := pgtest.LockEvents(t, e.db)
	status, header, got, err := e.send(e.path(), body, signature(appSecret, body))
	release()
	if err != nil {
		t.Fatal(err)
	}
	wantRetryLater(t, status, header, got)
	if ev, msg, dl := e.stored(t, "wamid.BUSY"); ev != 0 || msg != 0 || dl != 0 {
		t.Errorf("events, messages, dead letters = %d, %d, %d after a 503; want 0, 0, 0", ev, msg, dl)
	}
	e.deliver(t, string(body)) // Meta's retry
	e.deliver(t, string(body))
	if ev, msg, dl := e.stored(t, "wamid.BUSY"); ev != 1 || msg != 1 || dl != 0 {
		t.Errorf("events, messages, dead letters = %d, %d, %d after the retries; want 1, 1, 0", ev, msg, dl)
	}
}

// The ingest queue is full: the notification is refused at once, not held.
func TestIngestOverloaded(t *testing.T) {
	// One worker with room for one waiting request; the lock timeout is
	// longer than the test, so only the full queue refuses.
	e := newEnvOn(t, pgtest.OpenStore(t, url.Values{"lock_timeout": {"60000"}}, postgres.IngestConfig{Workers: 1, Queue: 1}))
	release := pgtest.LockEvents(t, e.db)

	type answer struct {
		wamid  string
		status int
		header http.Header
		body   string
		err    error
	}
	answers := make(chan answer, 3)
	bodies := map[string][]byte{
		"wamid.HELD": textNotification("wamid.HELD", "16505551242"),
		"wamid.Q1":   textNotification("wamid.Q1", "16505551243"),
		"wamid.Q2":   textNotification("wamid.Q2", "16505551244"),
	}
	send := func(wamid string) {
		body := bodies[wamid]
		status, header, got, err := e.send(e.path(), body, signature(appSecret, body))
		answers <- answer{wamid, status, header, got, err}
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	defer release() // before wg.Wait, should the test fail early
	wg.Go(func() { send("wamid.HELD") })
	pgtest.WaitForLockWait(t, e.db, "events") // the worker holds wamid.HELD's group
	// One of these two takes the queue's one place, the other is refused;
	// which is up to the scheduler.
	wg.Go(func() { send("wamid.Q1") })
	wg.Go(func() { send("wamid.Q2") })

	var refused answer
	select {
	case refused = <-answers:
	case <-time.After(10 * time.Second):
		t.Fatal("no answer while the queue is full, want a 503 at once")
	}
	if refused.err != nil {
		t.Fatal(refused.err)
	}
	if refused.wamid == "wamid.HELD" {
		t.Fatalf("the notification being stored was answered first (%d %s), want a queued one refused", refused.status, refused.body)
	}
	wantRetryLater(t, refused.status, refused.header, refused.body)

	release()
	for range 2 {
		a := <-answers
		if a.err != nil || a.status != http.StatusOK {
			t.Errorf("%s: %d %q %v, want 200 once the lock is released", a.wamid, a.status, a.body, a.err)
		}
		if ev, msg, _ := e.stored(t, a.wamid); ev != 1 || msg != 1 {
			t.Errorf("%s: events, messages = %d, %d; want 1, 1", a.wamid, ev, msg)
		}
	}
	if ev, msg, dl := e.stored(t, refused.wamid); ev != 0 || msg != 0 || dl != 0 {
		t.Errorf("refused %s: events, messages, dead letters = %d, %d, %d; want 0, 0, 0", refused.wamid, ev, msg, dl)
	}
	e.deliver(t, string(bodies[refused.wamid])) // Meta's retry
	if ev, msg, _ := e.stored(t, refused.wamid); ev != 1 || msg != 1 {
		t.Errorf("%s retried: events, messages = %d, %d; want 1, 1", refused.wamid, ev, msg)
	}
}
