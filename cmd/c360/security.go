package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"text/tabwriter"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/c360dev/c360"
	"github.com/c360dev/c360/postgres"
	"github.com/c360dev/c360/resolver"
)

// security is what serve runs for the security layer besides the server:
// the audit log's background writer and the API-key usage recorder.
type security struct {
	audit *postgres.AuditWriter
	usage *postgres.KeyUsage
}

// startSecurity starts the audit writer and key usage recorder, wired into
// res. stop drains and stops them: call it after the HTTP server has shut
// down. (The limits are read with the other settings, before the database
// is opened: serveSettings.)
func startSecurity(db *postgres.DB, res *resolver.Resolver, log *slog.Logger) *security {
	sec := &security{
		audit: postgres.NewAuditWriter(db, postgres.AuditWriterConfig{Logger: log}),
		usage: postgres.NewKeyUsage(db, time.Minute, log),
	}
	res.Audit, res.Keys = sec.audit, db
	return sec
}

// registerMetrics exposes the audit writer's backlog and losses on
// /metrics: read audit entries are written in the background, and an entry
// dropped (the queue full, or its batch failing three times) is a read the
// log does not hold, which an operator must be able to alert on.
func (s *security) registerMetrics(reg *prometheus.Registry) {
	reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "c360_audit_dropped_total",
		Help: "Audit entries dropped: the writer's queue full, or a batch that failed three times."},
		func() float64 { return float64(s.audit.Dropped()) }))
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "c360_audit_pending",
		Help: "Audit entries waiting to be written (at most 50,000)."},
		func() float64 { return float64(s.audit.Pending()) }))
}

func (s *security) stop() {
	s.audit.Close()
	s.usage.Close()
}

// apiKeyJSON is a key as `apikey list --json` and `apikey revoke --json`
// print it: never the hash, never the secret.
type apiKeyJSON struct {
	Prefix     string     `json:"prefix"`
	Role       c360.Role  `json:"role"`
	Scopes     []string   `json:"scopes"`
	CreatedAt  time.Time  `json:"createdAt"`
	LastUsedAt *time.Time `json:"lastUsedAt"`
	RevokedAt  *time.Time `json:"revokedAt"`
}

func toJSON(k *c360.APIKey) apiKeyJSON {
	return apiKeyJSON{Prefix: k.Prefix, Role: k.Role, Scopes: k.Scopes, CreatedAt: k.CreatedAt,
		LastUsedAt: k.LastUsedAt, RevokedAt: k.RevokedAt}
}

// apikeyAdmin runs `apikey revoke` and `apikey list`.
func (m *Main) apikeyAdmin(ctx context.Context, args []string) error {
	cmd := args[0]
	fs := newFlagSet("apikey "+cmd, m.Stderr)
	slug := fs.String("workspace", "", "workspace slug (required)")
	prefix := ""
	if cmd == "revoke" {
		fs.StringVar(&prefix, "prefix", "", "the key's public prefix, as printed at creation and by apikey list (required)")
	}
	asJSON := fs.Bool("json", false, "print JSON")
	if err := m.parse(fs, args[1:]); err != nil {
		return err
	}
	if *slug == "" || (cmd == "revoke" && prefix == "") {
		if cmd == "revoke" {
			return usageError("--workspace and --prefix are required")
		}
		return usageError("--workspace is required")
	}
	db, w, err := m.openWorkspace(ctx, *slug)
	if err != nil {
		return err
	}
	defer db.Close()
	if cmd == "revoke" {
		k, revoked, err := db.RevokeAPIKey(ctx, w.ID, prefix)
		if err != nil {
			return err
		}
		// A key revoked already is no change: nothing is recorded.
		if revoked {
			m.auditKeyChange(ctx, db, c360.AuditAPIKeyRevoke, k)
		}
		if *asJSON {
			return json.NewEncoder(m.Stdout).Encode(toJSON(k))
		}
		if !revoked {
			fmt.Fprintf(m.Stdout, "%s key %s of %s already revoked at %s\n",
				k.Role, k.Prefix, w.Slug, k.RevokedAt.UTC().Format(time.RFC3339))
			return nil
		}
		fmt.Fprintf(m.Stdout, "%s key %s of %s revoked at %s; it stops working within 5 seconds on every server\n",
			k.Role, k.Prefix, w.Slug, k.RevokedAt.UTC().Format(time.RFC3339))
		return nil
	}
	keys, err := db.ListAPIKeys(ctx, w.ID)
	if err != nil {
		return err
	}
	if *asJSON {
		out := make([]apiKeyJSON, len(keys))
		for i, k := range keys {
			out[i] = toJSON(k)
		}
		return json.NewEncoder(m.Stdout).Encode(out)
	}
	tw := tabwriter.NewWriter(m.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "PREFIX\tROLE\tSCOPES\tCREATED\tLAST USED\tREVOKED")
	for _, k := range keys {
		fmt.Fprintf(tw, "%s\t%s\t%v\t%s\t%s\t%s\n", k.Prefix, k.Role, k.Scopes,
			k.CreatedAt.UTC().Format(time.RFC3339), timeOrDash(k.LastUsedAt), timeOrDash(k.RevokedAt))
	}
	return tw.Flush()
}

func timeOrDash(t *time.Time) string {
	if t == nil {
		return "-"
	}
	return t.UTC().Format(time.RFC3339)
}

// auditKeyChange records a key change made on the command line. The change
// is made either way; a failed record is reported on stderr.
func (m *Main) auditKeyChange(ctx context.Context, db *postgres.DB, action string, k *c360.APIKey) {
	e := c360.NewAuditEntry(nil, k.WorkspaceID, action, time.Now())
	e.Detail = map[string]any{"prefix": k.Prefix, "role": k.Role, "scopes": k.Scopes}
	if err := db.RecordAudit(ctx, []*c360.AuditEntry{e}); err != nil {
		fmt.Fprintf(m.Stderr, "c360: warning: the key change was made but not recorded in the audit log: %s\n", c360.ErrorMessageOrText(err))
	}
}
