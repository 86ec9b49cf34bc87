package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	stdlog "log"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"golang.org/x/term"

	"github.com/c360dev/c360"
	"github.com/c360dev/c360/connectors/twilio"
	"github.com/c360dev/c360/identity"
	"github.com/c360dev/c360/postgres"
	"github.com/c360dev/c360/resolver"
	"github.com/c360dev/c360/server"
)

// env returns the environment variable or def.
func (m *Main) env(name, def string) string {
	if v := m.Getenv(name); v != "" {
		return v
	}
	return def
}

// open connects to DATABASE_URL. C360_DB_MAX_CONNS, when set, sizes the
// tenant pool and wins over the URL's pool_max_conns.
func (m *Main) open(ctx context.Context) (*postgres.DB, error) {
	url := m.Getenv("DATABASE_URL")
	if url == "" {
		return nil, usageError("DATABASE_URL is not set")
	}
	var opts []postgres.Option
	if v := m.Getenv("C360_DB_MAX_CONNS"); v != "" {
		n, err := strconv.ParseInt(v, 10, 32)
		if err != nil || n < 1 {
			return nil, usageError(fmt.Sprintf("C360_DB_MAX_CONNS: want a positive integer, got %q", v))
		}
		opts = append(opts, postgres.MaxConns(int32(n)))
	}
	// A region phone numbers are not known for (UK for GB, USA) would make
	// every national number fail to parse.
	region := strings.ToUpper(m.env("C360_DEFAULT_REGION", "US"))
	if !identity.KnownRegion(region) {
		return nil, usageError(fmt.Sprintf("C360_DEFAULT_REGION: %q is not a region code phone numbers are known by; use an ISO 3166 code such as US or GB", truncate(region)))
	}
	db, err := postgres.Open(ctx, url, opts...)
	if c360.ErrorCode(err) == c360.EINVALID {
		// A DATABASE_URL that cannot be parsed is a setting's mistake.
		return nil, usageError(c360.ErrorMessage(err))
	}
	if err != nil {
		return nil, err
	}
	db.Normalizer = identity.Normalizer{DefaultRegion: region}
	return db, nil
}

// truncate shortens a setting's value (or a table's cell) for a message,
// at a rune's start: cut inside one, it would print invalid UTF-8.
func truncate(s string) string {
	if len(s) <= 40 {
		return s
	}
	cut := 40
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "…"
}

func newFlagSet(name string, out io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(out)
	return fs
}

func (m *Main) parse(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err == flag.ErrHelp {
		return err // the flags are printed: Run ends without an error
	} else if err != nil {
		return usageError(err.Error())
	}
	if fs.NArg() > 0 {
		return usageError(fmt.Sprintf("unexpected argument %q", fs.Arg(0)))
	}
	return nil
}

func (m *Main) serve(ctx context.Context, args []string) error {
	fs := newFlagSet("serve", m.Stderr)
	dev := fs.Bool("dev", false, "development mode: introspection on")
	noMigrate := fs.Bool("no-migrate", false, "do not apply pending migrations at start")
	if err := m.parse(fs, args); err != nil {
		return err
	}
	log := slog.New(slog.NewJSONHandler(m.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	// Libraries that write with the standard log package (gqlgen, on an
	// upgrade that fails) write JSON lines through the same handler, not
	// bare text among them.
	// SetDefault also points the log package at the handler; setting the
	// previous default back does not undo that, so its output is put back
	// by hand (tests run serve more than once in one process).
	prev, prevOut, prevFlags, prevPrefix := slog.Default(), stdlog.Writer(), stdlog.Flags(), stdlog.Prefix()
	slog.SetDefault(log)
	defer func() {
		slog.SetDefault(prev)
		stdlog.SetOutput(prevOut)
		stdlog.SetFlags(prevFlags)
		stdlog.SetPrefix(prevPrefix)
	}()
	// Every setting is read and checked before the database is opened: a
	// mistake is named at once (exit 2), even with the database down, and
	// leaves pending migrations pending.
	set, err := m.serveSettings(log)
	if err != nil {
		return err
	}
	shutdownTimeout := set.shutdownTimeout
	// The listeners are bound before the database is opened too: an
	// address in use is named before migrations run.
	lns, err := listen(set)
	if err != nil {
		return err
	}
	defer lns.close()
	// The public listener is served at once (front): while the database
	// is opened and migrated, /healthz answers 200 and /readyz 503 with
	// the reason, so a liveness probe does not kill a migrating replica.
	ln := lns.api
	fr := newFront(m.startupWait)
	httpSrv := &http.Server{
		Handler:           fr,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       120 * time.Second,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	errc := make(chan error, 1)
	go func() { errc <- httpSrv.Serve(ln) }()
	started := false
	defer func() {
		if !started {
			fr.abort()      // answer the requests waiting for the server
			httpSrv.Close() // serve failed before it served: drop the startup answers' connections
		}
	}()
	// Cleanups run in reverse order, bounded by the shutdown deadline once
	// one is set (operations.go).
	stops := &stopper{log: log}
	defer stops.run()
	db, err := m.open(ctx)
	if err != nil {
		return err
	}
	stops.add(db.Close)
	if !*noMigrate {
		fr.set("migrating")
		mig, err := db.NewMigrator()
		if err != nil {
			return err
		}
		err = mig.Up(ctx, log)
		mig.Close()
		if err != nil {
			return err
		}
	}
	db.StartIngest(set.ingest)
	res := NewResolver(db)
	res.MessageSender, res.ReadAudit = set.sender, set.readAudit
	stops.add(startPendingSweep(db, log))
	// Cleanups run in reverse: realtime's (the notifier's final flush, which
	// takes milliseconds) before the audit writer's drain, which may take
	// the rest of the deadline on a slow database.
	sec := startSecurity(db, res, log)
	stops.add(sec.stop)
	rt := startRealtime(db, log, set.realtime)
	stops.add(rt.stop)
	res.Hub, res.Realtime = rt.hub, db
	srv := server.New(server.Config{Dev: *dev, Logger: log, Websocket: set.realtime.ws, Limits: set.limits,
		BodyReadTimeout: set.bodyReadTimeout, MetricsElsewhere: lns.metrics != nil}, db, res, db)
	rt.registerMetrics(srv.Registry())
	sec.registerMetrics(srv.Registry())
	mountConnectors(srv, db, set.conns)
	mountMCP(srv, db, log)

	if lns.pprof != nil {
		// Profiling stays off the public listener: only an operator who sets
		// this (to a loopback address) can reach it.
		mux := http.NewServeMux()
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
		mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		ps := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
		go ps.Serve(lns.pprof)
		defer ps.Close()
	}
	if lns.metrics != nil {
		defer serveMetrics(lns.metrics, srv.MetricsHandler())()
	}
	// Websockets close (1001, reconnect) before the hub stops: a
	// subscription that saw the hub stop first would be sent its end
	// (complete), and a graphql-ws client does not resubscribe to what
	// ended. Shutdown runs this on a goroutine it does not wait for, and
	// returns at once when only websockets (hijacked, so not in flight)
	// remain: serve waits for it (websocketsClosed) before the cleanups,
	// which stop the hub.
	websocketsClosed := make(chan struct{})
	httpSrv.RegisterOnShutdown(func() {
		defer close(websocketsClosed)
		srv.CloseWebsockets()
		rt.stopStreams()
	})
	log.Info("serving", "addr", ln.Addr().String(), "dev", *dev)
	fr.serving(srv)
	started = true
	select {
	case err := <-errc:
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	if d := set.shutdownDelay; d > 0 {
		// Out of the balancer first: /readyz answers 503 while the
		// endpoint's removal propagates, and requests routed meanwhile
		// are still served, not refused.
		fr.set("shutting down")
		log.Info("shutting down: not ready, still serving", "delay", d.String())
		t := time.NewTimer(d)
		select {
		case <-t.C:
		case err := <-errc:
			t.Stop()
			return fmt.Errorf("serve: %w", err)
		}
	}
	log.Info("shutting down", "deadline", shutdownTimeout.String())
	// In-flight requests get the deadline less a reserve for the cleanups;
	// the cleanups end by the deadline (stopper).
	stops.deadline = time.Now().Add(shutdownTimeout)
	sctx, cancel := context.WithDeadline(context.Background(), stops.deadline.Add(-cleanupReserve(shutdownTimeout)))
	defer cancel()
	err = httpSrv.Shutdown(sctx)
	select {
	case <-websocketsClosed:
	case <-sctx.Done():
	}
	if err != nil {
		httpSrv.Close() // drop what is still open: unanswered, so its clients retry
		return fmt.Errorf("shutdown: requests still in flight at the deadline (C360_SHUTDOWN_TIMEOUT=%s): %w", shutdownTimeout, err)
	}
	return nil
}

// serveSettings is serve's configuration from the environment, all of it
// but DATABASE_URL's (read by open).
type serveSettings struct {
	shutdownTimeout time.Duration
	// shutdownDelay is C360_SHUTDOWN_DELAY: how long serve stays up, not
	// ready, after SIGTERM, before its graceful shutdown.
	shutdownDelay time.Duration
	// bodyReadTimeout is C360_BODY_READ_TIMEOUT (server.Config.BodyReadTimeout).
	bodyReadTimeout time.Duration
	ingest          postgres.IngestConfig
	conns           Connectors
	sender          *twilio.Sender
	limits          server.Limits
	realtime        realtimeSettings
	// readAudit is C360_AUDIT_READS: whose reads are recorded before
	// their answer leaves.
	readAudit resolver.ReadAudit

	// addr, metricsAddr and pprofAddr are the listen addresses of
	// C360_ADDR, C360_METRICS_ADDR and C360_PPROF_ADDR ("" when unset: no
	// listener of its own).
	addr, metricsAddr, pprofAddr string
}

// serveSettings reads and checks serve's settings, opening nothing; a bad
// one is a usageError naming the variable.
func (m *Main) serveSettings(log *slog.Logger) (set serveSettings, err error) {
	if set.addr, err = m.listenAddr("C360_ADDR", ":8080"); err != nil {
		return set, err
	}
	if set.metricsAddr, err = m.listenAddr("C360_METRICS_ADDR", ""); err != nil {
		return set, err
	}
	if set.pprofAddr, err = m.listenAddr("C360_PPROF_ADDR", ""); err != nil {
		return set, err
	}
	if set.shutdownTimeout, err = m.duration("C360_SHUTDOWN_TIMEOUT", "25s"); err != nil {
		return set, err
	}
	if set.shutdownDelay, err = m.shutdownDelay(); err != nil {
		return set, err
	}
	if set.bodyReadTimeout, err = m.duration("C360_BODY_READ_TIMEOUT", server.DefaultBodyReadTimeout.String()); err != nil {
		return set, err
	}
	if set.ingest, err = m.ingestConfig(); err != nil {
		return set, err
	}
	if set.conns, set.sender, err = m.connectors(log); err != nil {
		return set, err
	}
	if set.limits, err = server.LimitsFromEnv(m.Getenv); err != nil {
		return set, usageError(err.Error())
	}
	if set.realtime, err = m.realtimeSettings(); err != nil {
		return set, err
	}
	if set.readAudit, err = m.readAudit(); err != nil {
		return set, err
	}
	return set, nil
}

// readAudit reads C360_AUDIT_READS: assistant (the default), all or async.
func (m *Main) readAudit() (resolver.ReadAudit, error) {
	v, ok := resolver.ParseReadAudit(m.env("C360_AUDIT_READS", "assistant"))
	if !ok {
		return 0, usageError("C360_AUDIT_READS: want assistant, all or async")
	}
	return v, nil
}

// maxStdinSecret bounds a secret read from standard input.
const maxStdinSecret = 4096

// providerSecrets reads and checks the provider secrets of a workspace
// update, given in flags by name. A secret whose value is "-" is read from
// standard input (at a terminal, with a prompt and without echo; else its
// first line): two cannot share it. Every secret given, read or not, must
// be text without white space at its ends, which a pasted secret picks up
// and which would then break every signature check unseen; "" clears one.
func (m *Main) providerSecrets(ctx context.Context, flags []namedSecret) error {
	var stdin *namedSecret
	for i := range flags {
		f := &flags[i]
		if *f.value == nil || **f.value != "-" {
			continue
		}
		if stdin != nil {
			return usageError("only one secret can be read from standard input: --" + stdin.name + " and --" + f.name + " are both -")
		}
		stdin = f
	}
	if stdin != nil {
		v, err := m.readSecret(ctx, stdin.name)
		if err != nil {
			return err
		}
		*stdin.value = &v
	}
	for _, f := range flags {
		if *f.value == nil || **f.value == "" {
			continue
		}
		v := **f.value
		switch {
		case !utf8.ValidString(v) || strings.ContainsRune(v, 0):
			return usageError("--" + f.name + ": the secret is not text (UTF-8, without NUL)")
		case strings.TrimSpace(v) == "":
			return usageError("--" + f.name + ": the secret is only white space")
		case strings.TrimSpace(v) != v:
			return usageError("--" + f.name + ": the secret begins or ends with white space, as a pasted one may: give it without")
		}
	}
	return nil
}

// namedSecret is a secret flag of workspace update and where its value is.
type namedSecret struct {
	name  string
	value **string
}

// readSecret reads the secret of flag name from standard input: at a
// terminal, one line typed or pasted after a prompt, not echoed; else the
// first line of what is piped in, which must be all there is.
func (m *Main) readSecret(ctx context.Context, name string) (string, error) {
	if f, ok := m.Stdin.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		return m.promptSecret(ctx, int(f.Fd()), name)
	}
	raw, err := io.ReadAll(io.LimitReader(m.Stdin, maxStdinSecret+1))
	if err != nil {
		return "", fmt.Errorf("read --%s from standard input: %w", name, err)
	}
	if len(raw) > maxStdinSecret {
		return "", usageError(fmt.Sprintf("--%s: standard input holds more than %d bytes; give the secret alone", name, maxStdinSecret))
	}
	line, rest, _ := strings.Cut(string(raw), "\n")
	return secretLine(name, strings.TrimSuffix(line, "\r"), rest)
}

// promptSecret reads the secret of flag name from the terminal fd after a
// prompt, without echo. Interrupted (Ctrl-C cancels ctx), it gives the
// terminal its echo back before it returns: the read that waits on is
// left to the process's end.
func (m *Main) promptSecret(ctx context.Context, fd int, name string) (string, error) {
	state, err := term.GetState(fd)
	if err != nil {
		return "", fmt.Errorf("read --%s from the terminal: %w", name, err)
	}
	fmt.Fprintf(m.Stderr, "--%s (not shown; Enter to end): ", name)
	type read struct {
		raw []byte
		err error
	}
	done := make(chan read, 1)
	go func() {
		raw, err := term.ReadPassword(fd)
		done <- read{raw, err}
	}()
	select {
	case r := <-done:
		fmt.Fprintln(m.Stderr)
		if r.err != nil {
			return "", fmt.Errorf("read --%s from the terminal: %w", name, r.err)
		}
		return secretLine(name, string(r.raw), "")
	case <-ctx.Done():
		term.Restore(fd, state)
		fmt.Fprintln(m.Stderr)
		return "", fmt.Errorf("--%s: interrupted; nothing changed", name)
	}
}

// secretLine is the secret of flag name read as line, a byte-order mark
// dropped; rest, what followed it, must be blank.
func secretLine(name, line, rest string) (string, error) {
	line = strings.TrimPrefix(line, "\ufeff")
	if strings.TrimSpace(rest) != "" {
		return "", usageError("--" + name + ": standard input holds more than one line; give the secret alone")
	}
	if line == "" {
		return "", usageError("--" + name + ": standard input is empty; to clear the secret, give --" + name + ` ""`)
	}
	return line, nil
}

// NewResolver wires the GraphQL resolvers to the store.
func NewResolver(db *postgres.DB) *resolver.Resolver {
	return &resolver.Resolver{
		CustomerService:     db,
		EventService:        db,
		ConversationService: db,
		IdentityService:     db,
		ErasureService:      db,
		Ingester:            db,
		DeadLetterService:   db,
		Now:                 db.Now,
		MessagingService:    db,
		ContextService:      db,
		ObservationService:  db,
		Keys:                db,
	}
}

func (m *Main) migrate(ctx context.Context, args []string) error {
	if len(args) != 1 {
		return usageError("usage: c360 migrate up|down|status")
	}
	// Refused before the database is opened: with DATABASE_URL unset, or
	// the database down, a typo would otherwise be reported as that.
	if !slices.Contains([]string{"up", "down", "status"}, args[0]) {
		return usageError(fmt.Sprintf("unknown migrate command %q: use up, down or status", truncate(args[0])))
	}
	db, err := m.open(ctx)
	if err != nil {
		return err
	}
	defer db.Close()
	mig, err := db.NewMigrator()
	if err != nil {
		return err
	}
	defer mig.Close()
	switch args[0] {
	case "up":
		log := slog.New(slog.NewTextHandler(m.Stderr, nil))
		return mig.Up(ctx, log)
	case "down":
		return mig.Down(ctx)
	default: // status
		return mig.Status(ctx, m.Stdout)
	}
}

func (m *Main) workspace(ctx context.Context, args []string) error {
	if len(args) == 0 {
		return usageError("usage: c360 workspace create|update|rules ...")
	}
	switch args[0] {
	case "create":
		fs := newFlagSet("workspace create", m.Stderr)
		slug := fs.String("slug", "", "workspace slug (required)")
		name := fs.String("name", "", "display name")
		asJSON := fs.Bool("json", false, "print one JSON object")
		if err := m.parse(fs, args[1:]); err != nil {
			return err
		}
		if *slug == "" {
			return usageError("--slug is required")
		}
		db, err := m.open(ctx)
		if err != nil {
			return err
		}
		defer db.Close()
		creds, err := db.CreateWorkspace(ctx, *slug, *name)
		if err != nil {
			return err
		}
		if *asJSON {
			return json.NewEncoder(m.Stdout).Encode(creds)
		}
		fmt.Fprintf(m.Stdout, "workspace %s created (id %d)\nadmin API key:  %s\nwrite key:      %s\nwebhook secret: %s\n\nThese secrets are shown once.\n",
			creds.Slug, creds.ID, creds.APIKey, creds.WriteKey, creds.WebhookSecret)
		return nil
	case "update":
		fs := newFlagSet("workspace update", m.Stderr)
		slug := fs.String("slug", "", "workspace slug (required)")
		var upd c360.WorkspaceUpdate
		opt := func(p **string, name, help string) {
			fs.Func(name, help, func(v string) error { *p = &v; return nil })
		}
		// A secret given as "-" is read from standard input, so that it
		// is not in the process's arguments, which any local user can read
		// (/proc/PID/cmdline, ps) and shells keep in their history.
		var secretFlags []namedSecret
		secret := func(p **string, name, help string) {
			secretFlags = append(secretFlags, namedSecret{name, p})
			opt(p, name, help+`; "-" reads it from standard input`)
		}
		opt(&upd.TwilioAccountSID, "twilio-account-sid", "Twilio account SID")
		secret(&upd.TwilioAuthToken, "twilio-auth-token", "Twilio auth token (verifies webhook signatures)")
		opt(&upd.TwilioSMSFrom, "twilio-sms-from", "sender for SMS: a phone number (kept in E.164), a short code or an alphanumeric sender ID")
		opt(&upd.TwilioWhatsAppFrom, "twilio-whatsapp-from", "sender number for WhatsApp, with or without whatsapp: (kept in E.164)")
		opt(&upd.TwilioMessagingServiceSID, "twilio-messaging-service-sid", "Messaging Service SID used as sender")
		secret(&upd.WhatsAppAppSecret, "whatsapp-app-secret", "Meta app secret (verifies X-Hub-Signature-256)")
		secret(&upd.WhatsAppVerifyToken, "whatsapp-verify-token", "Meta webhook verify token")
		rotate := fs.Bool("rotate-webhook-secret", false, "replace the chatbot webhook secret (printed once; the old one keeps working for --grace)")
		grace := fs.Duration("grace", c360.DefaultWebhookSecretGrace,
			"with --rotate-webhook-secret: how long the old secret keeps working, 0 (refused at once) up to 168h (7 days)")
		asJSON := fs.Bool("json", false, "print one JSON object")
		if err := m.parse(fs, args[1:]); err != nil {
			return err
		}
		if *slug == "" {
			return usageError("--slug is required")
		}
		if err := checkGrace(fs, *rotate, *grace); err != nil {
			return err
		}
		if err := m.providerSecrets(ctx, secretFlags); err != nil {
			return err
		}
		db, err := m.open(ctx)
		if err != nil {
			return err
		}
		defer db.Close()
		w, err := db.UpdateWorkspace(ctx, *slug, upd)
		if c360.ErrorCode(err) == c360.EINVALID {
			// A setting's value is refused (a sender that is no number):
			// the command line's mistake, and nothing changed.
			return usageError(c360.ErrorMessage(err))
		}
		if err != nil {
			return err
		}
		// A provider secret verifies webhooks: who changed it and when
		// is audited, as a key change is, never the secret.
		var secrets []string
		if upd.TwilioAuthToken != nil {
			secrets = append(secrets, "twilioAuthToken")
		}
		if upd.WhatsAppAppSecret != nil {
			secrets = append(secrets, "whatsappAppSecret")
		}
		if len(secrets) > 0 {
			e := c360.NewAuditEntry(nil, w.ID, c360.AuditProviderSecretUpdate, time.Now())
			e.Detail = map[string]any{"secrets": secrets}
			m.recordAudit(ctx, db, e, "the provider secret was changed")
		}
		out := map[string]any{"id": strconv.FormatInt(w.ID, 10), "slug": w.Slug}
		if *rotate {
			var secret string
			if w, secret, err = db.RotateWebhookSecret(ctx, *slug, *grace); err != nil {
				return err
			}
			// Audited as key changes are: who (the command line), when
			// and the grace given, never the secret.
			e := c360.NewAuditEntry(nil, w.ID, c360.AuditWebhookSecretRotate, time.Now())
			e.Detail = map[string]any{"graceSeconds": int64(grace.Seconds())}
			out["webhookSecret"] = secret
			out["previousValidUntil"] = nil
			if exp := w.PreviousWebhookSecretExpiresAt; exp != nil {
				until := exp.UTC().Format(time.RFC3339)
				e.Detail["previousValidUntil"] = until
				out["previousValidUntil"] = until
			}
			m.recordAudit(ctx, db, e, "the webhook secret was rotated")
		}
		if *asJSON {
			return json.NewEncoder(m.Stdout).Encode(out)
		}
		fmt.Fprintf(m.Stdout, "workspace %s updated\n", w.Slug)
		if *rotate {
			fmt.Fprintf(m.Stdout, "new webhook secret: %s\n\nThis secret is shown once. ", out["webhookSecret"])
			if until, ok := out["previousValidUntil"].(string); ok {
				fmt.Fprintf(m.Stdout, "The previous one keeps working until %s (--grace %s):\ngive the new one to the chatbot platform before then; after it, webhooks signed with the previous one are refused (401).\n", until, *grace)
			} else {
				fmt.Fprint(m.Stdout, "The previous one is refused from now on (within 5 seconds on every server):\ngive the new one to the chatbot platform: until it signs with it, its webhooks are refused (401).\n")
			}
		}
		return nil
	case "rules":
		return m.workspaceRules(ctx, args[1:])
	}
	return usageError(fmt.Sprintf("unknown workspace command %q: use create, update or rules", args[0]))
}

// checkGrace refuses a --grace that is out of range or given without
// --rotate-webhook-secret, before anything is changed.
func checkGrace(fs *flag.FlagSet, rotate bool, grace time.Duration) error {
	given := false
	fs.Visit(func(f *flag.Flag) { given = given || f.Name == "grace" })
	switch {
	case given && !rotate:
		return usageError("--grace needs --rotate-webhook-secret: it is how long the secret the rotation replaces keeps working")
	case grace < 0:
		return usageError(fmt.Sprintf("--grace %s is negative: use 0 to refuse the old webhook secret at once, or up to 168h (7 days)", grace))
	case grace > c360.MaxWebhookSecretGrace:
		return usageError(fmt.Sprintf("--grace %s is more than 168h (7 days), the longest the old webhook secret may keep working", grace))
	}
	return nil
}

func (m *Main) apikey(ctx context.Context, args []string) error {
	if len(args) > 0 && (args[0] == "revoke" || args[0] == "list") {
		return m.apikeyAdmin(ctx, args)
	}
	if len(args) == 0 || args[0] != "create" {
		return usageError("usage: c360 apikey create|revoke|list --workspace SLUG ...")
	}
	fs := newFlagSet("apikey create", m.Stderr)
	slug := fs.String("workspace", "", "workspace slug (required)")
	role := fs.String("role", "", "admin, agent, assistant, write or client (required)")
	scopes := fs.String("scopes", "", "comma-separated scopes, e.g. pii")
	asJSON := fs.Bool("json", false, "print one JSON object")
	if err := m.parse(fs, args[1:]); err != nil {
		return err
	}
	if *slug == "" || *role == "" {
		return usageError("--workspace and --role are required")
	}
	var sc []string
	for _, s := range strings.Split(*scopes, ",") {
		if s = strings.TrimSpace(s); s != "" {
			sc = append(sc, s)
		}
	}
	db, err := m.open(ctx)
	if err != nil {
		return err
	}
	defer db.Close()
	secret, key, err := db.CreateAPIKey(ctx, *slug, c360.Role(*role), sc)
	if err != nil {
		return err
	}
	m.auditKeyChange(ctx, db, c360.AuditAPIKeyCreate, key)
	if *asJSON {
		// scopes tells a pii key from a masked one: [] when none, never null.
		sc := append([]string{}, key.Scopes...)
		return json.NewEncoder(m.Stdout).Encode(map[string]any{"apiKey": secret, "role": key.Role, "prefix": key.Prefix, "scopes": sc})
	}
	fmt.Fprintf(m.Stdout, "%s API key for %s: %s\n(shown once)\n", key.Role, *slug, secret)
	return nil
}

// portOf returns ":PORT" of a listen address, for the default public URL.
func portOf(addr string) string {
	if _, port, err := net.SplitHostPort(addr); err == nil {
		return ":" + port
	}
	return ":8080"
}

// workspaceRules prints the workspace's identity rules, or changes them when
// any rule flag is given.
func (m *Main) workspaceRules(ctx context.Context, args []string) error {
	fs := newFlagSet("workspace rules", m.Stderr)
	slug := fs.String("slug", "", "workspace slug (required)")
	asJSON := fs.Bool("json", false, "print one JSON object")
	limits := map[string]int{}
	fs.Func("limit", "TYPE=N: at most N identities of TYPE per customer (repeatable, once per TYPE)", func(v string) error {
		t, n, ok := strings.Cut(v, "=")
		k, err := strconv.Atoi(n)
		if !ok || err != nil {
			return fmt.Errorf("want TYPE=N, got %q", v)
		}
		// As updateIdentityRules refuses a type given twice: the last
		// one winning would hide a typo.
		if _, dup := limits[t]; dup {
			return fmt.Errorf("limit for %q given twice", t)
		}
		limits[t] = k
		return nil
	})
	defLimit := fs.Int("default-limit", 0, "limit for types without their own (at least 1)")
	// A list flag is given once, its values separated by commas: given
	// again, the last one would silently replace the first (a second
	// blocked address unblocking the first).
	list := func(name, usage string) *string {
		var v string
		seen := false
		fs.Func(name, usage, func(s string) error {
			if seen {
				return fmt.Errorf("--%s given twice: give its values once, separated by commas", name)
			}
			v, seen = s, true
			return nil
		})
		return &v
	}
	priority := list("priority", "comma-separated types, highest priority first (\"\": none)")
	blocked := list("blocked", "comma-separated values never treated as identifiers (\"\": none)")
	if err := m.parse(fs, args); err != nil {
		return err
	}
	if *slug == "" {
		return usageError("--slug is required")
	}
	// A flag given empty (--blocked "") clears its rule: what was given,
	// not what is empty, says what changes.
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	changed := given["limit"] || given["default-limit"] || given["priority"] || given["blocked"]
	if given["default-limit"] && *defLimit < 1 {
		return usageError(fmt.Sprintf("--default-limit must be at least 1, got %d", *defLimit))
	}
	db, w, err := m.openWorkspace(ctx, *slug)
	if err != nil {
		return err
	}
	defer db.Close()
	rules, err := db.IdentityRules(ctx, w.ID)
	if err != nil {
		return err
	}
	if changed {
		maps.Copy(rules.Limits, limits)
		if given["default-limit"] {
			rules.DefaultLimit = *defLimit
		}
		if given["priority"] {
			rules.Priority = splitList(*priority)
		}
		if given["blocked"] {
			rules.Blocked = splitList(*blocked)
		}
		if rules, err = db.UpdateIdentityRules(ctx, w.ID, *rules); err != nil {
			return err
		}
		// The entry updateIdentityRules records over GraphQL.
		e := c360.NewAuditEntry(nil, w.ID, c360.AuditIdentityRulesUpdate, time.Now())
		e.Detail = map[string]any{"rules": rules.Detail()}
		m.recordAudit(ctx, db, e, "the identity rules were changed")
	}
	if *asJSON {
		return json.NewEncoder(m.Stdout).Encode(rules.Detail())
	}
	fmt.Fprintf(m.Stdout, "identity rules of %s\n  limits:        %s (others %d)\n  priority:      %s\n  blocked:       %s\n",
		w.Slug, limitList(rules.Limits), rules.DefaultLimit, strings.Join(rules.Priority, ", "), strings.Join(rules.Blocked, ", "))
	return nil
}

// limitList writes per-type limits as --limit takes them, sorted by type:
// "email=2, user_id=1"; "none" when no type has its own.
func limitList(limits map[string]int) string {
	if len(limits) == 0 {
		return "none"
	}
	out := make([]string, 0, len(limits))
	for _, t := range slices.Sorted(maps.Keys(limits)) {
		out = append(out, t+"="+strconv.Itoa(limits[t]))
	}
	return strings.Join(out, ", ")
}

// recordAudit records e, a change the command made (done, as "the
// identity rules were changed"), and warns on stderr when it cannot: the
// change stands either way.
func (m *Main) recordAudit(ctx context.Context, db *postgres.DB, e *c360.AuditEntry, done string) {
	if err := db.RecordAudit(ctx, []*c360.AuditEntry{e}); err != nil {
		fmt.Fprintf(m.Stderr, "c360: warning: %s but not recorded in the audit log: %s\n", done, c360.ErrorMessageOrText(err))
	}
}

// splitList returns the comma-separated items of s, trimmed, the empty
// ones left out; none for "".
func splitList(s string) []string {
	out := []string{}
	for _, x := range strings.Split(s, ",") {
		if x = strings.TrimSpace(x); x != "" {
			out = append(out, x)
		}
	}
	return out
}

// openWorkspace opens the store and finds the workspace with this slug; the
// caller closes the store.
func (m *Main) openWorkspace(ctx context.Context, slug string) (*postgres.DB, *c360.Workspace, error) {
	db, err := m.open(ctx)
	if err != nil {
		return nil, nil, err
	}
	w, err := db.FindWorkspaceBySlug(ctx, slug)
	if err != nil {
		db.Close()
		return nil, nil, err
	}
	return db, w, nil
}
