package main

import (
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/c360dev/c360/postgres"
)

// ingestConfig reads group commit's sizes: C360_INGEST_WORKERS (groups
// applied at once, default 2) and C360_INGEST_QUEUE (requests waiting for a
// group, default 2048). Past the queue, ingest answers UNAVAILABLE at once
// (503 with Retry-After), so overload costs providers a retry, not memory.
func (m *Main) ingestConfig() (postgres.IngestConfig, error) {
	var cfg postgres.IngestConfig
	for _, v := range []struct {
		name string
		dst  *int
	}{{"C360_INGEST_WORKERS", &cfg.Workers}, {"C360_INGEST_QUEUE", &cfg.Queue}} {
		s := m.Getenv(v.name)
		if s == "" {
			continue // StartIngest's default
		}
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			return cfg, usageError(v.name + ": want a positive integer")
		}
		*v.dst = n
	}
	return cfg, nil
}

// serveMetrics serves GET /metrics (h) on addr, C360_METRICS_ADDR, instead
// of the public listener, as C360_PPROF_ADDR serves profiles: a scraper on
// a private network or loopback reaches it, the public does not. The
// returned func closes the listener.
func serveMetrics(addr string, h http.Handler) (func() error, error) {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen on C360_METRICS_ADDR %s: %w", addr, err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", h)
	s := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go s.Serve(l)
	return s.Close, nil
}

// stopper runs serve's cleanups (flush cross-replica notifications, drain
// the audit writer, stop group commit, close the pools) in reverse order of
// registration. Once a shutdown deadline is set, it waits for them only
// until then: a request stuck on the database cannot keep the process past
// C360_SHUTDOWN_TIMEOUT. Its transaction, never committed, is rolled back
// when the process's connections close, and its client, never answered,
// retries.
type stopper struct {
	fns      []func()
	deadline time.Time
	log      *slog.Logger
}

func (s *stopper) add(f func()) { s.fns = append(s.fns, f) }

func (s *stopper) run() {
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := len(s.fns) - 1; i >= 0; i-- {
			s.fns[i]()
		}
	}()
	if s.deadline.IsZero() {
		<-done
		return
	}
	t := time.NewTimer(time.Until(s.deadline))
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
		s.log.Error("shutdown deadline passed before the cleanups ended; exiting with work in flight (nothing unacknowledged is lost: it was never committed, or a retry finds it stored)")
	}
}

// cleanupReserve is the part of the shutdown deadline kept for the cleanups
// after in-flight requests: a fifth, at most 2 s (the notifier's flush
// takes milliseconds; closing the pools, less).
func cleanupReserve(timeout time.Duration) time.Duration {
	return min(timeout/5, 2*time.Second)
}
