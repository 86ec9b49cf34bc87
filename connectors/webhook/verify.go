package webhook

import (
	"context"

	"github.com/c360dev/c360"
)

// Reread returns a workspace's row as it is now, read past the cache a
// webhook found it in (postgres.DB.RereadWorkspace: at most one such read
// a second per workspace, waiting for the next).
type Reread func(ctx context.Context, seen *c360.Workspace) (*c360.Workspace, error)

// Verify checks a webhook's signature with ok against ws, a cached row:
// when ws's secrets refuse it, the row is read again and checked once
// more, since another process (the command line, another replica) may
// have rotated the secret since ws was cached, and the sender signs with
// the new one at once (Twilio does not retry a refusal). It returns the
// row last checked and whether ok accepted it; an error is the read's.
func Verify(ctx context.Context, reread Reread, ws *c360.Workspace, ok func(*c360.Workspace) bool) (*c360.Workspace, bool, error) {
	if ok(ws) {
		return ws, true, nil
	}
	fresh, err := reread(ctx, ws)
	if err != nil {
		return ws, false, err
	}
	return fresh, ok(fresh), nil
}
