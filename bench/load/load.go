// Package load runs load against an operation and reports throughput,
// latency percentiles and errors, in one of two modes.
//
// Run is closed-loop: a fixed number of workers call the operation back to
// back, each timing a call from its own send. It finds the throughput at a
// concurrency, but its latencies hide a stall: while the server stalls, the
// workers wait and send nothing, so the stall is recorded once per worker
// and not once per request that would have arrived meanwhile (coordinated
// omission). 4 workers, a 1 ms operation and a 400 ms stall in 2 s report
// a p99 of about 2 ms.
//
// RunRate is open-loop, as wrk2 measures: requests are scheduled at a fixed
// rate and each is timed from its scheduled send, so a request that could
// not start on time (the senders were all waiting on the server) counts the
// wait too. Its latencies are what a client sending at that rate sees.
package load

import (
	"context"
	"fmt"
	"math"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// Result summarizes one run.
type Result struct {
	Name        string
	Workers     int // closed-loop workers, or open-loop senders
	Ops         int // operations that succeeded
	Errors      int // operations that failed, and open-loop requests never sent
	FirstError  string
	Elapsed     time.Duration
	P50, P99    time.Duration
	Max         time.Duration
	UnitsPerOp  int // events per request, for batch runs
	Description string

	// Rate is the open-loop run's scheduled rate (requests per second); 0
	// for a closed-loop run.
	Rate float64
	// Scheduled is how many requests the open-loop run scheduled: Ops plus
	// Errors, Unsent included.
	Scheduled int
	// Late is how many open-loop requests started more than LateAfter past
	// their scheduled time, because every sender was busy.
	Late int
	// Unsent is how many open-loop requests had not started when the run's
	// drain ended; they count as errors.
	Unsent int
	// WakeP50 is, for an open-loop run, the median of how late the
	// senders' timers woke them for the requests they waited for: the load
	// generator's own lateness, left out of the requests' times.
	WakeP50 time.Duration
}

// LateAfter is how far past its scheduled time an open-loop request may
// start and not count as late: a timer's wake-up is not a backlog.
const LateAfter = time.Millisecond

// PerSecond is completed operations per second.
func (r Result) PerSecond() float64 { return float64(r.Ops) / r.Elapsed.Seconds() }

// ScheduledFor is how long the open-loop run's schedule lasted: Scheduled
// requests at Rate. 0 for a closed-loop run.
func (r Result) ScheduledFor() time.Duration {
	if r.Rate <= 0 {
		return 0
	}
	return time.Duration(float64(r.Scheduled) / r.Rate * float64(time.Second))
}

// Achieved is the open-loop run's acknowledged requests per second of its
// schedule, allowing tail for the last answers: Ops over ScheduledFor, or
// over the time to the last answer less tail when the answers outlasted
// the schedule by more than tail (a backlog the server never caught up
// with). PerSecond, over the time to the last answer, is always a little
// under the schedule even for a server that keeps up: the last request is
// answered its latency after the schedule's end. 0 for a closed-loop run.
func (r Result) Achieved(tail time.Duration) float64 {
	d := r.ScheduledFor()
	if d <= 0 {
		return 0
	}
	return float64(r.Ops) / max(d, r.Elapsed-tail).Seconds()
}

// UnitsPerSecond is PerSecond times UnitsPerOp.
func (r Result) UnitsPerSecond() float64 { return r.PerSecond() * float64(max(r.UnitsPerOp, 1)) }

// String formats the result as one line.
func (r Result) String() string {
	if r.Rate > 0 {
		return r.openString()
	}
	s := fmt.Sprintf("%-34s workers=%-4d ops=%-8d %10.0f/s p50=%-9s p99=%-9s max=%-9s errors=%d",
		r.Name, r.Workers, r.Ops, r.UnitsPerSecond(), r.P50.Round(time.Microsecond), r.P99.Round(time.Microsecond), r.Max.Round(time.Microsecond), r.Errors)
	if r.FirstError != "" {
		s += " (first: " + r.FirstError + ")"
	}
	return s
}

// Run calls op from workers goroutines for d and measures each call. op gets
// the worker number and a per-worker sequence number. Runs are bounded: they
// stop at d, or at maxOps calls when maxOps > 0.
func Run(ctx context.Context, name string, workers int, d time.Duration, maxOps int, op func(ctx context.Context, worker, seq int) error) Result {
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	var (
		mu       sync.Mutex
		all      []time.Duration
		errs     int
		firstErr string
		wg       sync.WaitGroup
		count    int
	)
	start := time.Now()
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			lat := make([]time.Duration, 0, 1024)
			e, fe := 0, ""
			for seq := 0; ctx.Err() == nil; seq++ {
				if maxOps > 0 {
					mu.Lock()
					if count >= maxOps {
						mu.Unlock()
						break
					}
					count++
					mu.Unlock()
				}
				t := time.Now()
				err := op(ctx, w, seq)
				if ctx.Err() != nil {
					break // cut off by the deadline: neither a success nor an error
				}
				if err != nil {
					e++
					if fe == "" {
						fe = err.Error()
					}
					continue
				}
				lat = append(lat, time.Since(t))
			}
			mu.Lock()
			all = append(all, lat...)
			errs += e
			if firstErr == "" {
				firstErr = fe
			}
			mu.Unlock()
		}()
	}
	wg.Wait()
	r := Result{Name: name, Workers: workers, Ops: len(all), Errors: errs, FirstError: firstErr, Elapsed: time.Since(start)}
	slices.Sort(all)
	r.P50, r.P99, r.Max = Percentile(all, 0.50), Percentile(all, 0.99), Percentile(all, 1)
	return r
}

// Percentile returns the p-th percentile (0 < p ≤ 1, 1 for the largest)
// of sorted durations by nearest rank: the smallest value that at least
// p of them do not exceed (p99 of 1..100 is 99, p50 of 1..4 is 2). 0 for
// none.
func Percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	// The rank is ceil(p·n); the tolerance keeps a product that float64
	// rounds just above an integer (0.07·100 = 7.000000000000001) on it.
	rank := int(math.Ceil(p*float64(len(sorted)) - 1e-9))
	return sorted[min(len(sorted)-1, max(0, rank-1))]
}

// openString formats an open-loop result as one line: the achieved rate
// beside the scheduled one, and the requests that started late.
func (r Result) openString() string {
	s := fmt.Sprintf("%-34s rate=%.0f/s senders=%-4d ops=%-8d %10.0f/s p50=%-9s p99=%-9s max=%-9s errors=%d late=%d",
		r.Name, r.Rate, r.Workers, r.Ops, r.UnitsPerSecond(), r.P50.Round(time.Microsecond), r.P99.Round(time.Microsecond), r.Max.Round(time.Microsecond), r.Errors, r.Late)
	if r.Unsent > 0 {
		s += fmt.Sprintf(" unsent=%d", r.Unsent)
	}
	s += fmt.Sprintf(" timer-wake-p50=%s", r.WakeP50.Round(time.Microsecond))
	if r.FirstError != "" {
		s += " (first: " + r.FirstError + ")"
	}
	return s
}

// RunRate schedules rate requests per second for d, the i-th at
// start + i/rate, and calls op(ctx, i) for each from a pool of senders
// goroutines. Each request is timed from its scheduled time, not from when
// a sender got to it: a request that waited for a free sender counts the
// wait (and counts as Late). A request whose sender was idle is timed from
// when its timer woke the sender, if that is after its scheduled time: the
// runtime's timers run up to a millisecond late on an idle machine, which is
// the load generator's lateness (WakeP50 reports it). Requests are taken in
// schedule order; none is dropped. The backlog left at d is still sent, for up to as long again
// (at least 5 s); what has not started by then counts as Unsent and as an
// error, and a call still running then is cut off as an error. Elapsed runs
// to the last answer, so the achieved rate falls below rate when the
// backlog outlasts the run.
func RunRate(ctx context.Context, name string, rate float64, senders int, d time.Duration, op func(ctx context.Context, seq int) error) Result {
	drain := max(d, 5*time.Second)
	ctx, cancel := context.WithTimeout(ctx, d+drain)
	defer cancel()
	scheduled := int(math.Ceil(rate*d.Seconds() - 1e-9))
	at := func(i int) time.Duration { return time.Duration(float64(i) * float64(time.Second) / rate) }
	var (
		next     atomic.Int64
		mu       sync.Mutex
		all      []time.Duration
		wakes    []time.Duration
		errs     int
		late     int
		tried    int
		firstErr string
		wg       sync.WaitGroup
	)
	start := time.Now()
	for range senders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			lat := make([]time.Duration, 0, 1024)
			var wake []time.Duration
			e, l, n, fe := 0, 0, 0, ""
			// Since Go 1.23 Reset leaves no stale tick behind, so one timer
			// serves every wait.
			timer := time.NewTimer(time.Hour)
			defer timer.Stop()
			for {
				i := int(next.Add(1) - 1)
				if i >= scheduled {
					break
				}
				due := start.Add(at(i))
				// sent is what the request is timed from: its scheduled
				// time, or, when this sender was idle and waited for it on
				// the timer, when the timer woke it. The runtime's timers
				// wake up to a millisecond late on an idle machine (their
				// netpoll wait is in whole milliseconds: p50 0.6 ms, p99
				// 1.2 ms for 5 ms waits on the project's machine), which
				// is the load generator's lateness, not the server's. A
				// request that waited for a free sender keeps its
				// scheduled time (the server's backlog, which coordinated
				// omission would hide).
				sent := due
				if wait := time.Until(due); wait > 0 {
					timer.Reset(wait)
					select {
					case <-timer.C:
					case <-ctx.Done():
					}
					if woke := time.Now(); woke.After(due) {
						sent = woke
						wake = append(wake, woke.Sub(due))
					}
				} else if -wait > LateAfter {
					l++
				}
				if ctx.Err() != nil {
					break // the drain ended before i started: counted as unsent
				}
				n++
				if err := op(ctx, i); err != nil {
					e++
					if fe == "" {
						fe = err.Error()
					}
					continue
				}
				lat = append(lat, time.Since(sent))
			}
			mu.Lock()
			all = append(all, lat...)
			wakes = append(wakes, wake...)
			errs += e
			late += l
			tried += n
			if firstErr == "" {
				firstErr = fe
			}
			mu.Unlock()
		}()
	}
	wg.Wait()
	r := Result{Name: name, Workers: senders, Ops: len(all), Errors: errs, FirstError: firstErr, Elapsed: time.Since(start),
		Rate: rate, Scheduled: scheduled, Late: late, Unsent: scheduled - tried}
	if r.Unsent > 0 {
		r.Errors += r.Unsent
		if r.FirstError == "" {
			r.FirstError = fmt.Sprintf("%d scheduled requests not started by the end of the drain", r.Unsent)
		}
	}
	slices.Sort(all)
	r.P50, r.P99, r.Max = Percentile(all, 0.50), Percentile(all, 0.99), Percentile(all, 1)
	slices.Sort(wakes)
	r.WakeP50 = Percentile(wakes, 0.50)
	return r
}
