package faults

import (
	"context"
	"fmt"
	"net/http"
	"sort"
	"sync"
	"testing"
	"time"
)

// PostgreSQL is stopped under a load of signed Twilio webhooks — with
// pg_ctl stop -m fast (every connection is cut, as in a restart for
// maintenance or a failover), -m immediate (an abort: the start recovers
// from the WAL) and SIGKILL of every PostgreSQL process (a crash, as the
// OOM killer does) — kept down for three seconds, and started again; c360
// keeps running. While it is down, every request fails fast with 503 and
// Retry-After (never 2xx, never a hang past Twilio's 15 s); /readyz goes
// false and then true; once it is back, the pool reconnects by itself and
// requests succeed; every delivery answered 200 is stored, exactly once;
// and no dead letter was made of the outage.
func TestDatabaseRestartUnderLoad(t *testing.T) {
	for _, mode := range []string{"fast", "immediate", "kill"} {
		t.Run(mode, func(t *testing.T) { testDatabaseRestart(t, mode) })
	}
}

func testDatabaseRestart(t *testing.T, mode string) {
	c := StartCluster(t)
	a := newApp(t, c)
	a.serve(t)

	const workers = 16
	client := newClient(workers)
	var (
		mu       sync.Mutex
		sent     []delivery
		results  []result
		stop     = make(chan struct{})
		wg       sync.WaitGroup
		counter  int
		readyLog []readiness
	)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				mu.Lock()
				counter++
				d := newDelivery(fmt.Sprintf("restart%02d", w), counter, "restart test message")
				mu.Unlock()
				r := a.deliver(client, d)
				mu.Lock()
				sent, results = append(sent, d), append(results, r)
				mu.Unlock()
				if r.status != http.StatusOK {
					time.Sleep(20 * time.Millisecond) // a provider backs off a little
				}
			}
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			case <-time.After(50 * time.Millisecond):
			}
			res, err := http.Get(a.base() + "/readyz")
			r := readiness{at: time.Now()}
			if err == nil {
				r.ok = res.StatusCode == http.StatusOK
				res.Body.Close()
			}
			mu.Lock()
			readyLog = append(readyLog, r)
			mu.Unlock()
		}
	}()

	time.Sleep(time.Second)
	stopAt := time.Now()
	stopDB := func() error { return c.Stop(mode) }
	if mode == "kill" {
		stopDB = c.Kill
	}
	if err := stopDB(); err != nil {
		t.Fatal(err)
	}
	downAt := time.Now()
	time.Sleep(3 * time.Second)
	startAt := time.Now()
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	upAt := time.Now()
	t.Logf("PostgreSQL stopped in %s, down for %s, started in %s",
		downAt.Sub(stopAt).Round(time.Millisecond), startAt.Sub(downAt).Round(time.Millisecond), upAt.Sub(startAt).Round(time.Millisecond))

	// Load goes on until requests succeed again (at most 15 s).
	var recovered time.Time
	for deadline := time.Now().Add(15 * time.Second); recovered.IsZero() && time.Now().Before(deadline); {
		time.Sleep(50 * time.Millisecond)
		mu.Lock()
		for _, r := range results {
			if r.status == http.StatusOK && r.start.After(upAt) && (recovered.IsZero() || r.end.Before(recovered)) {
				recovered = r.end
			}
		}
		mu.Unlock()
	}
	time.Sleep(500 * time.Millisecond)
	close(stop)
	wg.Wait()
	if recovered.IsZero() {
		t.Fatalf("no request succeeded within 15 s of PostgreSQL's start: the pool did not recover")
	}
	t.Logf("first success %s after PostgreSQL was up again", recovered.Sub(upAt).Round(time.Millisecond))

	var (
		okN, unavailable, whileDown int
		downLatencies               []time.Duration
		slowest                     time.Duration
	)
	for i, r := range results {
		d := r.end.Sub(r.start)
		slowest = max(slowest, d)
		if d >= 15*time.Second || r.err != nil {
			t.Errorf("delivery %s: %v after %s; want an answer well within Twilio's 15 s", sent[i].sid, r.err, d)
			continue
		}
		switch r.status {
		case http.StatusOK:
			okN++
		case http.StatusServiceUnavailable:
			unavailable++
			if r.retryAfter == "" {
				t.Errorf("delivery %s: 503 without Retry-After", sent[i].sid)
			}
		default:
			t.Errorf("delivery %s: status %d, want 200 or 503", sent[i].sid, r.status)
		}
		if r.start.After(downAt) && r.end.Before(startAt) {
			whileDown++
			downLatencies = append(downLatencies, d)
			if r.status != http.StatusServiceUnavailable {
				t.Errorf("delivery %s while PostgreSQL was down: status %d, want 503", sent[i].sid, r.status)
			}
		}
	}
	sort.Slice(downLatencies, func(i, j int) bool { return downLatencies[i] < downLatencies[j] })
	if whileDown == 0 {
		t.Fatalf("no request was made while PostgreSQL was down")
	}
	p50, p99 := downLatencies[len(downLatencies)/2], downLatencies[len(downLatencies)*99/100]
	t.Logf("%d deliveries: %d answered 200, %d 503; %d while PostgreSQL was down, answered in p50 %s, p99 %s; slowest of all %s",
		len(results), okN, unavailable, whileDown, p50.Round(time.Microsecond), p99.Round(time.Microsecond), slowest.Round(time.Millisecond))
	if p99 > time.Second {
		t.Errorf("requests while PostgreSQL was down took p99 %s; want them to fail fast (< 1 s)", p99)
	}

	// /readyz: ready, then not while PostgreSQL is down, then ready again.
	var sawDown, sawUpAgain bool
	for _, r := range readyLog {
		switch {
		case r.at.After(downAt) && r.at.Before(startAt) && !r.ok:
			sawDown = true
		case r.at.After(downAt) && r.at.Before(startAt) && r.ok:
			t.Errorf("/readyz answered ready at %s while PostgreSQL was down", r.at.Sub(downAt))
		case sawDown && r.at.After(upAt) && r.ok:
			sawUpAgain = true
		}
	}
	if !sawDown || !sawUpAgain || !readyLog[0].ok {
		t.Errorf("/readyz: ready at first %v, not ready while down %v, ready again %v; want all three",
			readyLog[0].ok, sawDown, sawUpAgain)
	}

	events, messages := a.stored(t)
	for i, r := range results {
		sid := sent[i].sid
		if r.status == http.StatusOK && (events[sid] != 1 || messages[sid] != 1) {
			t.Errorf("%s was answered 200 but is stored %d times as an event, %d as a message; want 1", sid, events[sid], messages[sid])
		}
		if events[sid] > 1 || messages[sid] > 1 {
			t.Errorf("%s is stored more than once", sid)
		}
	}
	var dead int
	if err := a.conn(t).QueryRow(context.Background(), `SELECT count(*) FROM dead_letters`).Scan(&dead); err != nil {
		t.Fatal(err)
	}
	if dead != 0 {
		t.Errorf("%d dead letters: an outage must be answered 503 and retried, never dead-lettered", dead)
	}
}

type readiness struct {
	at time.Time
	ok bool
}
