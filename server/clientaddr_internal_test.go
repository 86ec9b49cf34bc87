package server

import (
	"net/http"
	"testing"
)

func TestForwardedClient(t *testing.T) {
	trusted, err := ParseTrustedProxies("10.0.0.0/8, 2001:db8::/32, fe80::/10")
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name, peer string
		xff        []string
		want       string
	}{
		{"no header", "10.0.0.1:4000", nil, "10.0.0.1"},
		{"one hop", "10.0.0.1:4000", []string{"198.51.100.7"}, "198.51.100.7"},
		{"the client's own entries stay left of the proxy's",
			"10.0.0.1:4000", []string{"203.0.113.9, 198.51.100.7"}, "198.51.100.7"},
		{"trusted hops are skipped, right to left",
			"10.0.0.1:4000", []string{"198.51.100.7, 10.1.2.3", "10.4.5.6"}, "198.51.100.7"},
		{"an untrusted peer's header is not read", "192.0.2.1:4000", []string{"198.51.100.7"}, "192.0.2.1"},
		{"every hop trusted: the leftmost", "10.0.0.1:4000", []string{"10.9.9.9, 10.8.8.8"}, "10.9.9.9"},
		{"garbage ends the walk at the last trusted hop",
			"10.0.0.1:4000", []string{"198.51.100.7, unknown, 10.2.2.2"}, "10.2.2.2"},
		{"an entry with a port", "10.0.0.1:4000", []string{"198.51.100.7:5555"}, "198.51.100.7"},
		{"IPv6 hops", "[2001:db8::1]:4000", []string{"2001:db9::5, [2001:db8::2]:80"}, "2001:db9::5"},
		{"a mapped IPv4 peer", "[::ffff:10.0.0.1]:4000", []string{"198.51.100.7"}, "198.51.100.7"},
		{"an empty header", "10.0.0.1:4000", []string{""}, "10.0.0.1"},
		{"a zoned link-local peer", "[fe80::1%eth0]:4000", []string{"198.51.100.7"}, "198.51.100.7"},
	} {
		h := http.Header{}
		for _, v := range c.xff {
			h.Add("X-Forwarded-For", v)
		}
		if got := forwardedClient(c.peer, h, trusted); got != c.want {
			t.Errorf("%s: peer %s, X-Forwarded-For %q = %s, want %s", c.name, c.peer, c.xff, got, c.want)
		}
	}
	// Without trusted proxies the header is never read.
	h := http.Header{"X-Forwarded-For": {"198.51.100.7"}}
	if got := forwardedClient("10.0.0.1:4000", h, nil); got != "10.0.0.1" {
		t.Errorf("no trusted proxies: %s, want the peer", got)
	}
}
