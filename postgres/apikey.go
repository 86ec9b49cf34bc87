package postgres

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/c360dev/c360"
)

var _ c360.APIKeyService = (*DB)(nil)

// Key format: "c360_<prefix>_<secret>", the prefix keyPrefixLen lowercase hex
// characters (keyPrefixLen/2 random bytes: 48 bits) and the secret 32
// random bytes in unpadded base64url (see insertAPIKey). The prefix is
// public and finds the row; the SHA-256 of the whole key is compared in
// constant time.
const keyPrefixLen = 12

// keyPrefixAttempts bounds how many fresh prefixes insertAPIKey tries when
// one is taken: prefixes are unique across workspaces, and with 48 random
// bits a collision is rare (one in about 280 million issues per key on a
// million keys), two in a row rarer still.
const keyPrefixAttempts = 3

// newKeyPrefix returns a fresh random key prefix; a variable only so that
// a test can force a collision (SetKeyPrefixes).
var newKeyPrefix = func() string {
	b := make([]byte, keyPrefixLen/2)
	if _, err := rand.Read(b); err != nil {
		panic(err) // crypto/rand never fails on supported platforms
	}
	return hex.EncodeToString(b)
}

// CreateAPIKey issues a key with the role for the workspace with this slug.
func (db *DB) CreateAPIKey(ctx context.Context, workspaceSlug string, role c360.Role, scopes []string) (string, *c360.APIKey, error) {
	if err := c360.CheckKey(role, scopes); err != nil { // before anything is read or written
		return "", nil, err
	}
	ws, err := db.FindWorkspaceBySlug(ctx, workspaceSlug)
	if err != nil {
		return "", nil, err
	}
	return db.IssueAPIKey(ctx, ws.ID, role, scopes)
}

func insertAPIKey(ctx context.Context, tx pgx.Tx, workspaceID int64, role c360.Role, scopes []string) (string, *c360.APIKey, error) {
	if scopes == nil {
		scopes = []string{}
	}
	// A prefix already taken (by a key of any workspace) is skipped by ON
	// CONFLICT, which leaves the transaction usable, and another is drawn.
	for range keyPrefixAttempts {
		prefix := newKeyPrefix()
		secret := "c360_" + prefix + "_" + randomToken(32)
		sum := sha256.Sum256([]byte(secret))
		k := &c360.APIKey{WorkspaceID: workspaceID, Prefix: prefix, Role: role, Scopes: scopes}
		err := tx.QueryRow(ctx, `
			INSERT INTO api_keys (workspace_id, prefix, hash, role, scopes)
			VALUES ($1, $2, $3, $4, $5) ON CONFLICT (prefix) DO NOTHING RETURNING id, created_at`,
			workspaceID, prefix, sum[:], string(role), scopes).Scan(&k.ID, &k.CreatedAt)
		if err == pgx.ErrNoRows {
			continue
		}
		if err != nil {
			return "", nil, interpretError(fmt.Errorf("insert api key: %w", err))
		}
		return secret, k, nil
	}
	return "", nil, c360.Errorf(c360.ECONFLICT, "no free API key prefix after %d tries; retry", keyPrefixAttempts)
}

// authCacheTTL bounds how long a revoked key may still be accepted by a
// replica that verified it recently. Verification then costs no round trip.
const authCacheTTL = 5 * time.Second

type authEntry struct {
	hash      [32]byte
	principal *c360.Principal
	expires   time.Time
}

// Authenticate verifies key and returns who it acts for.
func (db *DB) Authenticate(ctx context.Context, key string) (*c360.Principal, error) {
	prefix, ok := parseKey(key)
	if !ok {
		return nil, c360.Errorf(c360.EUNAUTHENTICATED, "invalid API key")
	}
	sum := sha256.Sum256([]byte(key))
	now := time.Now()
	if v, ok := db.authCache.Load(prefix); ok {
		e := v.(authEntry)
		if now.Before(e.expires) && subtle.ConstantTimeCompare(e.hash[:], sum[:]) == 1 {
			db.keyUsed(e.principal)
			return e.principal, nil
		}
	}
	var (
		p       c360.Principal
		hash    []byte
		role    string
		revoked *time.Time
	)
	gen := db.revocations.Load()
	// The key's workspace is not known yet: the by_prefix policy lets a
	// statement that names the prefix read that one key.
	err := db.byPrefix(prefix).QueryRow(ctx, `
		SELECT workspace_id, id, hash, role, scopes, revoked_at FROM api_keys WHERE prefix = $1`,
		prefix).Scan(&p.WorkspaceID, &p.KeyID, &hash, &role, &p.Scopes, &revoked)
	if err == pgx.ErrNoRows {
		return nil, c360.Errorf(c360.EUNAUTHENTICATED, "invalid API key")
	} else if err != nil {
		return nil, interpretError(fmt.Errorf("find api key: %w", err))
	}
	if subtle.ConstantTimeCompare(hash, sum[:]) != 1 || revoked != nil {
		return nil, c360.Errorf(c360.EUNAUTHENTICATED, "invalid API key")
	}
	p.Role = c360.Role(role)
	p.KeyPrefix = prefix
	db.cacheKey(prefix, gen, authEntry{hash: sum, principal: &p, expires: now.Add(authCacheTTL)})
	db.keyUsed(&p)
	return &p, nil
}

// keyCheckTimeout bounds KeyActive's read of a key's row.
const keyCheckTimeout = time.Second

// KeyActive implements c360.APIKeyService: a key this process verified
// within authCacheTTL stands; otherwise the key's row says, within
// keyCheckTimeout, and a standing key is cached as verified. Every
// subscriber of a key asks at once, on its way to the same change: while
// one read of the row runs, the others wait for its answer instead of
// reading it again, and a caller whose context ends stops waiting without
// ending the read for the others (TestKeyActiveReadsAKeyOnceAtATime).
func (db *DB) KeyActive(ctx context.Context, p *c360.Principal) error {
	now := time.Now()
	if v, ok := db.authCache.Load(p.KeyPrefix); ok {
		if e := v.(authEntry); now.Before(e.expires) && e.principal.KeyID == p.KeyID {
			return nil
		}
	}
	check := db.keyChecks.DoChan(p.KeyPrefix+"/"+strconv.FormatInt(p.KeyID, 10), func() (any, error) {
		// One caller leaving does not end the read the others wait on.
		return nil, db.checkKey(context.WithoutCancel(ctx), p, now)
	})
	select {
	case r := <-check:
		return r.Err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// checkKey reads whether p's key stands, and caches it as verified if so.
func (db *DB) checkKey(ctx context.Context, p *c360.Principal, now time.Time) error {
	// Callers ask on the way to delivering a change: a database that cannot
	// answer soon does not hold it back (the next check asks again).
	ctx, cancel := context.WithTimeout(ctx, keyCheckTimeout)
	defer cancel()
	var (
		hash    []byte
		revoked *time.Time
	)
	gen := db.revocations.Load()
	err := db.byPrefix(p.KeyPrefix).QueryRow(ctx, `SELECT hash, revoked_at FROM api_keys WHERE prefix = $1 AND id = $2`,
		p.KeyPrefix, p.KeyID).Scan(&hash, &revoked)
	if err == pgx.ErrNoRows || err == nil && revoked != nil {
		return c360.Errorf(c360.EUNAUTHENTICATED, "the API key was revoked")
	} else if err != nil {
		return interpretError(fmt.Errorf("check api key: %w", err))
	}
	// Standing: the key is as good as verified now, for KeyActive and
	// Authenticate alike.
	e := authEntry{principal: p, expires: now.Add(authCacheTTL)}
	copy(e.hash[:], hash)
	db.cacheKey(p.KeyPrefix, gen, e)
	return nil
}

// cacheKey caches e as the verified key of prefix, unless a key was
// revoked since gen (db.revocations) was read, before the row e comes
// from: that read may have seen the key before the revocation committed,
// and caching it would undo RevokeAPIKey's forgetting it, for authCacheTTL
// on the replica that revoked it. Storing before checking closes the race
// with a revocation that forgets the key between the two.
func (db *DB) cacheKey(prefix string, gen uint64, e authEntry) {
	if db.afterKeyRead != nil {
		db.afterKeyRead()
	}
	db.authCache.Store(prefix, e)
	if db.revocations.Load() != gen {
		db.authCache.CompareAndDelete(prefix, e)
	}
}

func parseKey(key string) (prefix string, ok bool) {
	rest, ok := strings.CutPrefix(key, "c360_")
	if !ok || len(rest) < keyPrefixLen+2 || rest[keyPrefixLen] != '_' {
		return "", false
	}
	return rest[:keyPrefixLen], true
}
