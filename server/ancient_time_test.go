package server_test

import (
	"context"
	"testing"
	"time"
)

// walkEvents pages through the customer's events one at a time, then asks
// for the page after the last, and returns the events' times in order.
func walkEvents(t *testing.T, e *env, user string) []time.Time {
	t.Helper()
	const q = `query($v: String!, $after: String) { customerByIdentity(type: "user_id", value: $v) {
		events(first: 1, after: $after) { edges { cursor node { occurredAt } } pageInfo { hasNextPage endCursor } } } }`
	var times []time.Time
	var after *string
	for i := 0; ; i++ {
		var out struct {
			CustomerByIdentity *struct {
				Events struct {
					Edges []struct {
						Node struct{ OccurredAt time.Time }
					}
					PageInfo struct {
						HasNextPage bool
						EndCursor   *string
					}
				}
			}
		}
		gql(t, e.srv, e.key, q, map[string]any{"v": user, "after": after}).ok(t, &out)
		if out.CustomerByIdentity == nil {
			t.Fatalf("page %d: no customer", i)
		}
		ev := out.CustomerByIdentity.Events
		for _, edge := range ev.Edges {
			times = append(times, edge.Node.OccurredAt)
		}
		if ev.PageInfo.EndCursor == nil {
			if ev.PageInfo.HasNextPage || len(ev.Edges) != 0 {
				t.Fatalf("page %d: no end cursor, but %d edges, hasNextPage %v", i, len(ev.Edges), ev.PageInfo.HasNextPage)
			}
			return times
		}
		after = ev.PageInfo.EndCursor
		if i > 10 {
			t.Fatal("more pages than events")
		}
	}
}

// An event dated in year 0 (PostgreSQL's 1 BC), or any time before
// c360.MinOccurredAt, is not believed: it is stored at its receipt, as one
// dated ahead, and the events are paged through to the end.
func TestAncientTimestampIsPagedPast(t *testing.T) {
	e := newEnv(t)
	real := time.Date(2024, 3, 1, 10, 0, 0, 0, time.UTC)
	for i, ts := range []string{real.Format(time.RFC3339), "0000-06-01T00:00:00Z", "1899-12-31T23:59:59Z"} {
		before := time.Now()
		ev := e.track(t, map[string]any{"identities": ids("user_id", "u-ancient"), "event": "Viewed",
			"messageId": "ancient-" + string(rune('a'+i)), "timestamp": ts})
		at := parseTime(t, ev.OccurredAt)
		if i == 0 && !at.Equal(real) {
			t.Errorf("occurredAt = %v, want %v", at, real)
		}
		if i > 0 && (at.Before(before.Add(-time.Minute)) || !at.Equal(parseTime(t, ev.ReceivedAt))) {
			t.Errorf("timestamp %s: occurredAt = %s, receivedAt %s, want the receipt time", ts, ev.OccurredAt, ev.ReceivedAt)
		}
	}
	if got := walkEvents(t, e, "u-ancient"); len(got) != 3 || !got[2].Equal(real) {
		t.Errorf("events %v, want two at receipt, then %v", got, real)
	}

	// One stored in year 0 before ingest bounded the past is paged past
	// too: a cursor holds any time PostgreSQL stores (TestDecodeCursorRefusesTimesOutOfRange).
	if _, err := e.db.Pool.Exec(context.Background(), `UPDATE events SET occurred_at = '0001-06-01 00:00:00+00 BC'
		WHERE workspace_id = $1 AND dedupe_key = 'ancient-b'`, e.ws); err != nil {
		t.Fatal(err)
	}
	if got := walkEvents(t, e, "u-ancient"); len(got) != 3 || got[2].Year() != 0 {
		t.Errorf("with an event stored in year 0: events %v, want it last", got)
	}
}
