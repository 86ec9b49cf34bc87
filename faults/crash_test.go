package faults

import (
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// The server is killed with SIGKILL while hundreds of signed Twilio
// webhooks are in flight. Every delivery answered 200 before the kill is
// stored already (200 means committed). After a restart, the deliveries
// that got no 200 — and a sample of those that did, as Twilio redelivers
// after a timeout it saw — are retried, and then every MessageSid exists
// exactly once, as an event and as a message.
func TestCrashMidFlight(t *testing.T) {
	c := StartCluster(t)
	a := newApp(t, c)
	srv := a.serve(t)

	const (
		n           = 400
		concurrency = 64
		killAfter   = n / 4 // acknowledgements before the kill
	)
	deliveries := make([]delivery, n)
	for i := range deliveries {
		deliveries[i] = newDelivery("crash", i, "crash test message")
	}
	results := make([]result, n)
	client := newClient(concurrency)
	var (
		acked    atomic.Int64
		killOnce sync.Once
		killedAt time.Time
		killed   = make(chan struct{})
	)
	kill := func() {
		killedAt = time.Now()
		srv.kill()
		close(killed)
	}
	sem := make(chan struct{}, concurrency)
	var wg sync.WaitGroup
	start := time.Now()
	for i := range deliveries {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			results[i] = a.deliver(client, deliveries[i])
			if results[i].status == http.StatusOK && acked.Add(1) == killAfter {
				go killOnce.Do(kill)
			}
		}()
	}
	wg.Wait()
	killOnce.Do(kill) // in case fewer than killAfter were acknowledged
	<-killed

	var ok, inFlight, refused int
	for _, r := range results {
		switch {
		case r.status == http.StatusOK:
			ok++
		case r.start.Before(killedAt):
			inFlight++ // sent before the kill, never answered 200
		default:
			refused++
		}
		if r.status != 0 && r.status != http.StatusOK {
			t.Errorf("a delivery was answered %d before the kill, want 200 (nothing else fails here)", r.status)
		}
	}
	t.Logf("%d deliveries in %s: %d answered 200, %d in flight at the kill, %d sent after it",
		n, killedAt.Sub(start).Round(time.Millisecond), ok, inFlight, refused)
	if ok < killAfter || inFlight == 0 {
		t.Fatalf("the kill did not happen mid-flight: %d acknowledged, %d in flight", ok, inFlight)
	}

	// 200 means committed: every acknowledged delivery is stored, before any retry.
	events, messages := a.stored(t)
	lostAcks := 0
	for i, r := range results {
		sid := deliveries[i].sid
		if r.status == http.StatusOK && (events[sid] != 1 || messages[sid] != 1) {
			t.Errorf("%s was answered 200 before the kill but is stored %d times as an event, %d as a message; want 1",
				sid, events[sid], messages[sid])
		}
		if r.status != http.StatusOK && events[sid] > 0 {
			lostAcks++ // committed, but the answer died with the process: the retry finds it
		}
	}
	t.Logf("before any retry: every acknowledged delivery stored; %d unacknowledged ones committed too", lostAcks)

	restartAt := time.Now()
	a.serve(t)
	t.Logf("restarted in %s", time.Since(restartAt).Round(time.Millisecond))
	retried := 0
	for i, r := range results {
		if r.status != http.StatusOK || i%4 == 0 {
			sem <- struct{}{}
			wg.Add(1)
			retried++
			go func() {
				defer func() { <-sem; wg.Done() }()
				if err := a.redeliver(client, deliveries[i]); err != nil {
					t.Error(err)
				}
			}()
		}
	}
	wg.Wait()

	events, messages = a.stored(t)
	for _, d := range deliveries {
		if events[d.sid] != 1 || messages[d.sid] != 1 {
			t.Errorf("%s is stored %d times as an event and %d as a message, want exactly once", d.sid, events[d.sid], messages[d.sid])
		}
	}
	if len(events) != n || len(messages) != n {
		t.Errorf("stored %d distinct events and %d messages, want %d", len(events), len(messages), n)
	}
	t.Logf("retried %d deliveries (%d unacknowledged, %d acknowledged); all %d stored exactly once",
		retried, n-ok, retried-(n-ok), n)
}
