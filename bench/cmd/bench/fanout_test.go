package main

import (
	"slices"
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
