package main

import (
	"slices"
	"strings"
	"testing"
	"time"
)

// The fan-out tally counts deliveries per (connection, write) against the
// subscription map. 10 connections on 4 customers (--fanout-shared 4: 3,
// 3, 2 and 2 subscribers) and 5 writes make 13 deliveries, not
// writes·(10/4) = 10; a duplicate and a misrouted change make the message
// count look complete while one delivery is missing.
func TestFanoutTally(t *testing.T) {
	subOf := make([]int, 10)
	for i := range subOf {
		subOf[i] = i % 4
	}
	target := []int{0, 1, 2, 3, 0}
	tally := newFanoutTally(subOf, 4, target)
	if got, want := tally.want(), 13; got != want {
		t.Fatalf("want() = %d, want %d", got, want)
	}
	sent := time.Now()
	messages := 0
	for k, c := range target {
		for conn, sc := range subOf {
			if sc != c || (conn == 4 && k == 0) { // connection 4 misses write 0
				continue
			}
			tally.add(conn, int64(k), sent, sent.Add(time.Millisecond))
			messages++
		}
	}
	tally.add(1, 1, sent, sent.Add(2*time.Millisecond)) // again
	tally.add(2, 0, sent, sent.Add(time.Millisecond))   // connection 2 is customer 2's, write 0 changed customer 0
	tally.add(3, 99, sent, sent.Add(time.Millisecond))  // no such write
	messages += 3
	if messages < tally.want() {
		t.Fatalf("messages %d < want %d: the case does not hide the miss", messages, tally.want())
	}
	if got, want := tally.arrived(), 12; got != want {
		t.Errorf("arrived() = %d, want %d", got, want)
	}
	r := tally.result()
	if len(r.firsts) != 12 || !slices.Equal(r.missing, []int64{0}) || r.duplicate != 1 || r.misrouted != 2 {
		t.Errorf("result: %d first deliveries, missing writes %v, %d duplicate, %d misrouted; want 12, [0], 1, 2",
			len(r.firsts), r.missing, r.duplicate, r.misrouted)
	}
	for _, d := range r.firsts {
		if d.at.Sub(d.sent) != time.Millisecond {
			t.Errorf("write %d: latency %v, want the first delivery's 1ms", d.write, d.at.Sub(d.sent))
		}
	}
}

// TestOfferedRate: the fan-out prints the rate its writes were sent at,
// from their send times in any order, and flags a shortfall from
// --fanout-rate, which the ticker's dropped ticks and busy writers made
// silent.
func TestOfferedRate(t *testing.T) {
	t0 := time.Now()
	sent := make([]time.Time, 500)
	for k := range sent {
		sent[k] = t0.Add(time.Duration(k) * 5 * time.Millisecond) // 200/s
	}
	sent[3], sent[400] = sent[400], sent[3] // writers finish out of order
	if got := offeredRate(sent); got < 199.99 || got > 200.01 {
		t.Errorf("500 writes 5 ms apart: %.2f/s, want 200/s", got)
	}
	if got := offeredLine(200, 200); strings.Contains(got, "SHORT") || !strings.Contains(got, "offered at 200/s (--fanout-rate 200/s)") {
		t.Errorf("on pace: %q", got)
	}
	slow := make([]time.Time, 500)
	for k := range slow {
		slow[k] = t0.Add(time.Duration(k) * 8 * time.Millisecond) // 125/s
	}
	slow[10] = time.Time{} // a write never sent is left out
	if got := offeredLine(offeredRate(slow), 200); !strings.Contains(got, "offered at 125/s") || !strings.Contains(got, "SHORT by 38%") {
		t.Errorf("125/s of 200/s: %q", got)
	}
	if got := offeredRate(sent[:1]); got != 0 {
		t.Errorf("one write: %v, want 0", got)
	}
}
