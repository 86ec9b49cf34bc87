package hub

import (
	"errors"
	"testing"

	"github.com/c360dev/c360"
)

// A topic's subscribers leave in any order, each keeping its index right,
// and a fan-out that drops a slow subscriber still reaches every other one
// once (it walks the slice the drops reorder).
func TestTopicSubscribers(t *testing.T) {
	h := New(nil, Options{QueueSize: 1})
	var subs []*subscriber
	for range 6 {
		s, err := h.register(1, 2)
		if err != nil {
			t.Fatal(err)
		}
		subs = append(subs, s)
	}
	tp := subs[0].topic
	check := func() {
		t.Helper()
		for i, s := range tp.subs {
			if s.idx != i || s.closed {
				t.Fatalf("subscriber at %d has index %d, closed %v", i, s.idx, s.closed)
			}
		}
	}
	h.unregister(subs[2]) // a middle one
	h.unregister(subs[0]) // the first
	h.unregister(subs[5]) // the last
	check()
	if len(tp.subs) != 3 {
		t.Fatalf("%d subscribers left, want 3", len(tp.subs))
	}

	// subs[1] and subs[4] are full (QueueSize 1): the next change drops them.
	first := &Change{Change: c360.Change{Version: 1}}
	h.mu.Lock()
	for _, s := range []*subscriber{subs[1], subs[4]} {
		h.deliver(s, first)
	}
	h.fanout(tp, &Change{Change: c360.Change{Version: 2}})
	h.mu.Unlock()
	check()
	if len(tp.subs) != 1 || tp.subs[0] != subs[3] {
		t.Fatalf("left %v, want subscriber 3 alone", tp.subs)
	}
	for _, i := range []int{1, 4} {
		if c, _ := subs[i].q.pop(t.Context()); c != first {
			t.Fatalf("subscriber %d: got %v, want its first change", i, c)
		}
		if _, err := subs[i].q.pop(t.Context()); !errors.Is(err, ErrSlow) {
			t.Fatalf("subscriber %d: %v, want ErrSlow", i, err)
		}
	}
	if q := subs[3].q.changes; len(q) != 1 || q[0].Version != 2 {
		t.Fatalf("subscriber 3 holds %v, want version 2", q)
	}
	h.unregister(subs[3])
	if _, ok := h.topics[tp.topicKey]; ok || tp.subs != nil {
		t.Fatal("the topic outlived its last subscriber")
	}
}
