package postgres_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/c360dev/c360"
	"github.com/c360dev/c360/internal/pgtest"
	"github.com/c360dev/c360/postgres"
)

// KeyActive answers a live connection's question "does my key still
// stand?": yes for a key that does, UNAUTHENTICATED once it is revoked, and,
// when the database cannot answer, soon and without calling the key revoked.
func TestKeyActive(t *testing.T) {
	db := pgtest.Open(t)
	ws, _, _ := pgtest.Workspace(t, db)
	ctx := context.Background()
	// issue issues an agent key and authenticates with it.
	issue := func() (string, *c360.APIKey, *c360.Principal) {
		t.Helper()
		key, k, err := db.IssueAPIKey(ctx, ws, c360.RoleAgent, nil)
		if err != nil {
			t.Fatal(err)
		}
		p, err := db.Authenticate(ctx, key)
		if err != nil {
			t.Fatal(err)
		}
		return key, k, p
	}
	pKey, k, p := issue()
	if err := db.KeyActive(ctx, p); err != nil {
		t.Fatalf("a standing key: %v", err)
	}

	// The key's table locked (a migration, say) and nothing cached: the
	// answer comes within the bound, and it is not "revoked".
	_, _, q := issue()
	db.ForgetAPIKeys()
	// A key found standing in its row is cached as verified.
	if err := db.KeyActive(ctx, p); err != nil {
		t.Fatalf("a standing key, read from its row: %v", err)
	}
	tx, err := db.Pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, `LOCK TABLE api_keys IN ACCESS EXCLUSIVE MODE`); err != nil {
		t.Fatal(err)
	}
	// (Read from its row, the answer would be the lock's timeout.)
	if err := db.KeyActive(ctx, p); err != nil {
		t.Errorf("with api_keys locked, a key found standing a moment ago: %v, want it standing from the cache", err)
	}
	// Authentication takes that verification too: the cache holds the
	// key's hash.
	if got, err := db.Authenticate(ctx, pKey); err != nil || got.KeyID != p.KeyID {
		t.Errorf("with api_keys locked, authenticating a key KeyActive verified: %v (%v), want it from the cache", got, err)
	}
	start := time.Now()
	err = db.KeyActive(ctx, q)
	took := time.Since(start)
	tx.Rollback(ctx)
	if c360.ErrorCode(err) == c360.EUNAUTHENTICATED || err == nil {
		t.Errorf("with api_keys locked: %v, want an error that is not UNAUTHENTICATED", err)
	}
	if took > 3*time.Second {
		t.Errorf("with api_keys locked the answer took %v, want about a second", took)
	}

	if _, _, err := db.RevokeAPIKey(ctx, ws, k.Prefix); err != nil {
		t.Fatal(err)
	}
	if err := db.KeyActive(ctx, p); c360.ErrorCode(err) != c360.EUNAUTHENTICATED {
		t.Errorf("a revoked key: %v, want UNAUTHENTICATED", err)
	}
}

// Every subscriber of a key asks KeyActive before the same change. With
// nothing cached, the key's row is read once for all who ask at once, and
// each gets its answer.
func TestKeyActiveReadsAKeyOnceAtATime(t *testing.T) {
	counter := &pgtest.StatementCounter{}
	db := pgtest.Open(t, counter.Install)
	ws, _, _ := pgtest.Workspace(t, db)
	ctx := context.Background()
	key, _, err := db.IssueAPIKey(ctx, ws, c360.RoleAgent, nil)
	if err != nil {
		t.Fatal(err)
	}
	p, err := db.Authenticate(ctx, key)
	if err != nil {
		t.Fatal(err)
	}
	db.ForgetAPIKeys()
	// The table locked for a moment: the first read waits, and the others
	// ask while it does.
	tx, err := db.Pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, `LOCK TABLE api_keys IN ACCESS EXCLUSIVE MODE`); err != nil {
		t.Fatal(err)
	}
	counter.Reset()
	const subscribers = 20
	errs := make(chan error, subscribers)
	// The first caller gives up while the read waits on the lock.
	first, leave := context.WithCancel(ctx)
	defer leave()
	left := make(chan error, 1)
	go func() { left <- db.KeyActive(first, p) }()
	pgtest.WaitForLockWait(t, db, "api_keys")
	for range subscribers {
		go func() { errs <- db.KeyActive(ctx, p) }()
	}
	leave()
	select {
	case err := <-left:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("the caller that left: %v, want context.Canceled", err)
		}
	case <-time.After(500 * time.Millisecond):
		t.Error("the caller that left still waits on the read")
	}
	time.Sleep(200 * time.Millisecond) // the others ask meanwhile
	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	for range subscribers {
		if err := <-errs; err != nil {
			t.Errorf("a standing key, after the first caller left: %v", err)
		}
	}
	if n := strings.Count(counter.Statements(), "FROM api_keys WHERE prefix"); n != 1 {
		t.Errorf("the key's row was read %d times for %d subscribers asking at once, want 1:\n%s", n, subscribers, counter.Statements())
	}
}

// A read of a key's row that a revocation overtakes does not put the key
// back in this process's cache: on the replica that revoked it, a key stops
// working at once, whichever read (a request's Authenticate, a
// subscription's KeyActive) was under way.
func TestRevokedKeyIsNotCachedAgainByARacingRead(t *testing.T) {
	db := pgtest.Open(t)
	ws, _, _ := pgtest.Workspace(t, db)
	ctx := context.Background()
	for _, read := range []string{"Authenticate", "KeyActive"} {
		t.Run(read, func(t *testing.T) {
			key, _, err := db.IssueAPIKey(ctx, ws, c360.RoleAgent, nil)
			if err != nil {
				t.Fatal(err)
			}
			p, err := db.Authenticate(ctx, key)
			if err != nil {
				t.Fatal(err)
			}
			db.ForgetAPIKeys()
			// The revocation commits after the read saw the key standing.
			db.AfterKeyRead(func() {
				db.AfterKeyRead(nil)
				if _, _, err := db.RevokeAPIKey(ctx, ws, p.KeyPrefix); err != nil {
					t.Error(err)
				}
			})
			defer db.AfterKeyRead(nil)
			if read == "Authenticate" {
				_, err = db.Authenticate(ctx, key)
			} else {
				err = db.KeyActive(ctx, p)
			}
			if err != nil {
				t.Fatalf("the read the revocation overtook: %v, want the key standing (it read it so)", err)
			}
			if _, err := db.Authenticate(ctx, key); c360.ErrorCode(err) != c360.EUNAUTHENTICATED {
				t.Errorf("Authenticate after the revocation: %v, want UNAUTHENTICATED", err)
			}
			if err := db.KeyActive(ctx, p); c360.ErrorCode(err) != c360.EUNAUTHENTICATED {
				t.Errorf("KeyActive after the revocation: %v, want UNAUTHENTICATED", err)
			}
		})
	}
}

// A key's prefix is 12 hex digits of 6 random bytes: every digit takes all
// 16 values over 300 keys (the chance that one misses a value is about
// 1e-8), where hex of base64url text never shows an even digit above 7
// (36 random bits in all).
func TestAPIKeyPrefixesAreRandomHex(t *testing.T) {
	db := pgtest.Open(t)
	ws, _, _ := pgtest.Workspace(t, db)
	ctx := context.Background()
	seen := make([]map[rune]bool, 12)
	for i := range seen {
		seen[i] = map[rune]bool{}
	}
	for range 300 {
		_, k, err := db.IssueAPIKey(ctx, ws, c360.RoleAgent, nil)
		if err != nil {
			t.Fatal(err)
		}
		if len(k.Prefix) != 12 {
			t.Fatalf("prefix %q: %d characters, want 12", k.Prefix, len(k.Prefix))
		}
		for i, r := range k.Prefix {
			seen[i][r] = true
		}
	}
	for i, s := range seen {
		if len(s) != 16 {
			t.Errorf("hex digit %d of the prefix took %d values over 300 keys, want all 16", i, len(s))
		}
	}
}

// A prefix already taken, by a key of any workspace, is drawn again, and
// the key is issued with another; prefixes taken every time are a CONFLICT.
func TestAPIKeyPrefixCollisionIsRetried(t *testing.T) {
	db := pgtest.Open(t)
	ws, _, _ := pgtest.Workspace(t, db)
	other, _, _ := pgtest.Workspace(t, db)
	ctx := context.Background()
	_, taken, err := db.IssueAPIKey(ctx, other, c360.RoleAgent, nil)
	if err != nil {
		t.Fatal(err)
	}
	postgres.SetKeyPrefixes(t, taken.Prefix, taken.Prefix)
	secret, k, err := db.IssueAPIKey(ctx, ws, c360.RoleAgent, nil)
	if err != nil {
		t.Fatalf("issue with a colliding prefix: %v, want another prefix drawn", err)
	}
	if k.Prefix == taken.Prefix {
		t.Fatalf("issued prefix %q, the taken one", k.Prefix)
	}
	if p, err := db.Authenticate(ctx, secret); err != nil || p.WorkspaceID != ws {
		t.Errorf("authenticate the new key: %+v, %v", p, err)
	}

	postgres.SetKeyPrefixes(t, taken.Prefix, taken.Prefix, taken.Prefix)
	if _, _, err := db.IssueAPIKey(ctx, ws, c360.RoleAgent, nil); c360.ErrorCode(err) != c360.ECONFLICT {
		t.Errorf("every prefix taken: %v, want CONFLICT", err)
	}
	if n := count(t, db, `SELECT count(*) FROM api_keys WHERE workspace_id = $1`, ws); n != 3 {
		t.Errorf("keys of the workspace = %d, want 3 (its two first and the one issued)", n)
	}
}
