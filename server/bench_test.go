package server_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/c360dev/c360"
	"github.com/c360dev/c360/bench/seed"
	"github.com/c360dev/c360/internal/pgtest"
	"github.com/c360dev/c360/postgres"
	"github.com/c360dev/c360/resolver"
	"github.com/c360dev/c360/server"
)

// query360 is the customer-360 query of `bench query` (bench/cmd/bench):
// what a console asks when a call comes in.
const query360 = `query($phone: String!) { customerByIdentity(type: "phone", value: $phone) {
  id traits version
  identities { type value }
  events(first: 20) { edges { node { id type name properties occurredAt } } }
  conversations(first: 5) { edges { node { id channel status lastMessageAt
    messages(first: 10) { edges { node { id direction body status createdAt } } } } } }
} }`

// BenchmarkCustomer360 measures the customer-360 GraphQL query by phone
// through the real handler (auth, limits, gqlgen, resolvers, dataloaders,
// store) on a COPY-seeded workspace whose customers fill every page: 25
// events and a conversation of 12 messages each. Requests go straight to
// ServeHTTP, so -benchmem counts the server's allocations, not a client's.
func BenchmarkCustomer360(b *testing.B) {
	const customers = 1000
	db := pgtest.Open(b)
	ws, _, key := pgtest.Workspace(b, db)
	if _, err := seed.Run(context.Background(), db.Pool, ws, seed.Options{
		Customers: customers, EventsPerCustomer: 25, MessagesPerConv: 12}); err != nil {
		b.Fatalf("seed: %v", err)
	}
	// The key limit is off: a parallel run on a fast machine could pass it.
	h := server.New(server.Config{Logger: slog.New(slog.DiscardHandler),
		Limits: server.Limits{KeyRate: server.Rate{RPS: -1}}}, db, newResolver(db), db)
	bodies := make([][]byte, customers)
	for i := range bodies {
		bodies[i], _ = json.Marshal(map[string]any{"query": query360, "variables": map[string]any{"phone": seed.Phone(i)}})
	}
	serve := func(i int) *httptest.ResponseRecorder {
		req := httptest.NewRequest(http.MethodPost, "/graphql", bytes.NewReader(bodies[i%customers]))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Authorization", "Bearer "+key)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		return rec
	}
	query := func(i int) error {
		rec := serve(i)
		if rec.Code != http.StatusOK || bytes.Contains(rec.Body.Bytes(), []byte(`"errors"`)) {
			return fmt.Errorf("status %d: %.300s", rec.Code, rec.Body.String())
		}
		return nil
	}
	// One full answer checked before timing: the runs below only check
	// for errors.
	first := serve(0).Body.String()
	if got := strings.Count(first, `"occurredAt"`); got != 20 {
		b.Fatalf("first answer has %d events, want 20: %.300s", got, first)
	}
	if got := strings.Count(first, `"direction"`); got != 10 {
		b.Fatalf("first answer has %d messages, want 10: %.300s", got, first)
	}

	b.Run("sequential", func(b *testing.B) {
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			if err := query(i); err != nil {
				b.Fatal(err)
			}
			i++
		}
	})
	b.Run("parallel", func(b *testing.B) {
		b.ReportAllocs()
		var worker atomic.Int64
		b.RunParallel(func(pb *testing.PB) {
			i := int(worker.Add(1)) * 389
			for pb.Next() {
				if err := query(i); err != nil {
					b.Error(err)
					return
				}
				i++
			}
		})
	})
}

// BenchmarkAssistantRead measures what recording an assistant's read before
// its answer costs (C360_AUDIT_READS=assistant, the default) against
// writing it in the background (async): an assistant key reads one
// customer's traits, and every answer is a customer.read entry.
func BenchmarkAssistantRead(b *testing.B) {
	for _, mode := range []struct {
		name string
		mode resolver.ReadAudit
	}{{"durable", resolver.ReadAuditAssistant}, {"async", resolver.ReadAuditAsync}} {
		b.Run(mode.name, func(b *testing.B) {
			db := pgtest.Open(b)
			ws, slug, _ := pgtest.Workspace(b, db)
			key, _, err := db.CreateAPIKey(context.Background(), slug, c360.RoleAssistant, nil)
			if err != nil {
				b.Fatal(err)
			}
			res, err := db.Ingest(context.Background(), ws, []*c360.Event{{Type: c360.EventIdentify, Source: "bench", DedupeKey: "a",
				Identities: []c360.Identity{{Type: "email", Value: "ann@example.com"}}, Traits: map[string]any{"plan": "pro"}}})
			if err != nil {
				b.Fatal(err)
			}
			audit := postgres.NewAuditWriter(db, postgres.AuditWriterConfig{Logger: slog.New(slog.DiscardHandler)})
			defer audit.Close()
			r := newResolver(db)
			r.Audit, r.ReadAudit = audit, mode.mode
			h := server.New(server.Config{Logger: slog.New(slog.DiscardHandler),
				Limits: server.Limits{KeyRate: server.Rate{RPS: -1}}}, db, r, db)
			body, _ := json.Marshal(map[string]any{"query": `query($id: ID!) { customer(id: $id) { traits } }`,
				"variables": map[string]any{"id": fmt.Sprint(res[0].CustomerID)}})
			b.ReportAllocs()
			for b.Loop() {
				req := httptest.NewRequest(http.MethodPost, "/graphql", bytes.NewReader(body))
				req.Header.Set("Content-Type", "application/json")
				req.Header.Set("Authorization", "Bearer "+key)
				rec := httptest.NewRecorder()
				h.ServeHTTP(rec, req)
				if rec.Code != http.StatusOK || !strings.Contains(rec.Body.String(), `"plan":"pro"`) {
					b.Fatalf("status %d: %.300s", rec.Code, rec.Body.String())
				}
			}
		})
	}
}
