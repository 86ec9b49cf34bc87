package postgres

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"regexp"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/c360dev/c360"
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

// UpdateWorkspace changes the provider settings given in upd.
func (db *DB) UpdateWorkspace(ctx context.Context, slug string, upd c360.WorkspaceUpdate) (*c360.Workspace, error) {
	_, err := db.app.Exec(ctx, `
		UPDATE workspaces SET
			twilio_account_sid           = coalesce($2, twilio_account_sid),
			twilio_auth_token            = coalesce($3, twilio_auth_token),
			twilio_sms_from              = coalesce($4, twilio_sms_from),
			twilio_whatsapp_from         = coalesce($5, twilio_whatsapp_from),
			twilio_messaging_service_sid = coalesce($6, twilio_messaging_service_sid),
			whatsapp_app_secret          = coalesce($7, whatsapp_app_secret),
			whatsapp_verify_token        = coalesce($8, whatsapp_verify_token)
		WHERE slug = $1`,
		slug, upd.TwilioAccountSID, upd.TwilioAuthToken, upd.TwilioSMSFrom, upd.TwilioWhatsAppFrom,
		upd.TwilioMessagingServiceSID, upd.WhatsAppAppSecret, upd.WhatsAppVerifyToken)
	if err != nil {
		return nil, interpretError(fmt.Errorf("update workspace: %w", err))
	}
	db.workspaces.Delete(slug)
	return db.FindWorkspaceBySlug(ctx, slug)
}

// RotateWebhookSecret gives the workspace a new chatbot webhook secret and
// returns it, once. The previous secret is refused from then on: at once by
// this process, within workspaceCacheTTL by every other (there is no grace
// period, so the chatbot platform should get the new secret first and
// retry what is refused meanwhile). ENOTFOUND when no workspace has slug.
func (db *DB) RotateWebhookSecret(ctx context.Context, slug string) (*c360.Workspace, string, error) {
	secret := "whsec_" + randomToken(32)
	tag, err := db.app.Exec(ctx, `UPDATE workspaces SET webhook_secret = $2 WHERE slug = $1`, slug, secret)
	if err != nil {
		return nil, "", interpretError(fmt.Errorf("rotate webhook secret: %w", err))
	}
	db.workspaces.Delete(slug)
	if tag.RowsAffected() == 0 {
		return nil, "", c360.Errorf(c360.ENOTFOUND, "workspace %q not found", slug)
	}
	w, err := db.FindWorkspaceBySlug(ctx, slug)
	if err != nil {
		return nil, "", err
	}
	return w, secret, nil
}

// workspaceCacheTTL bounds how long a replica keeps using a workspace's
// provider settings after another replica changed them. Every webhook
// looks its workspace up by slug; without the cache that lookup was a
// fifth of a webhook's server time.
const workspaceCacheTTL = 5 * time.Second

type workspaceEntry struct {
	w       *c360.Workspace
	expires time.Time
}

// FindWorkspaceBySlug returns the workspace or ENOTFOUND. Found workspaces
// are cached for a few seconds; callers must not modify the result.
func (db *DB) FindWorkspaceBySlug(ctx context.Context, slug string) (*c360.Workspace, error) {
	if v, ok := db.workspaces.Load(slug); ok && time.Now().Before(v.(workspaceEntry).expires) {
		return v.(workspaceEntry).w, nil
	}
	w, err := db.findWorkspaceBySlug(ctx, slug)
	if err != nil {
		return nil, err
	}
	db.workspaces.Store(slug, workspaceEntry{w: w, expires: time.Now().Add(workspaceCacheTTL)})
	return w, nil
}

func (db *DB) findWorkspaceBySlug(ctx context.Context, slug string) (*c360.Workspace, error) {
	var w c360.Workspace
	err := db.app.QueryRow(ctx, `
		SELECT id, slug, name, created_at, webhook_secret, twilio_account_sid, twilio_auth_token,
		       twilio_sms_from, twilio_whatsapp_from, twilio_messaging_service_sid,
		       whatsapp_app_secret, whatsapp_verify_token
		FROM workspaces WHERE slug = $1`, slug).Scan(
		&w.ID, &w.Slug, &w.Name, &w.CreatedAt, &w.WebhookSecret, &w.TwilioAccountSID, &w.TwilioAuthToken,
		&w.TwilioSMSFrom, &w.TwilioWhatsAppFrom, &w.TwilioMessagingServiceSID,
		&w.WhatsAppAppSecret, &w.WhatsAppVerifyToken)
	if err == pgx.ErrNoRows {
		return nil, c360.Errorf(c360.ENOTFOUND, "workspace %q not found", slug)
	} else if err != nil {
		return nil, interpretError(fmt.Errorf("find workspace: %w", err))
	}
	return &w, nil
}

// randomToken returns n random bytes, base64url-encoded.
func randomToken(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err) // crypto/rand never fails on supported platforms
	}
	return base64.RawURLEncoding.EncodeToString(b)
}
