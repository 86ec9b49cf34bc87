package postgres_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/c360dev/c360"
	"github.com/c360dev/c360/internal/pgtest"
)

// A split that moves more conversations than its change may list (100)
// lists the lowest 100 ids, in order, and says the list was cut: the
// change is stored in the feed and sent to every subscriber, and a
// customer of many threads must not make it unbounded.
func TestSplitListsAtMostAHundredMovedConversations(t *testing.T) {
	db := pgtest.Open(t)
	ws, _, _ := pgtest.Workspace(t, db)
	ctx := context.Background()
	phone := c360.Identity{Type: "phone", Value: "+14155550133"}
	now := time.Now().UTC()
	owner := ingest1(t, db, ws, &c360.Event{Type: c360.EventIdentify, Source: "test", DedupeKey: "i1", OccurredAt: now,
		Identities: []c360.Identity{{Type: "email", Value: "many@example.com"}, phone}}).CustomerID
	const threads = 103
	evs := make([]*c360.Event, threads)
	for i := range evs {
		evs[i] = &c360.Event{Type: c360.EventMessage, Source: "test", DedupeKey: fmt.Sprint("m", i), OccurredAt: now, ReceivedAt: now,
			Identities: []c360.Identity{phone}, Properties: map[string]any{"threadKey": fmt.Sprint("thread-", i)},
			Message: &c360.MessageInput{Channel: "chat", Direction: c360.DirectionInbound, Body: fmt.Sprint("hello ", i), Status: "received"}}
	}
	if _, err := db.Ingest(ctx, ws, evs); err != nil {
		t.Fatal(err)
	}
	res, err := db.SplitIdentity(ctx, ws, owner, phone, "agent", "many threads")
	if err != nil {
		t.Fatal(err)
	}
	if res.MovedConversations != threads {
		t.Fatalf("the split moved %d conversations, want %d", res.MovedConversations, threads)
	}
	var raw []byte
	if err := db.Pool.QueryRow(ctx, `SELECT diff FROM customer_changes WHERE workspace_id = $1 AND customer_id = $2 AND kind = 'split'`,
		ws, owner).Scan(&raw); err != nil {
		t.Fatal(err)
	}
	var diff struct {
		IDs       []string `json:"movedConversationIds"`
		Truncated bool     `json:"movedConversationIdsTruncated"`
		Moved     int      `json:"movedConversations"`
	}
	if err := json.Unmarshal(raw, &diff); err != nil {
		t.Fatal(err)
	}
	if len(diff.IDs) != 100 || !diff.Truncated || diff.Moved != threads {
		t.Fatalf("split change lists %d conversation ids (truncated: %v, moved: %d), want 100, truncated, %d moved",
			len(diff.IDs), diff.Truncated, diff.Moved, threads)
	}
	var below int
	if err := db.Pool.QueryRow(ctx, `SELECT count(*) FROM conversations WHERE workspace_id = $1 AND customer_id = $2 AND id <= $3`,
		ws, res.Split.ID, diff.IDs[99]).Scan(&below); err != nil {
		t.Fatal(err)
	}
	for i := 1; i < len(diff.IDs); i++ {
		a, _ := strconv.ParseInt(diff.IDs[i-1], 10, 64)
		b, _ := strconv.ParseInt(diff.IDs[i], 10, 64)
		if a >= b {
			t.Fatalf("ids not in order: %v", diff.IDs)
		}
	}
	if below != 100 {
		t.Fatalf("%d moved conversations at or below the last id listed, want the 100 listed: the lowest", below)
	}
}
