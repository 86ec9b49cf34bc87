package resolver

import (
	"context"
	"strings"
	"testing"

	"github.com/99designs/gqlgen/graphql"

	"github.com/c360dev/c360/hub"
)

// A stream the client ended (its context done) ends with nothing, even
// though closing the stream reports hub.ErrClosed; the same error on a live
// context is the server shutting down, which the client is told.
func TestEndResponse(t *testing.T) {
	base := graphql.WithResponseContext(context.Background(), graphql.DefaultErrorPresenter, graphql.DefaultRecover)
	done, cancel := context.WithCancel(base)
	cancel()
	for _, err := range []error{hub.ErrClosed, hub.ErrSlow, context.Canceled} {
		if r := endResponse(done, err); r != nil {
			t.Errorf("ended by the client (%v): response %+v, want none", err, r)
		}
	}
	r := endResponse(base, hub.ErrClosed)
	if r == nil || len(r.Errors) != 1 || !strings.Contains(r.Errors[0].Message, "shutting down") {
		t.Fatalf("server shutdown: response %+v, want the shutdown error", r)
	}
}
