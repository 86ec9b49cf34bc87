package chatbot_test

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/c360dev/c360"
	"github.com/c360dev/c360/connectors/chatbot"
	"github.com/c360dev/c360/internal/pgtest"
	"github.com/c360dev/c360/postgres"
	"github.com/c360dev/c360/resolver"
	"github.com/c360dev/c360/server"
)

// rereads counts the store's forced reads, and fails them with fail when
// it is set.
type rereads struct {
	*postgres.DB
	n    atomic.Int32
	fail error
}

func (r *rereads) RereadWorkspace(ctx context.Context, seen *c360.Workspace) (*c360.Workspace, error) {
	r.n.Add(1)
	if r.fail != nil {
		return nil, r.fail
	}
	return r.DB.RereadWorkspace(ctx, seen)
}

// Only a signature that does not match is checked again with the row read
// anew: a missing, malformed or stale one is refused with no read, so an
// unsigned flood costs no reads at all. A read that fails answers its own
// error (503 for a database that is unavailable), not a refusal of the
// signature, and stores nothing.
func TestOnlyASignatureThatDoesNotMatchIsCheckedAgain(t *testing.T) {
	db := pgtest.Open(t)
	store := &rereads{DB: db}
	creds, err := db.CreateWorkspace(context.Background(), fmt.Sprintf("botr%d", time.Now().UnixNano()%1e12), "test")
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.DiscardHandler)
	srv := server.New(server.Config{Logger: log}, db, &resolver.Resolver{Now: db.Now}, db)
	chatbot.New(chatbot.Config{Store: store, Now: time.Now, StatusOf: server.StatusOf, Logger: log,
		Limit: srv.LimitWebhook}).Register(srv)
	hs := httptest.NewServer(srv)
	t.Cleanup(hs.Close)
	e := &env{db: db, srv: hs, ws: creds.ID, slug: creds.Slug, secret: creds.WebhookSecret}
	body := session("s-reread")

	for _, c := range []struct{ name, sig string }{
		{"no signature", ""},
		{"malformed", "t=now,v1=zz"},
		{"stale", chatbot.Sign(e.secret, time.Now().Add(-time.Hour), body)},
	} {
		if a := e.post(t, e.slug, body, c.sig); a.Status != http.StatusUnauthorized || store.n.Load() != 0 {
			t.Errorf("%s: %d %s, %d reads; want 401 and no read", c.name, a.Status, a.Body, store.n.Load())
		}
	}
	if a := e.post(t, e.slug, body, chatbot.Sign("whsec_wrong", time.Now(), body)); a.Status != http.StatusUnauthorized || store.n.Load() != 1 {
		t.Errorf("wrong secret: %d %s, %d reads; want 401 after one read", a.Status, a.Body, store.n.Load())
	}
	store.fail = c360.Errorf(c360.EUNAVAILABLE, "the database is unavailable")
	if a := e.post(t, e.slug, body, chatbot.Sign("whsec_wrong", time.Now(), body)); a.Status != http.StatusServiceUnavailable {
		t.Errorf("the read failing: %d %s; want 503", a.Status, a.Body)
	}
	var stored int
	if err := db.Pool.QueryRow(context.Background(), `SELECT count(*) FROM events WHERE workspace_id = $1`, e.ws).Scan(&stored); err != nil || stored != 0 {
		t.Errorf("events stored: %d, %v; want none", stored, err)
	}
}
