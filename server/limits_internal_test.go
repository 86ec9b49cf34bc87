package server

import (
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

func TestLimitsFromEnv(t *testing.T) {
	env := func(kv map[string]string) func(string) string { return func(k string) string { return kv[k] } }
	l, err := LimitsFromEnv(env(nil))
	if err != nil || !reflect.DeepEqual(l, DefaultLimits) {
		t.Errorf("no variables: %+v, %v; want the defaults %+v", l, err, DefaultLimits)
	}
	l, err = LimitsFromEnv(env(map[string]string{
		"C360_GRAPHQL_MAX_DEPTH": "8", "C360_GRAPHQL_MAX_FIELDS": "200", "C360_RATE_KEY_RPS": "2.5",
		"C360_RATE_KEY_BURST": "5", "C360_RATE_WEBHOOK_RPS": "-1",
		"C360_RATE_WEBHOOK_UNVERIFIED_RPS": "0.5", "C360_RATE_WEBHOOK_UNVERIFIED_BURST": "3",
		"C360_TRUSTED_PROXIES": " 10.0.0.0/8, 192.0.2.7,2001:db8::/32 ,",
		"C360_RATE_LOOKUP_RPS": "0.2", "C360_RATE_LOOKUP_BURST": "10",
	}))
	if err != nil {
		t.Fatal(err)
	}
	if l.MaxDepth != 8 || l.MaxFields != 200 || l.KeyRate != (Rate{2.5, 5}) || l.WebhookRate.RPS != -1 || l.MaxAliases != DefaultLimits.MaxAliases ||
		l.WebhookUnverifiedRate != (Rate{0.5, 3}) || l.LookupRate != (Rate{0.2, 10}) ||
		fmt.Sprint(l.TrustedProxies) != "[10.0.0.0/8 192.0.2.7/32 2001:db8::/32]" {
		t.Errorf("limits = %+v", l)
	}
	for _, kv := range []map[string]string{
		{"C360_GRAPHQL_MAX_DEPTH": "0"}, {"C360_GRAPHQL_MAX_TOKENS": "many"}, {"C360_RATE_KEY_RPS": "0"},
		{"C360_RATE_WEBHOOK_RPS": "NaN"}, {"C360_RATE_KEY_BURST": "-3"},
		{"C360_RATE_WEBHOOK_UNVERIFIED_RPS": "0"}, {"C360_RATE_WEBHOOK_UNVERIFIED_BURST": "0"},
		{"C360_TRUSTED_PROXIES": "10.0.0.0/8,proxy.internal"}, {"C360_TRUSTED_PROXIES": "10.0.0.0/33"},
		{"C360_RATE_LOOKUP_RPS": "0"}, {"C360_RATE_LOOKUP_BURST": "many"},
	} {
		if _, err := LimitsFromEnv(env(kv)); err == nil {
			t.Errorf("%v: no error, want one naming the variable", kv)
		}
	}
	// A rate of -1 turns the limit off.
	off := newLimiter[string](Rate{RPS: -1, Burst: 1}, nil)
	for i := 0; i < 100; i++ {
		if ok, _ := off.allow("k"); !ok {
			t.Fatal("a limiter with rate -1 refused a request")
		}
	}
}

func TestLimiter(t *testing.T) {
	now := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	refused := prometheus.NewCounter(prometheus.CounterOpts{Name: "refused"})
	l := newLimiter[string](Rate{RPS: 10, Burst: 3}, refused)
	l.now = func() time.Time { return now }
	for i := 0; i < 3; i++ {
		if ok, _ := l.allow("a"); !ok {
			t.Fatalf("request %d within the burst refused", i)
		}
	}
	ok, retry := l.allow("a")
	if ok || retry <= 0 || retry > 100*time.Millisecond {
		t.Errorf("4th request: ok %v, retry %v; want refused, a token within 100ms", ok, retry)
	}
	var m dto.Metric
	if err := refused.Write(&m); err != nil || m.GetCounter().GetValue() != 1 {
		n := m.GetCounter().GetValue()
		t.Errorf("refusals counted = %v (%v), want 1", n, err)
	}
	if ok, _ := l.allow("b"); !ok {
		t.Error("another key shares the first key's bucket")
	}
	now = now.Add(100 * time.Millisecond)
	if ok, _ := l.allow("a"); !ok {
		t.Error("refused after the bucket refilled a token")
	}

	// Idle buckets go: after the refill time, a new key's arrival sweeps.
	for i := 0; i < 1000; i++ {
		l.allow(fmt.Sprint("k", i))
	}
	if n := l.len(); n != 1002 {
		t.Fatalf("buckets = %d, want 1002", n)
	}
	now = now.Add(l.refill() + time.Second)
	l.allow("fresh")
	if n := l.len(); n != 1 {
		t.Errorf("buckets after every other key idled past the refill time = %d, want 1", n)
	}
}

func TestLimiterBound(t *testing.T) {
	now := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	l := newLimiter[int](Rate{RPS: 1, Burst: 1}, nil)
	l.now = func() time.Time { return now }
	for i := 0; i < maxBuckets+10; i++ {
		l.allow(i) // all busy: no time passes
	}
	if n := l.len(); n > maxBuckets {
		t.Errorf("buckets = %d, want at most %d", n, maxBuckets)
	}
}

// check looks at a bucket without taking a token or adding a bucket: the
// refusals of a flood it stops cost no memory.
func TestLimiterCheck(t *testing.T) {
	now := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	refused := prometheus.NewCounter(prometheus.CounterOpts{Name: "refused"})
	l := newLimiter[string](Rate{RPS: 10, Burst: 2}, refused)
	l.now = func() time.Time { return now }
	for i := 0; i < 5; i++ {
		if ok, _ := l.check("a"); !ok {
			t.Fatalf("check %d of a key without a bucket refused", i)
		}
	}
	if n := l.len(); n != 0 {
		t.Errorf("buckets after checks alone = %d, want 0", n)
	}
	l.take("a")
	l.take("a")
	ok, retry := l.check("a")
	if ok || retry <= 0 || retry > 100*time.Millisecond {
		t.Errorf("check of an empty bucket: ok %v, retry %v; want refused, a token within 100ms", ok, retry)
	}
	var m dto.Metric
	if err := refused.Write(&m); err != nil || m.GetCounter().GetValue() != 1 {
		t.Errorf("refusals counted = %v (%v), want 1", m.GetCounter().GetValue(), err)
	}
	if ok, _ := l.check("a"); ok {
		t.Error("check took nothing, yet a second check found a token")
	}
	now = now.Add(100 * time.Millisecond)
	if ok, _ := l.check("a"); !ok {
		t.Error("check refused after the bucket refilled a token")
	}
	if n := l.len(); n != 1 {
		t.Errorf("buckets = %d, want 1", n)
	}
	off := newLimiter[string](Rate{RPS: -1, Burst: 1}, nil)
	off.take("a")
	if ok, _ := off.check("a"); !ok {
		t.Error("a limiter with rate -1 refused a check")
	}
}

func TestClientAddress(t *testing.T) {
	for _, tc := range []struct{ remote, want string }{
		{"203.0.113.7:51234", "203.0.113.7"},
		{"[::ffff:203.0.113.7]:443", "203.0.113.7"},
		// An IPv6 host commonly holds a whole /64: one bucket for all of it.
		{"[2001:db8:1:2:3:4:5:6]:51234", "2001:db8:1:2::/64"},
		{"[2001:db8:1:2:ffff::1]:1", "2001:db8:1:2::/64"},
		{"[fe80::1%eth0]:80", "fe80::/64"},
		{"203.0.113.7", "203.0.113.7"},
		{"@", "@"}, // a unix socket: one bucket
	} {
		if got := clientAddress(tc.remote); got != tc.want {
			t.Errorf("clientAddress(%q) = %q, want %q", tc.remote, got, tc.want)
		}
	}
}

// BenchmarkDecodeParamsManyKeys decodes a megabyte body of 95,000 keys
// that are not a request's. Comparing each with those before it took 14 s
// a body; the decode is linear in the body.
func BenchmarkDecodeParamsManyKeys(b *testing.B) {
	var body strings.Builder
	body.WriteString(`{"query":"{ __typename }"`)
	for i := 0; body.Len() < 1<<20; i++ {
		fmt.Fprintf(&body, `,"k%06d":0`, i)
	}
	body.WriteString(`}`)
	raw := []byte(body.String())
	b.SetBytes(int64(len(raw)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := decodeParams(raw); err != nil {
			b.Fatal(err)
		}
	}
}
