package main

import (
	"context"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/c360dev/c360/hub"
	"github.com/c360dev/c360/postgres"
	"github.com/c360dev/c360/server"
)

// realtime is the real-time path of one serve process: the hub that fans
// changes out to this process's subscribers, the notifier that tells other
// replicas which feeds grew (one batched NOTIFY per few milliseconds), and
// the listener that hears theirs. It owns their goroutines; stop ends them.
type realtime struct {
	hub       *hub.Hub
	cancel    context.CancelFunc // notifier and listener
	cancelHub context.CancelFunc
	wg        sync.WaitGroup
}

// minResyncInterval is the shortest C360_RESYNC_INTERVAL.
const minResyncInterval = 100 * time.Millisecond

// realtimeSettings are the real-time path's settings from the environment.
type realtimeSettings struct {
	ws          server.WebsocketConfig
	notifyEvery time.Duration
	resyncEvery time.Duration
	queue       int
}

// realtimeSettings reads C360_ALLOWED_ORIGINS, C360_WS_*,
// C360_NOTIFY_INTERVAL, C360_RESYNC_INTERVAL and C360_SUBSCRIBER_QUEUE.
func (m *Main) realtimeSettings() (realtimeSettings, error) {
	var rs realtimeSettings
	var err error
	if rs.ws.AllowedOrigins, err = server.ParseOrigins(m.Getenv("C360_ALLOWED_ORIGINS")); err != nil {
		return rs, usageError("C360_ALLOWED_ORIGINS: " + err.Error())
	}
	if rs.ws.InitTimeout, err = m.duration("C360_WS_INIT_TIMEOUT", "10s"); err != nil {
		return rs, err
	}
	if rs.ws.PingInterval, err = m.duration("C360_WS_PING_INTERVAL", "25s"); err != nil {
		return rs, err
	}
	if rs.notifyEvery, err = m.duration("C360_NOTIFY_INTERVAL", "5ms"); err != nil {
		return rs, err
	}
	if rs.resyncEvery, err = m.resyncInterval(); err != nil {
		return rs, err
	}
	queue, err := strconv.Atoi(m.env("C360_SUBSCRIBER_QUEUE", "64"))
	if err != nil || queue < 1 {
		return rs, usageError("C360_SUBSCRIBER_QUEUE: want a positive integer")
	}
	rs.queue = queue
	return rs, nil
}

// resyncInterval reads C360_RESYNC_INTERVAL: a duration of at least
// minResyncInterval, or off (also 0), which turns the periodic resync off
// (a negative interval for the hub).
func (m *Main) resyncInterval() (time.Duration, error) {
	v := m.env("C360_RESYNC_INTERVAL", "5s")
	if v == "off" {
		return -1, nil
	}
	d, err := time.ParseDuration(v)
	switch {
	case err != nil || d < 0:
		return 0, usageError("C360_RESYNC_INTERVAL: want a duration such as 5s, or off")
	case d == 0:
		return -1, nil
	case d < minResyncInterval:
		// Each resync reads every followed feed: more often, a replica
		// with many subscribers would do little else.
		return 0, usageError("C360_RESYNC_INTERVAL: want at least " + minResyncInterval.String() + ", or off")
	}
	return d, nil
}

// startRealtime wires the real-time path to db: after every commit the hub
// is woken directly and the notifier told; the listener wakes the hub for
// other replicas' commits.
func startRealtime(db *postgres.DB, log *slog.Logger, rs realtimeSettings) *realtime {
	queue, notifyEvery := rs.queue, rs.notifyEvery
	origin := postgres.NewOrigin()
	h := hub.New(db, hub.Options{QueueSize: queue, ResyncInterval: rs.resyncEvery, Logger: log})
	notifier := &postgres.Notifier{DB: db, Origin: origin, Interval: notifyEvery, Logger: log}
	listener := &postgres.Listener{DB: db, Origin: origin, Wake: h.Wake, WakeWorkspace: h.WakeWorkspace,
		Resync: h.Resync, Logger: log}
	db.OnCommit = func(ws int64, customers []int64) {
		h.Wake(ws, customers)
		notifier.Add(ws, customers)
	}

	ctx, cancel := context.WithCancel(context.Background())
	hubCtx, cancelHub := context.WithCancel(ctx)
	rt := &realtime{hub: h, cancel: cancel, cancelHub: cancelHub}
	for _, run := range []struct {
		ctx context.Context
		f   func(context.Context) error
	}{{hubCtx, h.Run}, {ctx, notifier.Run}, {ctx, listener.Run}} {
		rt.wg.Add(1)
		go func() {
			defer rt.wg.Done()
			run.f(run.ctx)
		}()
	}
	return rt
}

// registerMetrics exposes the hub's counters on /metrics.
func (rt *realtime) registerMetrics(reg *prometheus.Registry) {
	gauge := func(name, help string, f func(hub.Stats) float64) {
		reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help},
			func() float64 { return f(rt.hub.Stats()) }))
	}
	counter := func(name, help string, f func(hub.Stats) float64) {
		reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help},
			func() float64 { return f(rt.hub.Stats()) }))
	}
	gauge("c360_subscriptions", "Open subscription streams.", func(s hub.Stats) float64 { return float64(s.Streams) })
	gauge("c360_hub_topics", "Customers the hub follows.", func(s hub.Stats) float64 { return float64(s.Topics) })
	counter("c360_hub_delivered_total", "Changes queued to subscribers.", func(s hub.Stats) float64 { return float64(s.Delivered) })
	counter("c360_hub_dropped_total", "Subscribers dropped for falling behind.", func(s hub.Stats) float64 { return float64(s.Dropped) })
	counter("c360_hub_reads_total", "Change feed reads by the hub.", func(s hub.Stats) float64 { return float64(s.Reads) })
}

// stopStreams ends the hub, and with it every subscription stream, so that
// SSE responses finish and http.Server.Shutdown does not wait on them.
func (rt *realtime) stopStreams() { rt.cancelHub() }

// stop ends the hub, flushes the notifier (commits made while the server
// drained are announced) and stops the listener, and waits for them.
func (rt *realtime) stop() {
	rt.cancelHub()
	rt.cancel()
	rt.wg.Wait()
}

func (m *Main) duration(name, def string) (time.Duration, error) {
	d, err := time.ParseDuration(m.env(name, def))
	if err != nil || d <= 0 {
		return 0, usageError(name + ": want a positive duration such as 10s")
	}
	return d, nil
}
