package postgres

import (
	"encoding/json"
	"fmt"
	"slices"
	"testing"

	"github.com/c360dev/c360/identity"
)

// A person's events go to one worker whichever identifiers each carries,
// as long as the highest-ranked one is the same; a split keeps every event
// once, in order within its part.
func TestSplitRoutesAPersonToOneWorker(t *testing.T) {
	rules := identity.DefaultRules()
	ev := func(pairs ...string) *preparedEvent {
		p := &preparedEvent{}
		for i := 0; i+1 < len(pairs); i += 2 {
			p.identities = append(p.identities, identity.Identity{Type: pairs[i], Value: pairs[i+1]})
		}
		p.identities = identity.Sort(p.identities)
		return p
	}
	for u := range 50 {
		user := fmt.Sprintf("u-%d", u)
		want := shardOf(7, rules, ev("user_id", user), 2)
		for _, other := range [][]string{
			{"user_id", user, "anonymous_id", "a-" + user},
			{"user_id", user, "email", user + "@example.com"},
			{"email", user + "@example.com", "anonymous_id", "z", "user_id", user},
		} {
			if got := shardOf(7, rules, ev(other...), 2); got != want {
				t.Fatalf("%v: worker %d, want %d (that of user_id %s alone)", other, got, want, user)
			}
		}
	}

	b := &batcher{shards: make([]chan *ingestReq, 2)}
	var call []*preparedEvent
	for u := range 30 {
		call = append(call, ev("user_id", fmt.Sprintf("u-%d", u)))
	}
	parts, shards := b.split(t.Context(), 7, rules, call)
	if len(parts) != 2 || shards[0] == shards[1] {
		t.Fatalf("30 users split into %d parts on workers %v, want 2 parts on different workers", len(parts), shards)
	}
	var seen []int
	for k, r := range parts {
		if !slices.IsSorted(r.index) || len(r.index) != len(r.prepared) {
			t.Fatalf("part %d index %v for %d events", k, r.index, len(r.prepared))
		}
		for j, i := range r.index {
			if r.prepared[j] != call[i] {
				t.Fatalf("part %d event %d is not the call's event %d", k, j, i)
			}
			if shardOf(7, rules, call[i], 2) != shards[k] {
				t.Fatalf("event %d in the part of worker %d, routed to another", i, shards[k])
			}
		}
		seen = append(seen, r.index...)
	}
	slices.Sort(seen)
	if len(seen) != len(call) || len(slices.Compact(seen)) != len(call) {
		t.Fatalf("parts cover %v, want each of %d events once", seen, len(call))
	}

	one, _ := b.split(t.Context(), 7, rules, call[:1])
	if len(one) != 1 || one[0].index != nil {
		t.Fatalf("a one-event call split into %d parts", len(one))
	}

	// Two users on one device: their events share the device's anonymous
	// id, so the call stays whole, in order, on its first event's worker
	// (parts commit in no set order).
	var u1, u2 string
	for u := 0; u2 == ""; u++ {
		name := fmt.Sprintf("d-%d", u)
		switch {
		case u1 == "":
			u1 = name
		case shardOf(7, rules, ev("user_id", name), 2) != shardOf(7, rules, ev("user_id", u1), 2):
			u2 = name
		}
	}
	shared := []*preparedEvent{ev("user_id", u1, "anonymous_id", "device"), ev("user_id", u2, "anonymous_id", "device")}
	whole, onto := b.split(t.Context(), 7, rules, shared)
	if len(whole) != 1 || whole[0].index != nil || whole[0].prepared[0] != shared[0] || whole[0].prepared[1] != shared[1] ||
		onto[0] != shardOf(7, rules, shared[0], 2) {
		t.Fatalf("a call whose events share an identifier across workers: %d parts on %v, want it whole on the first event's worker", len(whole), onto)
	}

	// One person's two calls by disjoint identifiers (a page by the device's
	// anonymous id alone, an identify by the user id alone) share nothing
	// split can see: they go to their own workers and commit in either
	// order, as docs/connectors.md (Batches) says.
	var device string
	for d := 0; device == ""; d++ {
		if name := fmt.Sprintf("dev-%d", d); shardOf(7, rules, ev("anonymous_id", name), 2) != shardOf(7, rules, ev("user_id", u1), 2) {
			device = name
		}
	}
	disjoint := []*preparedEvent{ev("anonymous_id", device), ev("user_id", u1)}
	if apart, _ := b.split(t.Context(), 7, rules, disjoint); len(apart) != 2 {
		t.Fatalf("calls by disjoint identifiers on different workers: %d parts, want 2", len(apart))
	}
}

func TestJSONEqual(t *testing.T) {
	for _, c := range []struct {
		a, b any
		want bool
	}{
		{"a", "a", true}, {"a", "b", false}, {"1", 1.0, false},
		{1.0, 1.0, true}, {1.0, 2.0, false}, {1.0, int64(1), true},
		{true, true, true}, {true, false, false}, {nil, nil, true}, {nil, "", false},
		{map[string]any{"x": 1.0}, map[string]any{"x": 1.0}, true},
		{[]any{"a"}, []any{"b"}, false},
		// Numbers by value, whatever their type and spelling: a stored one
		// is a json.Number as PostgreSQL spells it.
		{json.Number("3"), 3.0, true}, {json.Number("3"), int64(3), true}, {json.Number("3"), 3, true},
		{json.Number("18.990"), 18.99, true}, {json.Number("1.0"), json.Number("1"), true},
		{json.Number("0.0000001"), 1e-7, true}, {json.Number("1000000000000000000000"), 1e21, true},
		{json.Number("-0"), 0.0, true}, {json.Number("0.000"), json.Number("0e5"), true},
		{json.Number("120"), json.Number("1.2e2"), true}, {json.Number("-2.50"), -2.5, true},
		{json.Number("12345678901234567"), 12345678901234568.0, false},
		{json.Number("12345678901234567"), json.Number("12345678901234568"), false},
		{json.Number("2"), json.Number("-2"), false}, {json.Number("0.1"), json.Number("1"), false},
		{json.Number("1e999999999"), json.Number("1e999999999"), true}, {json.Number("1e999999999"), 1.0, false},
		{json.Number("3"), "3", false},
		{map[string]any{"x": json.Number("1.50")}, map[string]any{"x": 1.5}, true},
		{map[string]any{"x": 1.0}, map[string]any{"x": 1.0, "y": nil}, false},
		{[]any{json.Number("1"), "a"}, []any{1.0, "a"}, true},
	} {
		if got := jsonEqual(c.a, c.b); got != c.want {
			t.Errorf("jsonEqual(%#v, %#v) = %v, want %v", c.a, c.b, got, c.want)
		}
	}
}
