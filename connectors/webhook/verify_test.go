package webhook_test

import (
	"context"
	"testing"

	"github.com/c360dev/c360"
	"github.com/c360dev/c360/connectors/webhook"
)

// Verify reads the row again only when the cached row refuses, checks the
// fresh row, and hands back the read's error without accepting.
func TestVerify(t *testing.T) {
	cached := &c360.Workspace{Slug: "w", TwilioAuthToken: "old"}
	fresh := &c360.Workspace{Slug: "w", TwilioAuthToken: "new"}
	reads := 0
	reread := func(context.Context, *c360.Workspace) (*c360.Workspace, error) { reads++; return fresh, nil }
	signedWith := func(token string) func(*c360.Workspace) bool {
		return func(w *c360.Workspace) bool { return w.TwilioAuthToken == token }
	}

	if w, ok, err := webhook.Verify(context.Background(), reread, cached, signedWith("old")); w != cached || !ok || err != nil || reads != 0 {
		t.Errorf("accepted by the cached row: %v %v %v, %d reads; want the cached row, no read", w.TwilioAuthToken, ok, err, reads)
	}
	if w, ok, err := webhook.Verify(context.Background(), reread, cached, signedWith("new")); w != fresh || !ok || err != nil || reads != 1 {
		t.Errorf("signed with a rotated secret: %v %v %v, %d reads; want the fresh row, one read", w.TwilioAuthToken, ok, err, reads)
	}
	if _, ok, err := webhook.Verify(context.Background(), reread, cached, signedWith("forged")); ok || err != nil || reads != 2 {
		t.Errorf("forged: %v %v, %d reads; want refused after one more read", ok, err, reads)
	}
	down := c360.Errorf(c360.EUNAVAILABLE, "database down")
	failing := func(context.Context, *c360.Workspace) (*c360.Workspace, error) { return nil, down }
	if w, ok, err := webhook.Verify(context.Background(), failing, cached, signedWith("new")); w != cached || ok || err != down {
		t.Errorf("read failing: %v %v %v; want the cached row, not accepted, the read's error", w, ok, err)
	}
}
