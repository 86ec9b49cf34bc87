package main

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/c360dev/c360/internal/logbuf"
	"github.com/c360dev/c360/internal/pgtest"
)

// TestServeMetricsAddr: with C360_METRICS_ADDR set, /metrics is served on
// that listener only; the public one answers 404 for it. Without it,
// /metrics stays on the public listener (TestServeGracefulShutdown's
// neighbours read it there).
func TestServeMetricsAddr(t *testing.T) {
	addr, metricsAddr := freeAddr(t), freeAddr(t)
	env := map[string]string{"DATABASE_URL": pgtest.URL(t), "C360_ADDR": addr, "C360_METRICS_ADDR": metricsAddr}
	var stdout, stderr logbuf.Buffer
	m := NewMain(&stdout, &stderr, func(k string) string { return env[k] })
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx, []string{"serve", "--no-migrate"}) }()
	waitHealthy(t, "http://"+addr, done, &stderr)

	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: 5 * time.Second}
	get := func(url string) (int, string) {
		t.Helper()
		resp, err := client.Get(url)
		if err != nil {
			t.Fatalf("GET %s: %v", url, err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, _ := get("http://" + addr + "/metrics"); code != http.StatusNotFound {
		t.Errorf("GET /metrics on the public listener = %d, want 404", code)
	}
	if code, body := get("http://" + metricsAddr + "/metrics"); code != http.StatusOK || !strings.Contains(body, "c360_") {
		t.Errorf("GET /metrics on C360_METRICS_ADDR = %d, want 200 with c360_ metrics:\n%.300s", code, body)
	} else {
		// The audit writer's losses and backlog, which an operator alerts on.
		for _, want := range []string{"\nc360_audit_dropped_total 0\n", "\nc360_audit_pending 0\n"} {
			if !strings.Contains(body, want) {
				t.Errorf("GET /metrics lacks %q", strings.TrimSpace(want))
			}
		}
	}
	// The metrics listener serves nothing else.
	if code, _ := get("http://" + metricsAddr + "/graphql"); code != http.StatusNotFound {
		t.Errorf("GET /graphql on C360_METRICS_ADDR = %d, want 404", code)
	}
	tr.CloseIdleConnections()
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("serve returned %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("serve did not stop")
	}
	if _, err := http.Get("http://" + metricsAddr + "/metrics"); err == nil {
		t.Error("the metrics listener still answers after serve returned")
	}
}
