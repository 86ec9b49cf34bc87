package main

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/c360dev/c360"
	"github.com/c360dev/c360/postgres"
	"github.com/c360dev/c360/server"
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

// listenAddr reads the listen address in the variable name (def when
// unset) and checks that it is host:port with a port net.Listen takes: a
// bare port (C360_ADDR=8080) would otherwise be found only after the
// database was opened and migrated.
func (m *Main) listenAddr(name, def string) (string, error) {
	addr := m.env(name, def)
	if addr == "" {
		return "", nil
	}
	_, port, err := net.SplitHostPort(addr)
	if err == nil && port == "" {
		err = errors.New("no port")
	}
	if err == nil {
		_, err = net.LookupPort("tcp", port)
	}
	if err != nil {
		return "", usageError(fmt.Sprintf("%s=%s: want host:port, such as :8080 or 127.0.0.1:9090", name, addr))
	}
	return addr, nil
}

// listeners are serve's sockets, bound by listen.
type listeners struct {
	api, metrics, pprof net.Listener
}

// listen binds C360_ADDR and, when set, C360_METRICS_ADDR and
// C360_PPROF_ADDR. On an error it closes what it bound.
func listen(set serveSettings) (*listeners, error) {
	lns := &listeners{}
	for _, l := range []struct {
		name, addr string
		dst        *net.Listener
	}{
		{"C360_ADDR", set.addr, &lns.api},
		{"C360_METRICS_ADDR", set.metricsAddr, &lns.metrics},
		{"C360_PPROF_ADDR", set.pprofAddr, &lns.pprof},
	} {
		if l.addr == "" {
			continue
		}
		ln, err := net.Listen("tcp", l.addr)
		if err != nil {
			lns.close()
			return nil, fmt.Errorf("listen on %s %s: %w", l.name, l.addr, err)
		}
		*l.dst = ln
	}
	return lns, nil
}

// close closes the listeners; one a server has closed already is closed
// again harmlessly.
func (lns *listeners) close() {
	for _, l := range []net.Listener{lns.api, lns.metrics, lns.pprof} {
		if l != nil {
			l.Close()
		}
	}
}

// serveMetrics serves GET /metrics (h) on l, C360_METRICS_ADDR's listener,
// instead of the public listener, as C360_PPROF_ADDR serves profiles: a
// scraper on a private network or loopback reaches it, the public does
// not. The returned func stops the server.
func serveMetrics(l net.Listener, h http.Handler) func() error {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", h)
	s := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go s.Serve(l)
	return s.Close
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

// front is the public listener's handler, served from the moment serve
// has bound it: while the database is opened and migrations run (or wait
// for another process's migration), GET /healthz answers 200, since the
// process is alive and a liveness probe must not kill it mid-migration,
// and GET /readyz answers 503 with the reason. Any other request waits for
// the full handler, as it waited in the listen backlog before the port was
// served early, and is answered by it once the server is wired (serving):
// an ordinary restart, with nothing to migrate, loses nothing, and a
// provider's webhook or a GraphQL client gets the answer it would have
// got. Only a request still waiting after front.wait (a long migration),
// or when startup fails, is answered 503 with Retry-After, in the JSON
// shape the server's own refusals before GraphQL use (UNAVAILABLE).
type front struct {
	// state is why the server is not ready: "starting", "migrating",
	// "shutting down" (C360_SHUTDOWN_DELAY, the full handler still
	// serving everything else); "" while it serves.
	state atomic.Value
	full  atomic.Value // http.Handler, once set
	// ready is closed by serving, failed by abort.
	ready, failed chan struct{}
	abortOnce     sync.Once
	// wait bounds how long a request waits for the full handler.
	wait time.Duration
}

// defaultStartupWait is front.wait's default: a restart with nothing to
// migrate wires the server in well under a second, and a client's own
// timeout (Twilio's 15 s, an SDK's) ends the wait sooner when shorter.
const defaultStartupWait = 30 * time.Second

func newFront(wait time.Duration) *front {
	if wait <= 0 {
		wait = defaultStartupWait
	}
	f := &front{ready: make(chan struct{}), failed: make(chan struct{}), wait: wait}
	f.state.Store("starting")
	return f
}

// set records why the server is not ready ("" once it is).
func (f *front) set(state string) { f.state.Store(state) }

// serving hands every request to h from now on, those waiting included.
func (f *front) serving(h http.Handler) {
	f.full.Store(h)
	f.set("")
	close(f.ready)
}

// abort answers the requests waiting for the full handler (503): serve
// failed before it served.
func (f *front) abort() { f.abortOnce.Do(func() { close(f.failed) }) }

func (f *front) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	state := f.state.Load().(string)
	get := r.Method == http.MethodGet || r.Method == http.MethodHead
	if state != "" && get && r.URL.Path == "/readyz" {
		w.Header().Set("Content-Type", "text/plain")
		w.Header().Set("Retry-After", "1")
		w.WriteHeader(http.StatusServiceUnavailable)
		fmt.Fprintf(w, "not ready: %s\n", state)
		return
	}
	if h, ok := f.full.Load().(http.Handler); ok {
		h.ServeHTTP(w, r)
		return
	}
	if get && r.URL.Path == "/healthz" {
		w.Header().Set("Content-Type", "text/plain")
		w.Write([]byte("ok\n"))
		return
	}
	t := time.NewTimer(f.wait)
	defer t.Stop()
	select {
	case <-f.ready:
		f.full.Load().(http.Handler).ServeHTTP(w, r)
		return
	case <-r.Context().Done():
		// The client has gone, or only closed its side for writing, which
		// net/http reads as gone too: returning without a word would
		// answer such a client an empty 200. It gets the 503; to one that
		// has gone, the write fails harmlessly.
	case <-t.C:
	case <-f.failed:
	}
	writeStarting(w, f.state.Load().(string))
}

// writeStarting answers a request the server could not take in time while
// starting: 503, Retry-After and the JSON body of the server's refusals
// before GraphQL, which GraphQL clients read as any error and the
// webhooks' providers retry on.
func writeStarting(w http.ResponseWriter, state string) {
	if state == "" {
		state = "stopping"
	}
	server.WriteGraphQLError(w, http.StatusServiceUnavailable,
		c360.Errorf(c360.EUNAVAILABLE, "the server is not serving yet (%s); retry", state))
}

// maxShutdownDelay bounds C360_SHUTDOWN_DELAY: a load balancer's endpoint
// removal propagates in seconds, and the delay comes before the graceful
// shutdown's own deadline, inside the orchestrator's kill grace period.
const maxShutdownDelay = time.Minute

// shutdownDelay reads C360_SHUTDOWN_DELAY: 0 (the default) shuts down at
// once on SIGTERM; up to maxShutdownDelay keeps serving that long with
// /readyz answering 503 first.
func (m *Main) shutdownDelay() (time.Duration, error) {
	v := m.Getenv("C360_SHUTDOWN_DELAY")
	if v == "" {
		return 0, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil || d < 0 || d > maxShutdownDelay {
		return 0, usageError(fmt.Sprintf("C360_SHUTDOWN_DELAY: want a duration from 0s to %s such as 5s, got %q", maxShutdownDelay, truncate(v)))
	}
	return d, nil
}
