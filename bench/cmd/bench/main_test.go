package main

import (
	"context"
	"reflect"
	"strings"
	"testing"

	"github.com/c360dev/c360/bench/seed"
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
		{[]string{"query", "--query-rate", "-1"}, "--query-rate"},
		{[]string{"query", "--query-rate", "fast"}, "--query-rate"},
		{[]string{"query", "--query-senders", "0"}, "--query-senders"},
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

// oldShape is the seed shape main built before it took seed.Skewed: the
// options every existing seed was made with, and that --reuse matches.
func oldShape(n int) seed.Options {
	return seed.Options{Customers: n, Rich: max(n*10/100, 1), EventsPerCustomer: 25, MessagesPerConv: 12, Events: n * 10, Messages: n * 2}
}

// TestSeedShape: at the seed flags' defaults the shape is seed.Skewed,
// whose floors let a few customers seed (bench seed --customers 5 needs
// 12 messages for its one rich customer; 5·2 were too few), and the 1M
// seed gets exactly the options it got before, field by field, so --reuse
// finds the seeds made by the earlier code (TestReuseFindsAnOlder1MSeed).
func TestSeedShape(t *testing.T) {
	defaults := func(n int) seed.Options { return seedShape(n, 10, 25, 12, 10, 2) }
	want1M := seed.Options{Customers: 1_000_000, Rich: 100_000, EventsPerCustomer: 25, MessagesPerConv: 12,
		Events: 10_000_000, Messages: 2_000_000}
	if got := defaults(1_000_000); !reflect.DeepEqual(got, want1M) || !reflect.DeepEqual(oldShape(1_000_000), want1M) {
		t.Errorf("1M customers: %+v, before %+v; want %+v", got, oldShape(1_000_000), want1M)
	}
	// Every size the old shape could seed is unchanged.
	for _, n := range []int{100, 1000, 2000, 12345, 100_000, 1_000_000, 10_000_000} {
		if got, old := defaults(n), oldShape(n); !reflect.DeepEqual(got, old) {
			t.Errorf("%d customers: %+v, before %+v", n, got, old)
		}
	}
	for _, n := range []int{1, 5, 9, 10, 11} {
		if err := defaults(n).Check(); err != nil {
			t.Errorf("%d customers at the defaults: %v", n, err)
		}
	}
	// Flags set by hand are taken as given: Check refuses what cannot be.
	if err := seedShape(5, 10, 25, 12, 10, 1).Check(); err == nil {
		t.Error("5 customers, 1 message each, a rich one of 12: Check passed")
	}
}
