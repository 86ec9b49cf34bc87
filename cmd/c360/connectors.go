package main

import (
	"log/slog"

	"github.com/c360dev/c360"
	"github.com/c360dev/c360/postgres"
	"github.com/c360dev/c360/server"
)

// Connectors holds what the provider webhooks and the tracking API need
// from the environment.
type Connectors struct {
	// PublicURL is the external base URL providers call (C360_PUBLIC_URL);
	// Twilio signs the URL it called, so verification rebuilds it from here.
	PublicURL string
	// TwilioAPIURL overrides Twilio's REST base URL (C360_TWILIO_API_URL).
	TwilioAPIURL string
	Logger       *slog.Logger
}

// messageSender returns the outbound sender; none until the Twilio
// connector lands, so sendMessage answers UNAVAILABLE.
func (c Connectors) messageSender() (c360.MessageSender, error) { return nil, nil }

// mountConnectors mounts every connector's routes on srv. Each connector
// only verifies, parses and hands canonical events to the one ingest path.
func mountConnectors(srv *server.Server, db *postgres.DB, cfg Connectors) {
	_, _, _ = srv, db, cfg
}
