package c360

import (
	"context"
	"time"
)

// Workspace is a tenant: one business whose customers c360 keeps. Every other
// row belongs to exactly one workspace.
type Workspace struct {
	ID        int64
	Slug      string
	Name      string
	CreatedAt time.Time

	// WebhookSecret signs chatbot webhooks (HMAC), so it is kept in clear.
	WebhookSecret string
	// PreviousWebhookSecret is the secret the last rotation replaced, still
	// accepted while the time is before PreviousWebhookSecretExpiresAt (the
	// rotation's grace period); "" and nil when there is none. Neither is
	// ever printed, logged or encoded.
	PreviousWebhookSecret          string     `json:"-"`
	PreviousWebhookSecretExpiresAt *time.Time `json:"-"`

	// Twilio credentials verify inbound signatures and send outbound messages.
	TwilioAccountSID          string
	TwilioAuthToken           string
	TwilioSMSFrom             string
	TwilioWhatsAppFrom        string
	TwilioMessagingServiceSID string

	// Meta WhatsApp Cloud API settings.
	WhatsAppAppSecret   string
	WhatsAppVerifyToken string
}

// WorkspaceCredentials are the secrets issued when a workspace is created.
// They are shown once; API and write keys are stored only as hashes.
type WorkspaceCredentials struct {
	ID            int64  `json:"id,string"`
	Slug          string `json:"slug"`
	APIKey        string `json:"apiKey"`
	WriteKey      string `json:"writeKey"`
	WebhookSecret string `json:"webhookSecret"`
}

// WorkspaceUpdate changes a workspace's provider settings; nil fields are left alone.
type WorkspaceUpdate struct {
	TwilioAccountSID          *string
	TwilioAuthToken           *string
	TwilioSMSFrom             *string
	TwilioWhatsAppFrom        *string
	TwilioMessagingServiceSID *string
	WhatsAppAppSecret         *string
	WhatsAppVerifyToken       *string
}

// MaxWebhookSecretGrace bounds the grace period of a webhook secret
// rotation: the secret it replaces is accepted for at most this long.
const MaxWebhookSecretGrace = 7 * 24 * time.Hour

// DefaultWebhookSecretGrace is the grace period of a rotation that names none.
const DefaultWebhookSecretGrace = 24 * time.Hour

// WorkspaceService manages workspaces.
type WorkspaceService interface {
	CreateWorkspace(ctx context.Context, slug, name string) (*WorkspaceCredentials, error)
	UpdateWorkspace(ctx context.Context, slug string, upd WorkspaceUpdate) (*Workspace, error)
	FindWorkspaceBySlug(ctx context.Context, slug string) (*Workspace, error)
}
