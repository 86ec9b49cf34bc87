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
