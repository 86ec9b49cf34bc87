package postgres_test

import (
	"maps"
	"slices"
	"testing"

	"github.com/c360dev/c360/postgres"
)

// FuzzDecodeNotification checks the parser of other replicas' NOTIFY
// payloads (any session of the database can send one): any payload decodes
// or is refused, never a panic, and what decodes survives encoding again.
func FuzzDecodeNotification(f *testing.F) {
	f.Add(postgres.EncodeNotifications("a1b2", map[int64]map[int64]struct{}{7: {1: {}, 2: {}}, 9: nil})[0])
	for _, s := range []string{"", "v1", "v1 o", "v1 o 1:*", "v1 o 1:1,2,3 2:4", "v1 o 1:", "v1 o :1", "v2 o 1:1",
		"v1 o 1:* 1:2", "v1 o 1:2 1:*", "v1 o 9223372036854775808:1", "v1 o 1:-5,,"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, payload string) {
		n, err := postgres.DecodeNotification(payload)
		if err != nil {
			return
		}
		pending := toPending(n)
		got := map[int64]map[int64]struct{}{}
		for _, p := range postgres.EncodeNotifications(n.Origin, pending) {
			m, err := postgres.DecodeNotification(p)
			if err != nil {
				t.Fatalf("DecodeNotification(EncodeNotifications(%q)) = %v", payload, err)
			}
			if m.Origin != n.Origin {
				t.Fatalf("origin %q, want %q", m.Origin, n.Origin)
			}
			for ws, set := range toPending(m) {
				if set == nil {
					got[ws] = nil
				} else if cur, ok := got[ws]; !ok || cur != nil {
					if !ok {
						got[ws] = map[int64]struct{}{}
					}
					maps.Copy(got[ws], set)
				}
			}
		}
		if !samePending(got, pending) {
			t.Fatalf("round trip of %q: got %v, want %v", payload, got, pending)
		}
	})
}

func toPending(n postgres.Notification) map[int64]map[int64]struct{} {
	out := map[int64]map[int64]struct{}{}
	for ws, ids := range n.Customers {
		if ids == nil {
			out[ws] = nil
			continue
		}
		set := map[int64]struct{}{}
		for _, id := range ids {
			set[id] = struct{}{}
		}
		out[ws] = set
	}
	return out
}

func samePending(a, b map[int64]map[int64]struct{}) bool {
	if !slices.Equal(slices.Sorted(maps.Keys(a)), slices.Sorted(maps.Keys(b))) {
		return false
	}
	for ws, x := range a {
		y := b[ws]
		if (x == nil) != (y == nil) || !slices.Equal(slices.Sorted(maps.Keys(x)), slices.Sorted(maps.Keys(y))) {
			return false
		}
	}
	return true
}
