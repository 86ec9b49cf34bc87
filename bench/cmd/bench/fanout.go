package main

import (
	"bufio"
	"bytes"
	"context"
	"flag"
	"fmt"
	"math/rand/v2"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/gorilla/websocket"

	"github.com/c360dev/c360"
	"github.com/c360dev/c360/bench/load"
	"github.com/c360dev/c360/postgres"
)

// fanoutConfig is the fan-out benchmark's flags.
type fanoutConfig struct {
	subscribers string
	writes      int
	rate        int
	shared      int
	idle        time.Duration
}

// fanoutFlags registers the fan-out flags on the command's flag set.
func fanoutFlags(fs *flag.FlagSet) *fanoutConfig {
	fc := &fanoutConfig{}
	fs.StringVar(&fc.subscribers, "subscribers", "1000,10000", "fan-out: websocket subscribers per run")
	fs.IntVar(&fc.writes, "fanout-writes", 500, "fan-out: targeted changes written per run")
	fs.IntVar(&fc.rate, "fanout-rate", 200, "fan-out: changes written per second")
	fs.IntVar(&fc.shared, "fanout-shared", 0, "fan-out: subscribers share this many customers (0: one customer each)")
	fs.DurationVar(&fc.idle, "fanout-idle", 2*time.Second, "fan-out: how long subscribers sit idle before the server's RSS is read")
	return fc
}

// benchFanout measures subscriptions at scale against a real server
// process: RSS per idle subscriber, and ingest-to-delivery latency of
// targeted changes (each change reaches the subscribers of its customer).
// A run fails when a change was missed, delivered twice or to a
// connection of another customer, or when a connection or subscription
// ended: its latencies would not be those of a working fan-out.
func benchFanout(ctx context.Context, cfg config, fc *fanoutConfig) error {
	raiseFileLimit()
	counts, err := parseCounts("--subscribers", fc.subscribers)
	if err != nil {
		return err
	}
	for _, n := range counts {
		if err := fanoutRun(ctx, cfg, fc, n); err != nil {
			return fmt.Errorf("fan-out with %d subscribers: %w", n, err)
		}
	}
	return nil
}

// raiseFileLimit lifts the soft limit on open files to the hard one: 10k
// websockets need 10k descriptors here and in the server, which inherits it.
func raiseFileLimit() {
	var l syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l); err == nil && l.Cur < l.Max {
		l.Cur = l.Max
		syscall.Setrlimit(syscall.RLIMIT_NOFILE, &l)
	}
}

func fanoutRun(ctx context.Context, cfg config, fc *fanoutConfig, n int) error {
	customers := n
	if fc.shared > 0 {
		customers = fc.shared
	}
	db, err := postgres.Open(ctx, cfg.databaseURL)
	if err != nil {
		return err
	}
	defer db.Close()
	slug := fmt.Sprintf("fanout-%d-%d", n, time.Now().Unix())
	creds, err := db.CreateWorkspace(ctx, slug, "fan-out benchmark")
	if err != nil {
		return err
	}
	emails := make([]string, customers)
	ids := make([]int64, customers)
	for start := 0; start < customers; start += 500 {
		var evs []*c360.Event
		for i := start; i < min(start+500, customers); i++ {
			emails[i] = fmt.Sprintf("fanout-%d@bench.example", i)
			now := time.Now().UTC()
			evs = append(evs, &c360.Event{Type: c360.EventIdentify, Identities: []c360.Identity{{Type: "email", Value: emails[i]}},
				Source: "bench", DedupeKey: emails[i], OccurredAt: now, ReceivedAt: now})
		}
		res, err := db.Ingest(ctx, creds.ID, evs)
		if err != nil {
			return err
		}
		for j, r := range res {
			ids[start+j] = r.CustomerID
		}
	}

	// The workspace's customers were created a moment ago: analyze them, as
	// autovacuum eventually would, so the writes below are not planned on
	// statistics that have never seen the workspace (see BENCHMARKS.md).
	if _, err := db.Pool.Exec(ctx, `ANALYZE customers, identities, events, customer_changes`); err != nil {
		return fmt.Errorf("analyze: %w", err)
	}
	srv, err := startServer(ctx, cfg, "C360_RATE_KEY_RPS=1000000", "C360_RATE_KEY_BURST=1000000", "C360_SUBSCRIBER_QUEUE=256")
	if err != nil {
		return err
	}
	defer srv.Stop()
	mode := "one customer each"
	if fc.shared > 0 {
		mode = fmt.Sprintf("%d shared customers", fc.shared)
	}
	fmt.Printf("\n## fan-out: %d websocket subscribers (%s), %d targeted changes at %d/s\n", n, mode, fc.writes, fc.rate)
	time.Sleep(time.Second)
	rss0 := srv.RSS()

	// Each change goes to a different customer while there are enough; when
	// there are fewer customers than writes, writes to one customer wait
	// for each other (custMu): two concurrent ones may commit out of order,
	// and the older trait value then changes nothing, so its change would
	// be counted missing.
	order := rand.Perm(customers)
	custMu := make([]sync.Mutex, customers)
	target := make([]int, fc.writes)
	for k := range target {
		target[k] = order[k%customers]
	}
	subOf := make([]int, n)
	for i := range subOf {
		subOf[i] = i % customers
	}
	tally := newFanoutTally(subOf, customers, target)
	var (
		closed atomic.Int64
		// ended counts subscriptions the server ended (an error or
		// complete message) while their connection stayed open.
		ended     atomic.Int64
		closeWhy  atomic.Value
		endedWhat atomic.Value
	)
	wsURL := "ws" + strings.TrimPrefix(srv.URL, "http") + "/graphql"
	conns := make([]*websocket.Conn, n)
	var readers sync.WaitGroup
	dialStart := time.Now()
	jobs := make(chan int)
	var dialers sync.WaitGroup
	var dialErr atomic.Value
	for w := 0; w < 64; w++ {
		dialers.Add(1)
		go func() {
			defer dialers.Done()
			d := websocket.Dialer{Subprotocols: []string{"graphql-transport-ws"}, HandshakeTimeout: 30 * time.Second,
				ReadBufferSize: 1024, WriteBufferSize: 1024}
			for i := range jobs {
				c, err := subscribeOne(d, wsURL, creds.APIKey, ids[subOf[i]])
				if err != nil {
					dialErr.Store(err)
					continue
				}
				conns[i] = c
				readers.Add(1)
				go func() {
					defer readers.Done()
					for {
						_, msg, err := c.ReadMessage()
						if err != nil {
							closed.Add(1)
							closeWhy.CompareAndSwap(nil, err.Error())
							return
						}
						t0, ok := traitNumber(msg, "t0")
						w, okW := traitNumber(msg, "w")
						switch {
						case ok && okW:
							tally.add(i, w, time.UnixMicro(t0), time.Now())
						case bytes.Contains(msg, []byte(`"type":"error"`)) || bytes.Contains(msg, []byte(`"type":"complete"`)):
							ended.Add(1)
							endedWhat.CompareAndSwap(nil, string(msg[:min(len(msg), 200)]))
						}
					}
				}()
			}
		}()
	}
	for i := 0; i < n; i++ {
		jobs <- i
	}
	close(jobs)
	dialers.Wait()
	defer func() {
		for _, c := range conns {
			if c != nil {
				c.Close()
			}
		}
		readers.Wait()
	}()
	if err, ok := dialErr.Load().(error); ok {
		return fmt.Errorf("subscribe: %w", err)
	}
	if err := waitSubscriptions(ctx, srv.URL, n); err != nil {
		return err
	}
	fmt.Printf("  %d subscribed in %.1fs\n", n, time.Since(dialStart).Seconds())
	time.Sleep(fc.idle)
	rss1 := srv.RSS()
	fmt.Printf("  server RSS: %.1f MiB before, %.1f MiB with %d idle subscribers: %.1f KiB per subscriber\n",
		float64(rss0)/(1<<20), float64(rss1)/(1<<20), n, float64(rss1-rss0)/float64(n)/1024)

	// Targeted changes through the server's GraphQL API, paced.
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 16}}
	tick := time.NewTicker(time.Second / time.Duration(fc.rate))
	defer tick.Stop()
	var writers sync.WaitGroup
	var writeErr atomic.Value
	var wmu sync.Mutex
	var writeLat []time.Duration
	answered := map[int64]time.Time{} // a write's index -> its answer
	sentAt := make([]time.Time, fc.writes)
	sem := make(chan struct{}, 16)
	writeStart := time.Now()
	for k := 0; k < fc.writes; k++ {
		<-tick.C
		sem <- struct{}{}
		writers.Add(1)
		go func() {
			defer writers.Done()
			defer func() { <-sem }()
			custMu[target[k]].Lock()
			defer custMu[target[k]].Unlock()
			start := time.Now()
			sentAt[k] = start
			if err := identifyAt(ctx, client, srv.URL, creds.APIKey, emails[target[k]], k, start); err != nil {
				writeErr.Store(err)
			}
			wmu.Lock()
			writeLat = append(writeLat, time.Since(start))
			answered[int64(k)] = time.Now()
			wmu.Unlock()
		}()
	}
	writers.Wait()
	if err, ok := writeErr.Load().(error); ok {
		return fmt.Errorf("write: %w", err)
	}
	want := tally.want()
	deadline := time.Now().Add(30 * time.Second)
	for tally.arrived() < want && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	elapsed := time.Since(writeStart)
	// A duplicate or a misrouted change would arrive about when the right
	// ones do: give them a moment before counting.
	time.Sleep(250 * time.Millisecond)
	waitEnd := time.Now()
	// The send-to-delivery time includes the write's commit, and so any
	// stall of PostgreSQL's WAL flush (BENCHMARKS.md). Measured from the
	// write's answer instead, what remains is the fan-out's own part less
	// the answer's trip back (the answer follows the commit): a lower bound
	// of it. A change delivered before its answer reached the load
	// generator counts as 0.
	//
	// A missing delivery counts in the send-to-delivery percentiles as
	// arriving when the wait ended: a lower bound of its latency, so that
	// missing ones cannot make the p99 look better.
	var lat, after []time.Duration
	tl := tally.result()
	for _, d := range tl.firsts {
		lat = append(lat, d.at.Sub(d.sent))
		if a, ok := answered[d.write]; ok {
			after = append(after, max(0, d.at.Sub(a)))
		}
	}
	for _, k := range tl.missing {
		lat = append(lat, waitEnd.Sub(sentAt[k]))
	}
	closedNow, endedNow := closed.Load(), ended.Load()
	slices.Sort(lat)
	slices.Sort(after)
	slices.Sort(writeLat)
	pct := func(p float64) time.Duration { return load.Percentile(lat, p).Round(10 * time.Microsecond) }
	round := func(d time.Duration) time.Duration { return d.Round(10 * time.Microsecond) }
	fmt.Printf("  delivered %d of %d in %.1fs; ingest-to-delivery p50 %s, p99 %s, max %s (missing ones count as arriving at the end of the wait)\n",
		len(tl.firsts), want, elapsed.Seconds(), pct(0.50), pct(0.99), pct(1))
	fmt.Printf("  errors: %d missing, %d duplicate, %d misrouted; connections closed: %d; subscriptions ended: %d\n",
		len(tl.missing), tl.duplicate, tl.misrouted, closedNow, endedNow)
	fmt.Printf("  write (GraphQL identify, commit included) p50 %s, p99 %s\n",
		round(load.Percentile(writeLat, 0.50)), round(load.Percentile(writeLat, 0.99)))
	fmt.Println(offeredLine(offeredRate(sentAt), fc.rate))
	fmt.Printf("  delivery after the write's answer (the fan-out's part less the answer's trip): p50 %s, p99 %s, max %s (%d of %d changes matched)\n",
		round(load.Percentile(after, 0.50)), round(load.Percentile(after, 0.99)), round(load.Percentile(after, 1)), len(after), len(tl.firsts))
	fmt.Printf("| fan-out | %d | %s | %d | %s | %s | %.1f KiB |\n", n, mode, len(tl.firsts),
		pct(0.50), pct(0.99), float64(rss1-rss0)/float64(n)/1024)
	if len(tl.missing) > 0 || tl.duplicate > 0 || tl.misrouted > 0 || closedNow > 0 || endedNow > 0 {
		why := ""
		if v, ok := closeWhy.Load().(string); ok {
			why += "; first close: " + v
		}
		if v, ok := endedWhat.Load().(string); ok {
			why += "; first ended: " + v
		}
		return fmt.Errorf("%d of %d deliveries missing, %d duplicate, %d misrouted; %d connections closed, %d subscriptions ended%s",
			len(tl.missing), want, tl.duplicate, tl.misrouted, closedNow, endedNow, why)
	}
	return nil
}

// fanoutTally counts the fan-out's deliveries per (connection, write)
// against the subscription map: which customer each connection subscribed
// to, and which customer each write changed. Counting messages instead
// lets a duplicate hide a miss, and a change delivered to the wrong
// customer's subscriber pass for a right one.
type fanoutTally struct {
	subOf   []int   // a connection's index -> its customer's index
	target  []int   // a write's index -> the customer it changed
	connsOf [][]int // a customer's index -> the connections subscribed to it

	mu        sync.Mutex
	seen      map[[2]int]int // (connection, write) -> deliveries
	firsts    []delivery     // the first delivery of each expected pair
	duplicate int
	misrouted int
}

// newFanoutTally returns a tally for connections subscribed as subOf says,
// to customers customers, and writes changing target's customers.
func newFanoutTally(subOf []int, customers int, target []int) *fanoutTally {
	t := &fanoutTally{subOf: subOf, target: target, connsOf: make([][]int, customers), seen: map[[2]int]int{}}
	for conn, c := range subOf {
		t.connsOf[c] = append(t.connsOf[c], conn)
	}
	return t
}

// want is how many deliveries the writes make: each reaches every
// connection subscribed to its customer, however many that is.
func (t *fanoutTally) want() int {
	n := 0
	for _, c := range t.target {
		n += len(t.connsOf[c])
	}
	return n
}

// add records that connection conn got write's change, sent at sent.
func (t *fanoutTally) add(conn int, write int64, sent, at time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if write < 0 || write >= int64(len(t.target)) || t.target[write] != t.subOf[conn] {
		t.misrouted++
		return
	}
	key := [2]int{conn, int(write)}
	t.seen[key]++
	if t.seen[key] > 1 {
		t.duplicate++
		return
	}
	t.firsts = append(t.firsts, delivery{write: write, sent: sent, at: at})
}

// arrived is how many expected deliveries arrived, each counted once.
func (t *fanoutTally) arrived() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.firsts)
}

// fanoutResult is a tally's count: the first delivery of each expected
// (connection, write), the write of each expected one that never came,
// and the errors.
type fanoutResult struct {
	firsts               []delivery
	missing              []int64
	duplicate, misrouted int
}

// result counts the tally.
func (t *fanoutTally) result() fanoutResult {
	t.mu.Lock()
	defer t.mu.Unlock()
	r := fanoutResult{firsts: slices.Clone(t.firsts), duplicate: t.duplicate, misrouted: t.misrouted}
	for k, c := range t.target {
		for _, conn := range t.connsOf[c] {
			if t.seen[[2]int{conn, k}] == 0 {
				r.missing = append(r.missing, int64(k))
			}
		}
	}
	return r
}

// subscribeOne opens a websocket, authenticates and subscribes to one
// customer's changes.
func subscribeOne(d websocket.Dialer, url, key string, customer int64) (*websocket.Conn, error) {
	c, _, err := d.Dial(url, nil)
	if err != nil {
		return nil, err
	}
	c.SetReadDeadline(time.Now().Add(30 * time.Second))
	if err := c.WriteJSON(map[string]any{"type": "connection_init", "payload": map[string]any{"authorization": "Bearer " + key}}); err != nil {
		c.Close()
		return nil, err
	}
	var ack struct{ Type string }
	if err := c.ReadJSON(&ack); err != nil || ack.Type != "connection_ack" {
		c.Close()
		return nil, fmt.Errorf("init: %v %q", err, ack.Type)
	}
	c.SetReadDeadline(time.Time{})
	err = c.WriteJSON(map[string]any{"type": "subscribe", "id": "1", "payload": map[string]any{
		"query":     `subscription($id: ID!) { customerChanged(id: $id) { version diff } }`,
		"variables": map[string]any{"id": strconv.FormatInt(customer, 10)},
	}})
	if err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// traitNumber finds the number a change carries in its trait name (t0, the
// write's send time; w, its index).
func traitNumber(msg []byte, name string) (int64, bool) {
	tag := []byte(`"` + name + `":`)
	i := bytes.Index(msg, tag)
	if i < 0 {
		return 0, false
	}
	rest := msg[i+len(tag):]
	j := bytes.IndexAny(rest, ",}")
	if j < 0 {
		return 0, false
	}
	f, err := strconv.ParseFloat(string(rest[:j]), 64)
	return int64(f), err == nil
}

// delivery is a change as a subscriber got it.
type delivery struct {
	write    int64 // the write's index (the trait w)
	sent, at time.Time
}

// identifyAt writes a trait change through GraphQL that carries its send
// time (t0) and the write's index (w).
func identifyAt(ctx context.Context, client *http.Client, base, key, email string, write int, sent time.Time) error {
	_, err := gqlPost(ctx, client, base, key, map[string]any{
		"query": `mutation($i: IdentifyInput!) { identify(input: $i) { version } }`,
		"variables": map[string]any{"i": map[string]any{
			"identities": []map[string]any{{"type": "email", "value": email}},
			"traits":     map[string]any{"t0": sent.UnixMicro(), "w": write}}},
	})
	return err
}

// waitSubscriptions polls /metrics until the server has n open streams.
func waitSubscriptions(ctx context.Context, base string, n int) error {
	deadline := time.Now().Add(120 * time.Second)
	got := 0.0
	for time.Now().Before(deadline) {
		resp, err := http.Get(base + "/metrics")
		if err == nil {
			sc := bufio.NewScanner(resp.Body)
			for sc.Scan() {
				if v, ok := strings.CutPrefix(sc.Text(), "c360_subscriptions "); ok {
					got, _ = strconv.ParseFloat(v, 64)
				}
			}
			resp.Body.Close()
			if int(got) >= n {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	return fmt.Errorf("server has %.0f of %d subscriptions after 120s", got, n)
}

// offeredRate is the rate the writes were sent at: sends per second from
// the first to the last (each write's send time, in any order; zero ones
// left out). The pacing can fall short of --fanout-rate unseen: a
// time.Ticker drops the ticks a slow receiver misses, and a write is sent
// only once one of the 16 writers is free and its customer's previous
// write is answered.
func offeredRate(sent []time.Time) float64 {
	var first, last time.Time
	n := 0
	for _, t := range sent {
		if t.IsZero() {
			continue
		}
		if n == 0 || t.Before(first) {
			first = t
		}
		if n == 0 || t.After(last) {
			last = t
		}
		n++
	}
	if n < 2 || !last.After(first) {
		return 0
	}
	return float64(n-1) / last.Sub(first).Seconds()
}

// offeredLine prints the offered rate beside --fanout-rate, and says so
// when it fell short by more than 5%: the latencies are then those of a
// lighter load.
func offeredLine(offered float64, rate int) string {
	s := fmt.Sprintf("  writes offered at %.0f/s (--fanout-rate %d/s)", offered, rate)
	if offered < 0.95*float64(rate) {
		s += fmt.Sprintf(": SHORT by %.0f%%, the writers could not keep the pace (busy writers, dropped ticks)", 100*(1-offered/float64(rate)))
	}
	return s
}
