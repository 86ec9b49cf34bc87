package main

import (
	"context"
	"strings"
	"testing"
)

// TestRunRefusesACommandAfterFlags: the flag package stops at the first
// word that is not a flag, so "--reuse query" would have run everything.
func TestRunRefusesACommandAfterFlags(t *testing.T) {
	err := run(context.Background(), []string{"--reuse", "query"})
	if err == nil || !strings.Contains(err.Error(), `unexpected "query"`) {
		t.Errorf("run(--reuse query) = %v, want the command refused", err)
	}
}

// TestRunRefusesBadFlags: a value a benchmark divides by, takes a
// remainder or a random number below is a usage error before anything
// runs. --fanout-rate 0 divided time.Second by 0, --phones 0 took i%0 and
// --users 0 rng.IntN(0): panics in the middle of a run, past the seed and
// with the server started.
func TestRunRefusesBadFlags(t *testing.T) {
	// Refused before the database is asked for: none is set.
	t.Setenv("DATABASE_URL", "")
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"fanout", "--fanout-rate", "0"}, "--fanout-rate"},
		{[]string{"fanout", "--fanout-rate", "-5"}, "--fanout-rate"},
		{[]string{"fanout", "--fanout-rate", "2000000000"}, "--fanout-rate"},
		{[]string{"fanout", "--fanout-writes", "0"}, "--fanout-writes"},
		{[]string{"fanout", "--fanout-shared", "-1"}, "--fanout-shared"},
		{[]string{"fanout", "--fanout-idle", "-1s"}, "--fanout-idle"},
		{[]string{"fanout", "--subscribers", "1000,0"}, "--subscribers"},
		{[]string{"webhooks", "--phones", "0"}, "--phones"},
		{[]string{"webhooks", "--webhook-senders", "0"}, "--webhook-senders"},
		{[]string{"webhooks", "--webhook-rate", "-1"}, "--webhook-rate"},
		{[]string{"webhooks", "--webhook-rate", "NaN"}, "--webhook-rate"},
		{[]string{"webhooks", "--webhook-workers", "8,x"}, "--webhook-workers"},
		{[]string{"batch", "--users", "0"}, "--users"},
		{[]string{"batch", "--batch-workers", "0"}, "--batch-workers"},
		{[]string{"webhooks", "--tenants", "-1"}, "--tenants"},
		{[]string{"query", "--duration", "0s"}, "--duration"},
		{[]string{"query", "--duration", "-1s"}, "--duration"},
		{[]string{"query", "--workers", "1,0"}, "--workers"},
	} {
		err := run(context.Background(), tc.args)
		if err == nil || !strings.HasPrefix(err.Error(), tc.want+":") {
			t.Errorf("run(%q) = %v, want a usage error for %s", tc.args, err, tc.want)
		}
	}
	// The defaults pass the checks, and stop at the missing database.
	if err := run(context.Background(), []string{"fanout"}); err == nil || !strings.Contains(err.Error(), "DATABASE_URL") {
		t.Errorf("run(fanout) = %v, want DATABASE_URL is not set", err)
	}
}
