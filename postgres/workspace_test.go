package postgres_test

import (
	"context"
	"testing"
	"time"

	"github.com/c360dev/c360"
	"github.com/c360dev/c360/internal/pgtest"
)

// RotateWebhookSecret keeps the secret it replaces for the grace given, by
// the database's clock, in the same UPDATE; one previous secret is kept; a
// grace of 0 keeps none; a grace out of range changes nothing.
func TestRotateWebhookSecretGrace(t *testing.T) {
	db := pgtest.Open(t)
	ctx := context.Background()
	_, slug, _ := pgtest.Workspace(t, db)
	first, err := db.FindWorkspaceBySlug(ctx, slug)
	if err != nil {
		t.Fatal(err)
	}
	if first.PreviousWebhookSecret != "" || first.PreviousWebhookSecretExpiresAt != nil {
		t.Fatalf("a new workspace has a previous secret (expiring %v)", first.PreviousWebhookSecretExpiresAt)
	}
	dbNow := func() time.Time {
		t.Helper()
		var now time.Time
		if err := db.Pool.QueryRow(ctx, `SELECT now()`).Scan(&now); err != nil {
			t.Fatal(err)
		}
		return now
	}
	// stored reads the row past the store's cache.
	stored := func() (secret, previous string, expires *time.Time) {
		t.Helper()
		var prev *string
		if err := db.Pool.QueryRow(ctx, `SELECT webhook_secret, previous_webhook_secret, previous_webhook_secret_expires_at
			FROM workspaces WHERE slug = $1`, slug).Scan(&secret, &prev, &expires); err != nil {
			t.Fatal(err)
		}
		if prev != nil {
			previous = *prev
		}
		return secret, previous, expires
	}

	before := dbNow()
	w, second, err := db.RotateWebhookSecret(ctx, slug, 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	after := dbNow()
	exp := w.PreviousWebhookSecretExpiresAt
	if w.WebhookSecret != second || w.PreviousWebhookSecret != first.WebhookSecret || exp == nil {
		t.Fatalf("after a 24h rotation: previous kept %v, expiry %v; want the first secret, with an expiry", w.PreviousWebhookSecret == first.WebhookSecret, exp)
	}
	// now() + 24h by the database's clock, to the second below.
	if exp.Before(before.Add(24*time.Hour).Truncate(time.Second)) || exp.After(after.Add(24*time.Hour)) || !exp.Equal(exp.Truncate(time.Second)) {
		t.Errorf("expiry %s, want now()+24h (between %s and %s), whole seconds", exp, before.Add(24*time.Hour), after.Add(24*time.Hour))
	}
	if s, p, e := stored(); s != second || p != first.WebhookSecret || e == nil || !e.Equal(*exp) {
		t.Errorf("stored row: secret new %v, previous the first %v, expiry %v; want %s", s == second, p == first.WebhookSecret, e, exp)
	}
	// The store's cache was dropped: the lookup sees the rotation.
	if got, err := db.FindWorkspaceBySlug(ctx, slug); err != nil || got.WebhookSecret != second || got.PreviousWebhookSecret != first.WebhookSecret {
		t.Errorf("lookup after the rotation: %v, want the new secret and the first as previous", err)
	}

	// Again during the grace: the previous is the second secret; the
	// first, whose grace had not ended, is no longer kept.
	w, third, err := db.RotateWebhookSecret(ctx, slug, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if s, p, e := stored(); s != third || p != second || e == nil || e.Sub(dbNow()) > time.Hour || e.Sub(dbNow()) < 59*time.Minute {
		t.Errorf("after a second rotation: secret new %v, previous the second %v (the first %v), expiry %v; want the second kept for 1h",
			s == third, p == second, p == first.WebhookSecret, e)
	}
	if w.PreviousWebhookSecret != second {
		t.Error("the workspace returned by the second rotation does not hold the second secret as previous")
	}

	// Out of range: refused, nothing changed.
	for _, grace := range []time.Duration{-time.Second, c360.MaxWebhookSecretGrace + time.Second} {
		if _, secret, err := db.RotateWebhookSecret(ctx, slug, grace); c360.ErrorCode(err) != c360.EINVALID || secret != "" {
			t.Errorf("grace %s: %v, secret given %v; want INVALID and no secret", grace, err, secret != "")
		}
		if s, p, _ := stored(); s != third || p != second {
			t.Errorf("grace %s changed the secrets", grace)
		}
	}
	// The longest grace is allowed.
	if _, fourth, err := db.RotateWebhookSecret(ctx, slug, c360.MaxWebhookSecretGrace); err != nil {
		t.Errorf("grace %s: %v", c360.MaxWebhookSecretGrace, err)
	} else {
		third = fourth
	}

	// 0: no previous secret at all.
	w, fifth, err := db.RotateWebhookSecret(ctx, slug, 0)
	if err != nil {
		t.Fatal(err)
	}
	if w.PreviousWebhookSecret != "" || w.PreviousWebhookSecretExpiresAt != nil {
		t.Errorf("after a rotation with no grace: previous kept %v, expiry %v; want none", w.PreviousWebhookSecret != "", w.PreviousWebhookSecretExpiresAt)
	}
	if s, p, e := stored(); s != fifth || p != "" || e != nil {
		t.Errorf("stored after a rotation with no grace: secret new %v, previous kept %v (the last %v), expiry %v; want none",
			s == fifth, p != "", p == third, e)
	}

	if _, secret, err := db.RotateWebhookSecret(ctx, "no-such-workspace", time.Hour); c360.ErrorCode(err) != c360.ENOTFOUND || secret != "" {
		t.Errorf("unknown workspace: %v, want NOT_FOUND and no secret", err)
	}
}

// RereadWorkspace reads past the cache the row another process (the
// command line) rotated, and caches it; it reads a workspace at most once a
// second, so a flood of forged signatures cannot make every webhook
// request a read; concurrent calls share one read.
func TestRereadWorkspaceSeesARotationByAnotherProcess(t *testing.T) {
	db := pgtest.Open(t)
	cli := pgtest.Open(t) // the command line's own store
	ctx := context.Background()
	_, slug, _ := pgtest.Workspace(t, db)
	w0, err := db.FindWorkspaceBySlug(ctx, slug)
	if err != nil {
		t.Fatal(err)
	}
	_, s1, err := cli.RotateWebhookSecret(ctx, slug, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if w, _ := db.FindWorkspaceBySlug(ctx, slug); w.WebhookSecret != w0.WebhookSecret {
		t.Fatal("the cache did not hold the row: the test proves nothing")
	}
	before := time.Now() // the first forced read comes after this
	w1, err := db.RereadWorkspace(ctx, w0)
	if err != nil || w1 == nil || w1.WebhookSecret != s1 || w1.PreviousWebhookSecret != w0.WebhookSecret {
		t.Fatalf("reread after a rotation by another process: %v, %v; want the rotated row", w1, err)
	}
	if w, _ := db.FindWorkspaceBySlug(ctx, slug); w.WebhookSecret != s1 {
		t.Error("the reread row is not cached")
	}
	// Within the second: the calls wait for the next read, a second after
	// the first, rather than give up, and share it: any number of calls at
	// once get one row, the same for all, with the newer rotation.
	_, s2, err := cli.RotateWebhookSecret(ctx, slug, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan *c360.Workspace, 50)
	for range 50 {
		go func() {
			w, err := db.RereadWorkspace(ctx, w1)
			if err != nil {
				t.Error(err)
			}
			got <- w
		}()
	}
	var w2 *c360.Workspace
	for i := range 50 {
		w := <-got
		if w == nil || w.WebhookSecret != s2 {
			t.Fatalf("reread within the second: %v, want the row with the second rotation", w)
		}
		if i == 0 {
			w2 = w
		} else if w != w2 {
			t.Error("calls at once did not share one read")
		}
	}
	if d := time.Since(before); d < time.Second {
		t.Errorf("the second forced read came %v after the first, want at least a second", d)
	}
	if w, err := db.RereadWorkspace(ctx, w0); err != nil || w != w2 {
		t.Errorf("reread with an older row than the cache's: %v, %v; want the cached row", w, err)
	}
	// A second after that read, a third rotation is read at once.
	time.Sleep(1100 * time.Millisecond)
	_, s3, err := cli.RotateWebhookSecret(ctx, slug, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	at := time.Now()
	if w, err := db.RereadWorkspace(ctx, w2); err != nil || w == nil || w.WebhookSecret != s3 {
		t.Errorf("reread a second later: %v, %v; want the row with the third rotation", w, err)
	}
	if d := time.Since(at); d > 500*time.Millisecond {
		t.Errorf("reread a second after the last took %v, want no wait", d)
	}
}

// UpdateWorkspace answers the row it wrote, and caches it: a webhook right
// after the update, on this process, verifies with the new settings. An
// unknown slug is NOT_FOUND, naming it.
func TestUpdateWorkspaceAnswersAndCachesTheRowItWrote(t *testing.T) {
	db := pgtest.Open(t)
	ctx := context.Background()
	_, slug, _ := pgtest.Workspace(t, db)
	if _, err := db.FindWorkspaceBySlug(ctx, slug); err != nil { // cached before
		t.Fatal(err)
	}
	token := "0123456789abcdef0123456789abcdef"
	w, err := db.UpdateWorkspace(ctx, slug, c360.WorkspaceUpdate{TwilioAuthToken: &token})
	if err != nil || w.TwilioAuthToken != token || w.Slug != slug {
		t.Fatalf("update: %+v, %v; want the row with the new token", w, err)
	}
	if got, err := db.FindWorkspaceBySlug(ctx, slug); err != nil || got.TwilioAuthToken != token {
		t.Errorf("cached after the update: %v, %v; want the new token", got, err)
	}
	_, err = db.UpdateWorkspace(ctx, "no-such-workspace", c360.WorkspaceUpdate{TwilioAuthToken: &token})
	if c360.ErrorCode(err) != c360.ENOTFOUND || c360.ErrorMessage(err) != `workspace "no-such-workspace" not found` {
		t.Errorf("unknown slug: %v; want NOT_FOUND naming it", err)
	}
}
