package postgres_test

import (
	"context"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/c360dev/c360"
	"github.com/c360dev/c360/internal/pgtest"
	"github.com/c360dev/c360/postgres"
)

// benchSeq makes dedupe keys unique across the sub-benchmarks and b.N
// rounds of one test binary: a repeated key would measure the duplicate
// path instead of a write.
var benchSeq atomic.Int64

// benchCustomers is how many distinct senders the ingest benchmarks use.
// They are created before the timer starts, so the runs measure the steady
// case of a message from a known customer.
const benchCustomers = 1000

func benchPhone(i int) string { return "+1415" + strconv.Itoa(4000000+i%benchCustomers) }

// inboundSMS is the event the Twilio connector makes of an inbound SMS.
func inboundSMS(i int, now time.Time) *c360.Event {
	key := "SMbench" + strconv.FormatInt(benchSeq.Add(1), 10)
	return &c360.Event{
		Type: c360.EventMessage, Source: "twilio", DedupeKey: key,
		Identities: []c360.Identity{{Type: "phone", Value: benchPhone(i)}},
		Properties: map[string]any{"to": "+14155550199"},
		OccurredAt: now, ReceivedAt: now,
		Message: &c360.MessageInput{Channel: c360.ChannelSMS, Direction: c360.DirectionInbound,
			Body: "Hi, is my order on its way?", ProviderID: key, Status: "received"},
	}
}

// trackEvent is a Segment track call as the Segment connector canonicalizes it.
func trackEvent(i int, now time.Time) *c360.Event {
	return &c360.Event{
		Type: c360.EventTrack, Name: "Product Viewed", Source: "segment",
		DedupeKey:  "bench-" + strconv.FormatInt(benchSeq.Add(1), 10),
		Identities: []c360.Identity{{Type: "user_id", Value: "user-" + strconv.Itoa(i%benchCustomers)}},
		Properties: map[string]any{"product_id": "p-" + strconv.Itoa(i%997), "price": 18.99, "quantity": 1},
		Context:    map[string]any{"library": map[string]any{"name": "analytics-node", "version": "3.1.0"}},
		OccurredAt: now, ReceivedAt: now,
	}
}

// benchStore opens a store with group commit, as serve runs it, and
// creates the benchmark's customers, one event each. Building an event
// (a dozen allocations) is inside the timed loops: it is what a connector
// hands to Ingest, and it stays constant across changes to ingest.
func benchStore(b *testing.B, event func(i int, now time.Time) *c360.Event) (*postgres.DB, int64) {
	b.Helper()
	db := pgtest.Open(b)
	ws, _, _ := pgtest.Workspace(b, db)
	ctx := context.Background()
	for first := 0; first < benchCustomers; first += 100 {
		evs := make([]*c360.Event, 0, 100)
		for i := first; i < first+100; i++ {
			evs = append(evs, event(i, time.Now().UTC()))
		}
		if _, err := db.Ingest(ctx, ws, evs); err != nil {
			b.Fatalf("create customers: %v", err)
		}
	}
	// Statistics that know the workspace, as autovacuum keeps them: on
	// those of an empty database the planner may scan the whole workspace
	// per statement, and the benchmark would grow slower with b.N.
	if _, err := db.Pool.Exec(ctx, `ANALYZE customers, identities, events, conversations, messages`); err != nil {
		b.Fatal(err)
	}
	return db, ws
}

// BenchmarkIngestOne measures ingest of one inbound message event per call,
// the work behind one Twilio webhook: resolve the sender, store the event,
// append to the conversation, commit. "parallel" runs GOMAXPROCS callers
// (b.SetParallelism raises it) and so measures group commit.
func BenchmarkIngestOne(b *testing.B) {
	db, ws := benchStore(b, inboundSMS)
	ctx := context.Background()
	b.Run("sequential", func(b *testing.B) {
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			if _, err := db.Ingest(ctx, ws, []*c360.Event{inboundSMS(i, time.Now().UTC())}); err != nil {
				b.Fatal(err)
			}
			i++
		}
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
	})
	for _, p := range []int{1, 16} {
		b.Run("parallel-x"+strconv.Itoa(p), func(b *testing.B) {
			b.ReportAllocs()
			b.SetParallelism(p)
			var worker atomic.Int64
			start := time.Now()
			b.RunParallel(func(pb *testing.PB) {
				i := int(worker.Add(1)) * 7919
				for pb.Next() {
					if _, err := db.Ingest(ctx, ws, []*c360.Event{inboundSMS(i, time.Now().UTC())}); err != nil {
						b.Error(err)
						return
					}
					i++
				}
			})
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "events/s")
		})
	}
}

// BenchmarkIngestBatch100 measures ingest of 100 track events in one call,
// the work behind one Segment /v1/batch request. ns/op is per batch.
func BenchmarkIngestBatch100(b *testing.B) {
	db, ws := benchStore(b, trackEvent)
	ctx := context.Background()
	b.ReportAllocs()
	evs := make([]*c360.Event, 100)
	i := 0
	for b.Loop() {
		now := time.Now().UTC()
		for j := range evs {
			evs[j] = trackEvent(i, now)
			i++
		}
		if _, err := db.Ingest(ctx, ws, evs); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N*100)/b.Elapsed().Seconds(), "events/s")
}
