package resolver

import (
	"context"

	"github.com/99designs/gqlgen/graphql"

	"github.com/c360dev/c360"
	"github.com/c360dev/c360/graph/model"
	"github.com/c360dev/c360/pii"
)

// Budget bounds of customerContext's text, in characters (Unicode code
// points; roughly four per token for English text).
const (
	DefaultContextBudget = 4000
	MinContextBudget     = 100
	MaxContextBudget     = 32000
)

// contextBudget returns the budget asked for, or the default.
func contextBudget(b *int) (int, error) {
	if b == nil {
		return DefaultContextBudget, nil
	}
	if *b < MinContextBudget || *b > MaxContextBudget {
		return 0, c360.Errorf(c360.EINVALID, "budget must be between %d and %d characters", MinContextBudget, MaxContextBudget)
	}
	return *b, nil
}

// customerContext builds the GraphQL context of the customer ref names, for
// the caller: the structured parts go out as they are (the @pii directive on
// Identity.value and CustomerContext.traits masks them, as everywhere), and
// the text block is rendered here with the same masking rules, since no
// directive can see into a string it did not build.
func (r *Resolver) customerContext(ctx context.Context, ref c360.CustomerRef, budget *int) (*model.CustomerContext, error) {
	p, err := principal(ctx)
	if err != nil {
		return nil, err
	}
	if p.Role.IngestOnly() {
		return nil, c360.Errorf(c360.EFORBIDDEN, "a %s key can only ingest", p.Role)
	}
	n, err := contextBudget(budget)
	if err != nil {
		return nil, err
	}
	if r.ContextService == nil {
		return nil, c360.Errorf(c360.EUNAVAILABLE, "customer context is not configured on this server")
	}
	var done func(int64)
	if ref.Identity != nil {
		if done, err = maskedLookup(ctx, p, "customerContext", ref.Identity.Type); err != nil {
			return nil, err
		}
	}
	cc, err := r.ContextService.CustomerContext(ctx, p.WorkspaceID, ref, r.now(), c360.DefaultContextLimits)
	if done != nil && (err == nil || c360.ErrorCode(err) == c360.ENOTFOUND) {
		if err != nil {
			done(0)
		} else {
			done(cc.Customer.ID)
		}
	}
	if err != nil {
		return nil, err
	}
	text := renderContext(cc, n, p.SeesPII())
	r.auditContext(ctx, p, cc.Customer.ID, text.pii)
	return &model.CustomerContext{
		CustomerID:        cc.Customer.ID,
		Version:           int(cc.Customer.Version),
		Traits:            cc.Customer.Traits,
		Identities:        cc.Identities,
		Consents:          cc.Consents,
		OpenConversations: cc.Conversations,
		RecentEvents:      cc.Events,
		Observations:      cc.Observations,
		Merges:            cc.Merges,
		Text:              text.text,
		Budget:            n,
		Truncated:         text.truncated,
	}, nil
}

// auditContext notes the read for the audit log, through the same
// per-operation collector @hasRole and @pii fill (audit.go): an assistant's
// read of the customer, with the context fields it selected, and personal
// data the text block carried unmasked. The structured fields note their
// own through the directives.
func (r *Resolver) auditContext(ctx context.Context, p *c360.Principal, customer int64, textPII []string) {
	col := collectorFrom(ctx)
	if col == nil {
		return
	}
	if p.Role == c360.RoleAssistant {
		var fields []string
		for _, f := range graphql.CollectFieldsCtx(ctx, nil) {
			fields = append(fields, "customerContext."+f.Name)
		}
		if len(fields) == 0 {
			fields = []string{"customerContext"}
		}
		col.add(c360.AuditCustomerRead, customer, fields...)
	}
	if len(textPII) > 0 && p.SeesPII() {
		fields := make([]string, len(textPII))
		for i, f := range textPII {
			fields[i] = "customerContext.text." + f
		}
		col.add(c360.AuditPIIRead, customer, fields...)
	}
}

// kindFilter returns whether a change is wanted: every change when kinds is
// empty, else one that includes one of the kinds (c360.Change.Includes).
// customerChanged(kinds:) uses it, so an assistant can follow only what
// changes its context (message, consent, merged, observation).
func kindFilter(kinds []string) func(*c360.Change) bool {
	if len(kinds) == 0 {
		return func(*c360.Change) bool { return true }
	}
	return func(c *c360.Change) bool {
		for _, k := range kinds {
			if c.Includes(k) {
				return true
			}
		}
		return false
	}
}

// observationText is Observation.text for the caller: masked for a key that
// may not see personal data, noted for the audit log when read unmasked.
func (r *Resolver) observationText(ctx context.Context, o *c360.Observation) (string, error) {
	p, err := principal(ctx)
	if err != nil {
		return "", err
	}
	sees := p.SeesPII()
	text, found := pii.Text(o.Text, !sees)
	if sees && len(found) > 0 {
		if col := collectorFrom(ctx); col != nil {
			fields := make([]string, len(found))
			for i, k := range found {
				fields[i] = "observations.text(" + k + ")"
			}
			col.add(c360.AuditPIIRead, o.CustomerID, fields...)
		}
	}
	return text, nil
}

// observer returns the caller when it may record observations: every role
// that reads profiles (admin, agent, assistant), not the write or client key.
func observer(ctx context.Context) (*c360.Principal, error) {
	p, err := principal(ctx)
	if err != nil {
		return nil, err
	}
	if p.Role.IngestOnly() {
		return nil, c360.Errorf(c360.EFORBIDDEN, "a %s key can only ingest", p.Role)
	}
	return p, nil
}
