package main

import (
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

func TestIngestConfig(t *testing.T) {
	for _, tc := range []struct {
		env            map[string]string
		workers, queue int
		wantUsageErr   bool
	}{
		{env: map[string]string{}, workers: 0, queue: 0},
		{env: map[string]string{"C360_INGEST_WORKERS": "3", "C360_INGEST_QUEUE": "16"}, workers: 3, queue: 16},
		{env: map[string]string{"C360_INGEST_QUEUE": "0"}, wantUsageErr: true},
		{env: map[string]string{"C360_INGEST_WORKERS": "two"}, wantUsageErr: true},
	} {
		m := NewMain(io.Discard, io.Discard, func(k string) string { return tc.env[k] })
		cfg, err := m.ingestConfig()
		if tc.wantUsageErr {
			if _, ok := err.(usageError); !ok {
				t.Errorf("%v: error %v, want a usage error", tc.env, err)
			}
			continue
		}
		if err != nil || cfg.Workers != tc.workers || cfg.Queue != tc.queue {
			t.Errorf("%v: %+v, %v; want workers %d, queue %d", tc.env, cfg, err, tc.workers, tc.queue)
		}
	}
}

// Cleanups run in reverse order; once a deadline is set, a stuck cleanup
// holds run only until then.
func TestStopperDeadline(t *testing.T) {
	var order []int
	s := &stopper{log: slog.New(slog.DiscardHandler)}
	s.add(func() { order = append(order, 1) })
	s.add(func() { order = append(order, 2) })
	s.run()
	if len(order) != 2 || order[0] != 2 || order[1] != 1 {
		t.Errorf("order %v, want [2 1]", order)
	}

	stuck, finished := make(chan struct{}), make(chan struct{})
	s = &stopper{log: slog.New(slog.DiscardHandler), deadline: time.Now().Add(100 * time.Millisecond)}
	s.add(func() { close(finished) })
	s.add(func() { <-stuck })
	start := time.Now()
	s.run()
	if took := time.Since(start); took < 90*time.Millisecond || took > time.Second {
		t.Errorf("run took %s with a stuck cleanup, want the 100 ms deadline", took)
	}
	close(stuck)
	<-finished
}

func TestCleanupReserve(t *testing.T) {
	for timeout, want := range map[time.Duration]time.Duration{
		25 * time.Second: 2 * time.Second, 5 * time.Second: time.Second, 2 * time.Second: 400 * time.Millisecond,
	} {
		if got := cleanupReserve(timeout); got != want {
			t.Errorf("cleanupReserve(%s) = %s, want %s", timeout, got, want)
		}
	}
}

// truncate cuts at a rune's start: deadletter list's table printed invalid
// UTF-8 for a key or an error whose 40th byte fell inside a character.
func TestTruncateCutsAtARuneStart(t *testing.T) {
	for _, s := range []string{
		"x" + strings.Repeat("é", 30),   // byte 40 inside an é
		"xyz" + strings.Repeat("😀", 10), // inside a 4-byte rune
		strings.Repeat("é", 30),         // byte 40 at a rune's start
		strings.Repeat("a", 40),         // short enough: unchanged
	} {
		got := truncate(s)
		if !utf8.ValidString(got) {
			t.Errorf("truncate(%q) = %q: invalid UTF-8", s, got)
		}
		if body := strings.TrimSuffix(got, "…"); !strings.HasPrefix(s, body) || len(body) > 40 || len(body) < 37 {
			t.Errorf("truncate(%q) = %q, want a prefix of at most 40 bytes", s, got)
		}
	}
}
