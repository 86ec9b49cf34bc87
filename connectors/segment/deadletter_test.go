package segment_test

import (
	"context"
	"fmt"
	"math/bits"
	"net/http"
	"strings"
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

// A call that fails inside the transaction makes its part of 500 fail
// whole; the part's calls are then stored by bisection, a half that
// succeeds stored whole, not one transaction per call: a 500 KB batch
// with a poison call in each part took about 20 s, over an SDK's 10 s
// timeout. The good calls are stored once, the poison ones refused and
// kept as dead letters as before, and the Ingest calls (each a
// transaction per ingest worker) are about 2·log2(500) per part.
func TestBatchIsolatesPoisonCallsByBisection(t *testing.T) {
	e := newEnv(t)
	const calls, part = 1500, 500
	poison := map[int]bool{3: true, 777: true, 1499: true} // one in each part
	var b strings.Builder
	b.WriteString(`{"batch":[`)
	for i := range calls {
		if i > 0 {
			b.WriteByte(',')
		}
		name := "Good"
		if poison[i] {
			name = `Poison\u0000Name`
		}
		fmt.Fprintf(&b, `{"type":"track","userId":"bis-%d","event":"%s","messageId":"bis-%d"}`, i%37, name, i)
	}
	b.WriteString(`]}`)
	body := []byte(b.String())

	for round := range 2 { // the second is the SDK's retry: nothing is stored twice
		e.ingests.Store(0)
		r := e.post(t, "/v1/batch", basic(e.writeKey), body)
		if r.Status != http.StatusOK || len(r.Rejected) != len(poison) {
			t.Fatalf("round %d: %d %q with %d rejected, want 200 and %d", round, r.Status, r.Message, len(r.Rejected), len(poison))
		}
		for _, rej := range r.Rejected {
			if !poison[rej.Index] || rej.MessageID != fmt.Sprintf("bis-%d", rej.Index) {
				t.Errorf("round %d: rejected %+v, want only the poison calls", round, rej)
			}
		}
		if n := e.countEvents(t); n != calls-len(poison) {
			t.Errorf("round %d: %d events stored, want the %d good calls once each", round, n, calls-len(poison))
		}
		// Per part: the part whole, then two halves a level down to the
		// poison call alone.
		bound := calls / part * (1 + 2*bits.Len(part))
		if n := e.ingests.Load(); n > int64(bound) {
			t.Errorf("round %d: %d Ingest calls for %d parts with one poison call each, want at most %d", round, n, calls/part, bound)
		}
	}
	p, err := e.db.DeadLetters(context.Background(), e.ws, c360.DeadLetterFilter{PageArgs: c360.PageArgs{First: 10}})
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]int{}
	for _, d := range p.Items {
		got[d.DedupeKey] = d.Attempts
	}
	if len(got) != len(poison) || got["bis-3"] != 2 || got["bis-777"] != 2 || got["bis-1499"] != 2 {
		t.Errorf("dead letters (messageId: attempts) = %v, want the 3 poison calls, tried twice each", got)
	}
}
