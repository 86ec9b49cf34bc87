// Package load runs closed-loop load: a fixed number of workers call an
// operation back to back for a duration, and the run reports throughput,
// latency percentiles and errors.
package load

import (
	"context"
	"fmt"
	"math"
	"slices"
	"sync"
	"time"
)

// Result summarizes one run.
type Result struct {
	Name        string
	Workers     int
	Ops         int
	Errors      int
	FirstError  string
	Elapsed     time.Duration
	P50, P99    time.Duration
	Max         time.Duration
	UnitsPerOp  int // events per request, for batch runs
	Description string
}

// PerSecond is completed operations per second.
func (r Result) PerSecond() float64 { return float64(r.Ops) / r.Elapsed.Seconds() }

// UnitsPerSecond is PerSecond times UnitsPerOp.
func (r Result) UnitsPerSecond() float64 { return r.PerSecond() * float64(max(r.UnitsPerOp, 1)) }

// String formats the result as one line.
func (r Result) String() string {
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
