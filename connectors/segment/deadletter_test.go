package segment_test

import (
	"context"
	"net/http"
	"testing"

	"github.com/c360dev/c360"
)

// A batch with poison calls (valid JSON PostgreSQL refuses inside the
// transaction) refuses exactly those, stores the others, and keeps each
// poison call as a dead letter — and only those: the first try of the whole
// batch, which failed because of them, leaves no dead letters for the good
// calls.
func TestBatchPoisonCallsBecomeDeadLetters(t *testing.T) {
	e := newEnv(t)
	body := []byte(`{"batch": [
		{"type": "track", "userId": "dl-1", "event": "Good 0", "messageId": "dl-0"},
		{"type": "track", "userId": "dl-1", "event": "Poison", "properties": {"x": "a\u0000b"}, "messageId": "dl-p1"},
		{"type": "identify", "userId": "dl-2", "traits": {"name": "Good 2"}, "messageId": "dl-2"},
		{"type": "track", "userId": "dl-3", "event": "Poison\u0000Name", "messageId": "dl-p3"},
		{"type": "track", "userId": "dl-3", "event": "Good 4", "messageId": "dl-4"}
	]}`)
	r := e.post(t, "/v1/batch", basic(e.writeKey), body)
	if r.Status != http.StatusOK || len(r.Rejected) != 2 || r.Rejected[0].MessageID != "dl-p1" || r.Rejected[1].MessageID != "dl-p3" {
		t.Fatalf("got %+v, want 200 with dl-p1 and dl-p3 rejected", r)
	}
	if n := e.countEvents(t); n != 3 {
		t.Errorf("stored %d events, want the 3 good ones", n)
	}
	p, err := e.db.DeadLetters(context.Background(), e.ws, c360.DeadLetterFilter{PageArgs: c360.PageArgs{First: 10}})
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]int{}
	for _, d := range p.Items {
		got[d.DedupeKey] = d.Attempts
		if d.Source != "segment" || d.Error == "" {
			t.Errorf("dead letter %+v", d)
		}
	}
	if len(got) != 2 || got["dl-p1"] != 1 || got["dl-p3"] != 1 {
		t.Errorf("dead letters (messageId: attempts) = %v, want dl-p1 and dl-p3 once each", got)
	}

	// The SDK sends the batch again: nothing is stored twice; the poison
	// calls fail again and count one more attempt.
	if r := e.post(t, "/v1/batch", basic(e.writeKey), body); r.Status != http.StatusOK || len(r.Rejected) != 2 {
		t.Fatalf("retry: %+v", r)
	}
	if n := e.countEvents(t); n != 3 {
		t.Errorf("after the retry, %d events, want 3", n)
	}
}
