package main

import (
	"context"
	"fmt"
	"log/slog"
	"net/url"
	"strings"
	"time"

	"github.com/c360dev/c360/connectors/chatbot"
	"github.com/c360dev/c360/connectors/segment"
	"github.com/c360dev/c360/connectors/twilio"
	"github.com/c360dev/c360/connectors/whatsapp"
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
	// Logger receives the connectors' logs; nil means slog.Default().
	Logger *slog.Logger
}

// connectors reads the connectors' settings from the environment and builds
// the outbound message sender they configure (sendMessage's). It opens
// nothing: serve checks them before it connects to the database.
func (m *Main) connectors(log *slog.Logger) (Connectors, *twilio.Sender, error) {
	conns := Connectors{
		PublicURL:    strings.TrimRight(m.env("C360_PUBLIC_URL", "http://localhost"+portOf(m.env("C360_ADDR", ":8080"))), "/"),
		TwilioAPIURL: m.Getenv("C360_TWILIO_API_URL"),
		Logger:       log,
	}
	// Twilio signs the URL it calls, and status callbacks are sent there:
	// without a scheme and a host, every webhook fails its signature.
	if u, err := url.Parse(conns.PublicURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return conns, nil, usageError(fmt.Sprintf("C360_PUBLIC_URL: want an absolute http(s) URL such as https://c360.example.com, got %q", conns.PublicURL))
	}
	sender, err := conns.messageSender()
	if err != nil {
		return conns, nil, usageError("C360_TWILIO_API_URL: " + err.Error())
	}
	return conns, sender, nil
}

// mountConnectors mounts every connector's routes on srv. Each connector
// only verifies, parses and hands canonical events to the one ingest path.
func mountConnectors(srv *server.Server, db *postgres.DB, cfg Connectors) {
	segment.New(segment.Config{Store: db, Now: db.Now, StatusOf: server.StatusOf, Logger: cfg.Logger, Limit: srv.AllowWriteKey}).Register(srv)
	chatbot.New(chatbot.Config{Store: db, Now: db.Now, StatusOf: server.StatusOf, Logger: cfg.Logger, Limit: srv.LimitWebhook}).Register(srv)
	(&twilio.Handler{Workspaces: db, Ingester: db, PublicURL: cfg.PublicURL, StatusOf: server.StatusOf,
		Logger: cfg.Logger, Now: db.Now, Limit: srv.LimitWebhook}).Register(srv)
	(&whatsapp.Handler{Workspaces: db, Ingester: db, StatusOf: server.StatusOf, Logger: cfg.Logger, Now: db.Now,
		Limit: srv.LimitWebhook}).Register(srv)
}

// messageSender returns the Twilio sender behind sendMessage: status
// callbacks point at PublicURL, and requests go to TwilioAPIURL when set.
func (cfg Connectors) messageSender() (*twilio.Sender, error) {
	return twilio.NewSender(twilio.SenderConfig{PublicURL: cfg.PublicURL, APIURL: cfg.TwilioAPIURL, Logger: cfg.Logger})
}

// How often serve looks for messages left pending by an interrupted send
// (postgres.DB.SweepPending): in the workspaces it sent in lately every
// pendingSweepInterval, in every workspace at start and about every
// fullPendingSweepInterval (a query per workspace).
const (
	pendingSweepInterval     = time.Minute
	fullPendingSweepInterval = time.Hour
)

// startPendingSweep sweeps messages left pending by an interrupted send
// (a server that stopped mid-send, this one included) to unconfirmed, on
// the schedule above; stop ends the sweep and waits for it.
func startPendingSweep(db *postgres.DB, log *slog.Logger) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		db.SweepPending(ctx, pendingSweepInterval, fullPendingSweepInterval, log)
	}()
	return func() {
		cancel()
		<-done
	}
}
