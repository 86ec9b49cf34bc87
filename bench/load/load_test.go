package load

import (
	"context"
	"testing"
	"time"
)

// Percentile takes the nearest rank, ceil(p·n): the smallest value that at
// least a share p of the values do not exceed.
func TestPercentile(t *testing.T) {
	seq := func(n int) []time.Duration {
		d := make([]time.Duration, n)
		for i := range d {
			d[i] = time.Duration(i + 1)
		}
		return d
	}
	for _, c := range []struct {
		n    int
		p    float64
		want time.Duration
	}{
		{100, 0.99, 99},
		{100, 0.50, 50},
		{100, 1, 100},
		{100, 0.07, 7}, // 0.07·100 is 7.000000000000001 in float64
		{100, 0.001, 1},
		{4, 0.50, 2},
		{4, 0.99, 4},
		{4, 0.25, 1},
		{1000, 0.99, 990},
		{1000, 0.999, 999},
		{1, 0.50, 1},
		{1, 0.99, 1},
		{3, 0.50, 2},
	} {
		if got := Percentile(seq(c.n), c.p); got != c.want {
			t.Errorf("Percentile(1..%d, %v) = %d, want %d", c.n, c.p, got, c.want)
		}
	}
	if got := Percentile(nil, 0.99); got != 0 {
		t.Errorf("Percentile(nil) = %v, want 0", got)
	}
}

// stalled is an operation that takes 1 ms, except that a call made during
// the stall [from, to) after start waits for the stall's end, as requests
// to a server that stopped answering do.
func stalled(start time.Time, from, to time.Duration) func() error {
	return func() error {
		if since := time.Since(start); since >= from && since < to {
			time.Sleep(to - since)
		}
		time.Sleep(time.Millisecond)
		return nil
	}
}

// The review's stall: 4 workers, a 1 ms operation and a 400 ms stall in a
// 2 s run. Closed-loop, each worker records the stall once and times the
// rest from its own sends, so the p99 stays near 1 ms; it still does
// (Run's figures keep their meaning). Open-loop at 1,000/s with 4 senders,
// the 400 requests scheduled during the stall each wait for its end, and
// the p99 shows it.
func TestStallShowsInOpenLoopP99(t *testing.T) {
	const (
		d            = 2 * time.Second
		from, to     = 800 * time.Millisecond, 1200 * time.Millisecond
		stall        = to - from
		rate, sender = 1000, 4
	)
	start := time.Now()
	op := stalled(start, from, to)
	closed := Run(t.Context(), "closed", sender, d, 0, func(context.Context, int, int) error { return op() })
	t.Log(closed)
	if closed.Errors != 0 || closed.Ops < 1000 {
		t.Fatalf("closed-loop: %d ops, %d errors; want ≥ 1000 ops and none", closed.Ops, closed.Errors)
	}
	if closed.P99 >= 50*time.Millisecond {
		t.Errorf("closed-loop p99 = %v, want < 50ms: Run times each call from its own send", closed.P99)
	}
	if closed.Max < stall*3/4 {
		t.Errorf("closed-loop max = %v, want the stall (≥ %v)", closed.Max, stall*3/4)
	}

	start = time.Now()
	op = stalled(start, from, to)
	open := RunRate(t.Context(), "open", rate, sender, d, func(context.Context, int) error { return op() })
	t.Log(open)
	if open.Scheduled != 2000 || open.Ops != 2000 || open.Errors != 0 || open.Unsent != 0 {
		t.Fatalf("open-loop: scheduled %d, ops %d, errors %d, unsent %d; want 2000, 2000, 0, 0",
			open.Scheduled, open.Ops, open.Errors, open.Unsent)
	}
	if open.P99 < 100*time.Millisecond {
		t.Errorf("open-loop p99 = %v, want ≥ 100ms: the requests due during the stall wait for it", open.P99)
	}
	if open.Max < stall*3/4 {
		t.Errorf("open-loop max = %v, want the stall (≥ %v)", open.Max, stall*3/4)
	}
	// The 4 senders are stuck for the stall: most of the requests due in
	// it cannot start on time.
	if open.Late < 300 {
		t.Errorf("open-loop late = %d, want ≥ 300 of the 400 due during the stall", open.Late)
	}
	if open.P50 >= 50*time.Millisecond {
		t.Errorf("open-loop p50 = %v, want < 50ms: outside the stall the operation takes 1 ms", open.P50)
	}
}

// A backlog larger than the pool at the end of the run is still sent and
// timed from its schedule: a stall over the run's end drops nothing.
func TestOpenLoopSendsTheBacklog(t *testing.T) {
	const d = time.Second
	start := time.Now()
	op := stalled(start, 800*time.Millisecond, 1300*time.Millisecond)
	r := RunRate(t.Context(), "open", 500, 2, d, func(context.Context, int) error { return op() })
	t.Log(r)
	if r.Scheduled != 500 || r.Ops != 500 || r.Errors != 0 || r.Unsent != 0 {
		t.Fatalf("scheduled %d, ops %d, errors %d, unsent %d; want 500, 500, 0, 0", r.Scheduled, r.Ops, r.Errors, r.Unsent)
	}
	if r.Max < 400*time.Millisecond || r.Elapsed < 1300*time.Millisecond {
		t.Errorf("max %v, elapsed %v; want max ≥ 400ms (due at 800ms, sent at 1300ms) and elapsed ≥ 1.3s", r.Max, r.Elapsed)
	}
	if r.PerSecond() >= 500 {
		t.Errorf("achieved %.0f/s, want below the scheduled 500/s: the backlog outlasted the run", r.PerSecond())
	}
}

// Requests still unstarted when the drain ends are counted as unsent
// errors, not left out.
func TestOpenLoopCountsUnsent(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
	defer cancel()
	r := RunRate(ctx, "open", 100, 1, time.Second, func(ctx context.Context, _ int) error {
		<-ctx.Done()
		return ctx.Err()
	})
	t.Log(r)
	if r.Scheduled != 100 || r.Ops != 0 || r.Errors != 100 || r.Unsent != 99 {
		t.Fatalf("scheduled %d, ops %d, errors %d, unsent %d; want 100, 0, 100, 99", r.Scheduled, r.Ops, r.Errors, r.Unsent)
	}
}

// Achieved counts acknowledged requests per second of the schedule, and
// allows the last answers a tail past its end: a server that keeps up
// achieves the schedule, where PerSecond, to the last answer, falls a
// little under it; one whose answers end later than the tail after the
// schedule does not.
func TestAchieved(t *testing.T) {
	r := Result{Rate: 5000, Scheduled: 50_000, Ops: 50_000, Elapsed: 10*time.Second + 30*time.Millisecond}
	if r.ScheduledFor() != 10*time.Second {
		t.Errorf("ScheduledFor = %v, want 10s", r.ScheduledFor())
	}
	if got := r.Achieved(50 * time.Millisecond); got != 5000 {
		t.Errorf("last answer 30 ms after the schedule, 50 ms allowed: %.1f/s, want 5000/s", got)
	}
	if r.PerSecond() >= 5000 {
		t.Errorf("PerSecond = %.1f/s, want under the schedule", r.PerSecond())
	}
	r.Elapsed = 10*time.Second + 550*time.Millisecond // a backlog drained after the schedule
	if got, want := r.Achieved(50*time.Millisecond), 50_000/10.5; got != want {
		t.Errorf("last answer 550 ms after the schedule, 50 ms allowed: %.1f/s, want %.1f/s", got, want)
	}
	r.Elapsed, r.Ops = 10*time.Second, 49_000 // 1,000 errors
	if got := r.Achieved(50 * time.Millisecond); got != 4900 {
		t.Errorf("49,000 of 50,000 acknowledged: %.1f/s, want 4900/s", got)
	}
	if got := (Result{Ops: 10, Elapsed: time.Second}).Achieved(0); got != 0 {
		t.Errorf("closed loop: %v, want 0", got)
	}
}

// An idle sender's timer wakes it late (its netpoll wait is in whole
// milliseconds; p50 0.6 ms for 5 ms waits on the project's machine): that
// is the load generator's delay, and a request it delays is timed from the
// wake, not from its schedule. An operation that takes no time then has
// times near zero, and the timer's lateness is reported apart (WakeP50).
// Timed from the schedule, the p50 was the timer's 0.6 ms.
func TestOpenLoopLeavesOutTheTimersLateness(t *testing.T) {
	r := RunRate(t.Context(), "open", 200, 2, time.Second, func(context.Context, int) error { return nil })
	t.Log(r)
	if r.Ops != 200 || r.Errors != 0 {
		t.Fatalf("ops %d, errors %d; want 200 and none", r.Ops, r.Errors)
	}
	if r.P50 >= 250*time.Microsecond {
		t.Errorf("p50 = %v for an operation that takes no time, want < 250µs: the timer's lateness (p50 %v) is the load generator's", r.P50, r.WakeP50)
	}
}
