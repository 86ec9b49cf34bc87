package postgres

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/c360dev/c360"
	"github.com/c360dev/c360/identity"
)

var _ c360.WorkspaceService = (*DB)(nil)

var slugRE = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,62}$`)

// CreateWorkspace creates a workspace with an admin API key, a Segment write
// key and a chatbot webhook secret, all returned once.
func (db *DB) CreateWorkspace(ctx context.Context, slug, name string) (*c360.WorkspaceCredentials, error) {
	if !slugRE.MatchString(slug) {
		return nil, c360.Errorf(c360.EINVALID, "invalid slug %q: use 1-63 lowercase letters, digits and dashes, starting with a letter or digit", slug)
	}
	creds := &c360.WorkspaceCredentials{Slug: slug, WebhookSecret: "whsec_" + randomToken(32)}
	err := db.ownerTx(ctx, func(tx pgx.Tx) error {
		err := tx.QueryRow(ctx,
			`INSERT INTO workspaces (slug, name, webhook_secret) VALUES ($1, $2, $3) RETURNING id`,
			slug, name, creds.WebhookSecret).Scan(&creds.ID)
		if err != nil {
			if c360.ErrorCode(interpretError(err)) == c360.ECONFLICT {
				return c360.Errorf(c360.ECONFLICT, "workspace %q already exists", slug)
			}
			return fmt.Errorf("insert workspace: %w", err)
		}
		if creds.APIKey, _, err = insertAPIKey(ctx, tx, creds.ID, c360.RoleAdmin, nil); err != nil {
			return err
		}
		creds.WriteKey, _, err = insertAPIKey(ctx, tx, creds.ID, c360.RoleWrite, nil)
		return err
	})
	if err != nil {
		return nil, err
	}
	return creds, nil
}

// UpdateWorkspace changes the provider settings given in upd. The Twilio
// senders are kept as Twilio and its webhooks write them (twilioSender):
// a sender number that is not one is refused with EINVALID, and nothing
// changes.
func (db *DB) UpdateWorkspace(ctx context.Context, slug string, upd c360.WorkspaceUpdate) (*c360.Workspace, error) {
	var err error
	if upd.TwilioSMSFrom, err = db.twilioSender(upd.TwilioSMSFrom, false); err != nil {
		return nil, err
	}
	if upd.TwilioWhatsAppFrom, err = db.twilioSender(upd.TwilioWhatsAppFrom, true); err != nil {
		return nil, err
	}
	read := time.Now()
	row := db.app.QueryRow(ctx, `
		UPDATE workspaces SET
			twilio_account_sid           = coalesce($2, twilio_account_sid),
			twilio_auth_token            = coalesce($3, twilio_auth_token),
			twilio_sms_from              = coalesce($4, twilio_sms_from),
			twilio_whatsapp_from         = coalesce($5, twilio_whatsapp_from),
			twilio_messaging_service_sid = coalesce($6, twilio_messaging_service_sid),
			whatsapp_app_secret          = coalesce($7, whatsapp_app_secret),
			whatsapp_verify_token        = coalesce($8, whatsapp_verify_token)
		WHERE slug = $1
		RETURNING `+workspaceColumns,
		slug, upd.TwilioAccountSID, upd.TwilioAuthToken, upd.TwilioSMSFrom, upd.TwilioWhatsAppFrom,
		upd.TwilioMessagingServiceSID, upd.WhatsAppAppSecret, upd.WhatsAppVerifyToken)
	w, err := scanWorkspace(row)
	if err != nil {
		db.workspaces.Delete(slug)
		if c360.ErrorCode(err) == c360.ENOTFOUND {
			return nil, c360.Errorf(c360.ENOTFOUND, "workspace %q not found", slug)
		}
		return nil, interpretError(fmt.Errorf("update workspace: %w", err))
	}
	// The row as written, cached: the next webhook needs no read.
	db.cacheWorkspace(w, read)
	return w, nil
}

// whatsAppPrefix is the prefix of Twilio's WhatsApp addresses
// ("whatsapp:+14155550100").
const whatsAppPrefix = "whatsapp:"

// trimWhatsAppPrefix returns s without a leading whatsapp: (any case) and
// the spaces after it.
func trimWhatsAppPrefix(s string) string {
	if len(s) >= len(whatsAppPrefix) && strings.EqualFold(s[:len(whatsAppPrefix)], whatsAppPrefix) {
		return strings.TrimSpace(s[len(whatsAppPrefix):])
	}
	return s
}

// alphaSenderID is an alphanumeric sender ID as Twilio takes one: up to 11
// letters, digits, spaces, '-', '+', '_' and '&', one letter at least
// (twilioSender checks the length, and takes one that starts with + for a
// number).
var alphaSenderID = regexp.MustCompile(`^[A-Za-z0-9 +_&-]*[A-Za-z][A-Za-z0-9 +_&-]*$`)

// shortCode is an SMS short code: 4 to 6 digits, the first not 0.
var shortCode = regexp.MustCompile(`^[1-9][0-9]{3,5}$`)

// twilioSender returns a Twilio sender given to UpdateWorkspace as the
// workspace keeps it: nil and "" as given (left alone, cleared); a phone
// number in E.164, normalized as an identity's (with the default region;
// a WhatsApp sender with or without its "whatsapp:" prefix, read as
// WhatsApp writes numbers), since Twilio writes an inbound message's To so
// and sessionSender compares it with the sender; for SMS, a short code or
// an alphanumeric sender ID as given. Anything else is refused with
// EINVALID naming the setting and why: "+1 234", "415-555-01OO". (A
// number behind a prefix identities take, tel: or whatsapp:, is its
// number.)
func (db *DB) twilioSender(v *string, whatsApp bool) (*string, error) {
	if v == nil {
		return nil, nil
	}
	s := strings.TrimSpace(*v)
	setting, kinds := "--twilio-sms-from", "a phone number in international form (+14155550100), a short code or an alphanumeric sender ID"
	if whatsApp {
		setting, kinds = "--twilio-whatsapp-from", "a phone number in international form (+14155550100), with or without whatsapp:"
		s = trimWhatsAppPrefix(s)
	} else if shortCode.MatchString(s) || len(s) <= 11 && alphaSenderID.MatchString(s) && s[0] != '+' {
		return &s, nil
	} else if alphaSenderID.MatchString(s) && s[0] != '+' {
		return nil, c360.Errorf(c360.EINVALID, "%s %q is not a sender Twilio can send from: an alphanumeric sender ID holds at most 11 characters; give %s", setting, shorten(s), kinds)
	}
	if s == "" {
		return &s, nil
	}
	value := s
	if whatsApp {
		value = whatsAppPrefix + s
	}
	id, err := db.Normalizer.Normalize(identity.Identity{Type: identity.TypePhone, Value: value})
	if err != nil {
		reason := "a placeholder, not a number"
		var invalid *identity.InvalidError
		if errors.As(err, &invalid) {
			reason = invalid.Reason
		}
		return nil, c360.Errorf(c360.EINVALID, "%s %q is not a sender Twilio can send from: %s; give %s", setting, shorten(s), reason, kinds)
	}
	return &id.Value, nil
}

// shorten cuts a value quoted in a refusal to 40 characters.
func shorten(s string) string {
	if r := []rune(s); len(r) > 40 {
		return string(r[:40]) + "…"
	}
	return s
}

// RotateWebhookSecret gives the workspace a new chatbot webhook secret and
// returns it, once, with the workspace as the rotation left it. The secret
// it replaces stays valid for grace, until now() + grace by the database's
// clock, to the second below (PreviousWebhookSecretExpiresAt, exactly the
// time the command prints), set in the same UPDATE; a previous
// secret kept by an earlier rotation is dropped, since only one is kept.
// With grace 0 the old secret is refused from then on, and so is any
// previous one: at once by this process, within workspaceCacheTTL by every
// other. EINVALID for a grace below 0 or above c360.MaxWebhookSecretGrace,
// ENOTFOUND when no workspace has slug; neither changes anything.
func (db *DB) RotateWebhookSecret(ctx context.Context, slug string, grace time.Duration) (*c360.Workspace, string, error) {
	if grace < 0 || grace > c360.MaxWebhookSecretGrace {
		return nil, "", c360.Errorf(c360.EINVALID, "grace %s is out of range: use 0 (none) up to %s (7 days)", grace, c360.MaxWebhookSecretGrace)
	}
	secret := "whsec_" + randomToken(32)
	// The right-hand sides read the row as it was: previous_webhook_secret
	// takes the secret being replaced.
	row := db.app.QueryRow(ctx, `
		UPDATE workspaces SET
			previous_webhook_secret            = CASE WHEN $3::bigint > 0 THEN webhook_secret END,
			previous_webhook_secret_expires_at = CASE WHEN $3::bigint > 0 THEN date_trunc('second', now() + $3::bigint * interval '1 microsecond') END,
			webhook_secret                     = $2
		WHERE slug = $1
		RETURNING `+workspaceColumns, slug, secret, grace.Microseconds())
	w, err := scanWorkspace(row)
	db.workspaces.Delete(slug)
	if err != nil {
		if c360.ErrorCode(err) == c360.ENOTFOUND {
			return nil, "", c360.Errorf(c360.ENOTFOUND, "workspace %q not found", slug)
		}
		return nil, "", interpretError(fmt.Errorf("rotate webhook secret: %w", err))
	}
	return w, secret, nil
}

// workspaceCacheTTL bounds how long a replica keeps using a workspace's
// provider settings after another replica changed them. Every webhook
// looks its workspace up by slug; without the cache that lookup was a
// fifth of a webhook's server time.
const workspaceCacheTTL = 5 * time.Second

// workspaceRereadAfter is how long after a forced read of a workspace's
// row RereadWorkspace may read it again: a flood of forged signatures
// costs at most one read of a workspace a second on each server.
const workspaceRereadAfter = time.Second

type workspaceEntry struct {
	w       *c360.Workspace
	expires time.Time
}

// cacheWorkspace caches w, read from the database at read.
func (db *DB) cacheWorkspace(w *c360.Workspace, read time.Time) {
	db.workspaces.Store(w.Slug, workspaceEntry{w: w, expires: read.Add(workspaceCacheTTL)})
}

// RereadWorkspace returns the workspace's row as it is now, for seen, a
// row FindWorkspaceBySlug returned (never nil without an error). A webhook
// calls it when seen's secrets refuse a signature: another process (the
// command line, another replica) may have rotated the secret since seen
// was cached (the chatbot's webhook secret, Twilio's auth token, Meta's
// app secret), and the sender signs with the new one at once. A row with
// other secrets that the cache holds in place of seen (another call read
// it) is returned as it is. Otherwise the row is read again, bypassing the
// cache, which then holds it; if the last forced read of the workspace
// was less than workspaceRereadAfter ago, it first waits until that long
// has passed, so that no workspace is read this way more than once a
// second on each server. Calls that run at once share one wait and one
// read.
func (db *DB) RereadWorkspace(ctx context.Context, seen *c360.Workspace) (*c360.Workspace, error) {
	slug := seen.Slug
	reread := db.workspaceRereads.DoChan(slug, func() (any, error) {
		// A row with other secrets the cache holds in place of seen.
		cached := func() *c360.Workspace {
			if v, ok := db.workspaces.Load(slug); ok && !sameSecrets(v.(workspaceEntry).w, seen) {
				return v.(workspaceEntry).w
			}
			return nil
		}
		if w := cached(); w != nil {
			return w, nil
		}
		now := time.Now()
		if at, ok := db.workspaceRereadAt.Load(slug); ok {
			// Read at most once a second: wait for the next read rather
			// than give up, so that a read made just before a rotation
			// (a forged signature's, another provider's) cannot refuse
			// the new secret, which Twilio would not retry. Callers that
			// come meanwhile share this wait and this read.
			if wait := workspaceRereadAfter - now.Sub(at.(time.Time)); wait > 0 {
				// Not cut short by this caller's context: the others
				// share the wait (each stops waiting when its own ends).
				time.Sleep(wait)
				now = time.Now()
				if w := cached(); w != nil {
					return w, nil
				}
			}
		}
		// Counted before the read: a failing read is bounded too.
		db.workspaceRereadAt.Store(slug, now)
		// One caller leaving does not end the read the others wait on.
		w, err := db.findWorkspaceBySlug(context.WithoutCancel(ctx), slug)
		if err != nil {
			return nil, err
		}
		db.cacheWorkspace(w, now)
		return w, nil
	})
	select {
	case r := <-reread:
		if r.Err != nil {
			return nil, r.Err
		}
		return r.Val.(*c360.Workspace), nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// sameSecrets reports whether a and b hold the same secrets that webhooks
// are verified with: the chatbot's, Twilio's auth token, Meta's app secret.
func sameSecrets(a, b *c360.Workspace) bool {
	return a.TwilioAuthToken == b.TwilioAuthToken && a.WhatsAppAppSecret == b.WhatsAppAppSecret &&
		a.WebhookSecret == b.WebhookSecret && a.PreviousWebhookSecret == b.PreviousWebhookSecret &&
		(a.PreviousWebhookSecretExpiresAt == nil) == (b.PreviousWebhookSecretExpiresAt == nil) &&
		(a.PreviousWebhookSecretExpiresAt == nil || a.PreviousWebhookSecretExpiresAt.Equal(*b.PreviousWebhookSecretExpiresAt))
}

// FindWorkspaceBySlug returns the workspace or ENOTFOUND. Found workspaces
// are cached for a few seconds; callers must not modify the result.
func (db *DB) FindWorkspaceBySlug(ctx context.Context, slug string) (*c360.Workspace, error) {
	if v, ok := db.workspaces.Load(slug); ok && time.Now().Before(v.(workspaceEntry).expires) {
		return v.(workspaceEntry).w, nil
	}
	read := time.Now()
	w, err := db.findWorkspaceBySlug(ctx, slug)
	if err != nil {
		return nil, err
	}
	db.cacheWorkspace(w, read)
	return w, nil
}

// findWorkspaceByID returns the workspace with id as FindWorkspaceBySlug
// does, from its cache: a workspace's slug never changes, so the slug of
// each id is kept once read.
func (db *DB) findWorkspaceByID(ctx context.Context, id int64) (*c360.Workspace, error) {
	if slug, ok := db.workspaceSlugs.Load(id); ok {
		return db.FindWorkspaceBySlug(ctx, slug.(string))
	}
	var slug string
	err := db.app.QueryRow(ctx, `SELECT slug FROM workspaces WHERE id = $1`, id).Scan(&slug)
	if err == pgx.ErrNoRows {
		return nil, c360.Errorf(c360.ENOTFOUND, "workspace %d not found", id)
	} else if err != nil {
		return nil, interpretError(fmt.Errorf("find workspace: %w", err))
	}
	db.workspaceSlugs.Store(id, slug)
	return db.FindWorkspaceBySlug(ctx, slug)
}

// workspaceColumns are the columns scanWorkspace reads, in its order.
const workspaceColumns = `id, slug, name, created_at, webhook_secret,
	previous_webhook_secret, previous_webhook_secret_expires_at,
	twilio_account_sid, twilio_auth_token, twilio_sms_from, twilio_whatsapp_from,
	twilio_messaging_service_sid, whatsapp_app_secret, whatsapp_verify_token`

// scanWorkspace reads a row of workspaceColumns; ENOTFOUND for no row.
func scanWorkspace(row pgx.Row) (*c360.Workspace, error) {
	var (
		w        c360.Workspace
		previous *string
	)
	err := row.Scan(&w.ID, &w.Slug, &w.Name, &w.CreatedAt, &w.WebhookSecret,
		&previous, &w.PreviousWebhookSecretExpiresAt,
		&w.TwilioAccountSID, &w.TwilioAuthToken, &w.TwilioSMSFrom, &w.TwilioWhatsAppFrom,
		&w.TwilioMessagingServiceSID, &w.WhatsAppAppSecret, &w.WhatsAppVerifyToken)
	if err == pgx.ErrNoRows {
		return nil, c360.Errorf(c360.ENOTFOUND, "workspace not found")
	} else if err != nil {
		return nil, err
	}
	if previous != nil {
		w.PreviousWebhookSecret = *previous
	}
	return &w, nil
}

func (db *DB) findWorkspaceBySlug(ctx context.Context, slug string) (*c360.Workspace, error) {
	w, err := scanWorkspace(db.app.QueryRow(ctx, `SELECT `+workspaceColumns+` FROM workspaces WHERE slug = $1`, slug))
	if c360.ErrorCode(err) == c360.ENOTFOUND {
		return nil, c360.Errorf(c360.ENOTFOUND, "workspace %q not found", slug)
	} else if err != nil {
		return nil, interpretError(fmt.Errorf("find workspace: %w", err))
	}
	return w, nil
}

// randomToken returns n random bytes, base64url-encoded.
func randomToken(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err) // crypto/rand never fails on supported platforms
	}
	return base64.RawURLEncoding.EncodeToString(b)
}
