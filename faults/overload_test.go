package faults

import (
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// With a small ingest queue (C360_INGEST_QUEUE=4, one worker), 400
// concurrent connections flood the Twilio webhook. Past the bound, requests
// are refused at once with 503 and Retry-After (never held, never an
// unbounded queue), the server's memory stays bounded, everything answered
// 200 is stored exactly once, and the refused deliveries, retried as Twilio
// does, are all stored afterwards: overload costs a retry, not a message.
func TestOverload(t *testing.T) {
	c := StartCluster(t)
	a := newApp(t, c)
	srv := a.serve(t, "C360_INGEST_QUEUE=4", "C360_INGEST_WORKERS=1", "C360_DB_MAX_CONNS=4")

	const (
		conns   = 400
		perConn = 5
		n       = conns * perConn
	)
	client := newClient(conns)
	deliveries := make([]delivery, n)
	for i := range deliveries {
		deliveries[i] = newDelivery("flood", i, "flood test message")
	}
	results := make([]result, n)
	var (
		wg       sync.WaitGroup
		peakRSS  atomic.Int64
		sampling = make(chan struct{})
	)
	go func() {
		for {
			select {
			case <-sampling:
				return
			case <-time.After(20 * time.Millisecond):
			}
			if cur, _ := srv.rss(); cur > peakRSS.Load() {
				peakRSS.Store(cur)
			}
		}
	}()
	_, before := srv.rss()
	start := time.Now()
	for w := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w * perConn; i < (w+1)*perConn; i++ {
				results[i] = a.deliver(client, deliveries[i])
			}
		}()
	}
	wg.Wait()
	took := time.Since(start)
	close(sampling)
	_, hwm := srv.rss()

	var ok, refused int
	for i, r := range results {
		switch {
		case r.err != nil:
			t.Errorf("delivery %s: %v; want an answer", deliveries[i].sid, r.err)
		case r.status == http.StatusOK:
			ok++
		case r.status == http.StatusServiceUnavailable || r.status == http.StatusTooManyRequests:
			refused++
			if r.retryAfter == "" {
				t.Errorf("delivery %s: %d without Retry-After", deliveries[i].sid, r.status)
			}
			if d := r.end.Sub(r.start); d > 5*time.Second {
				t.Errorf("delivery %s: refused only after %s; a refusal must be immediate", deliveries[i].sid, d)
			}
		default:
			t.Errorf("delivery %s: status %d, want 200, 503 or 429", deliveries[i].sid, r.status)
		}
	}
	t.Logf("%d deliveries on %d connections in %s: %d answered 200, %d refused with Retry-After; server RSS peak %d MiB (%d MiB before)",
		n, conns, took.Round(time.Millisecond), ok, refused, max(hwm, peakRSS.Load())>>20, before>>20)
	if refused == 0 {
		t.Errorf("no request was refused: the flood did not reach the ingest bound")
	}
	if ok == 0 {
		t.Errorf("no request succeeded under the flood")
	}
	const bound = 256 << 20
	if m := max(hwm, peakRSS.Load()); m > bound {
		t.Errorf("server RSS peaked at %d MiB, want under %d MiB", m>>20, bound>>20)
	}

	events, messages := a.stored(t)
	for i, r := range results {
		sid := deliveries[i].sid
		if r.status == http.StatusOK && (events[sid] != 1 || messages[sid] != 1) {
			t.Errorf("%s was answered 200 but is stored %d/%d times, want 1", sid, events[sid], messages[sid])
		}
		if r.status != http.StatusOK && events[sid] != 0 {
			t.Errorf("%s was refused but is stored: a refusal must write nothing", sid)
		}
	}

	// Twilio retries the refused ones; they are all stored then.
	retryStart := time.Now()
	sem := make(chan struct{}, 16)
	for i, r := range results {
		if r.status == http.StatusOK {
			continue
		}
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			if err := a.redeliver(newClient(1), deliveries[i]); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	events, messages = a.stored(t)
	if len(events) != n || len(messages) != n {
		t.Errorf("after the retries: %d events and %d messages, want %d each", len(events), len(messages), n)
	}
	for _, d := range deliveries {
		if events[d.sid] != 1 {
			t.Errorf("%s stored %d times, want 1", d.sid, events[d.sid])
			break
		}
	}
	t.Logf("the %d refused deliveries were retried and stored in %s", refused, time.Since(retryStart).Round(time.Millisecond))
}
