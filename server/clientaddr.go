package server

import (
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strings"
)

// The address limit (limitUnverified, authenticateKey) keys its buckets by
// the client's address. Behind a proxy or load balancer every connection
// comes from the proxy, so every client would share one bucket: a forger's
// refusals would spend the tokens of the providers' webhooks and the
// consoles' requests passing through the same proxy. A proxy says whom it
// forwards for in X-Forwarded-For, which anyone can also write, so the
// header is read only from a connection whose peer is a proxy the operator
// named (C360_TRUSTED_PROXIES), and only as far back as the hops it
// appended: right to left, the first address that is not a trusted proxy
// is the client's. What a client wrote itself stands further left and is
// never reached, unless every hop is trusted.

// ParseTrustedProxies reads C360_TRUSTED_PROXIES: addresses or CIDR
// prefixes, separated by commas (e.g. "10.0.0.0/8, 192.0.2.7").
func ParseTrustedProxies(s string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		if p, err := netip.ParsePrefix(f); err == nil {
			out = append(out, p.Masked())
			continue
		}
		a, err := netip.ParseAddr(f)
		if err != nil || a.Zone() != "" {
			return nil, fmt.Errorf("%q is neither an IP address nor a CIDR prefix (e.g. 10.0.0.0/8)", f)
		}
		a = a.Unmap()
		out = append(out, netip.PrefixFrom(a, a.BitLen()))
	}
	return out, nil
}

// clientOf returns the bucket key of r's client (clientAddress): the
// connection's peer, or, when the peer is a trusted proxy, the address its
// X-Forwarded-For names for the client.
func (s *Server) clientOf(r *http.Request) string {
	return clientAddress(forwardedClient(r.RemoteAddr, r.Header, s.cfg.Limits.TrustedProxies))
}

// forwardedClient returns the client's address (host only) of a request
// that reached us from peer: peer itself unless it is in trusted, else the
// rightmost address of X-Forwarded-For (every such header, in order) that
// is not, or the leftmost when all are. An entry that is not an address
// (a proxy that writes "unknown", or a malformed header) ends the walk at
// the last trusted hop before it: past it, nothing can be believed.
func forwardedClient(peer string, h http.Header, trusted []netip.Prefix) string {
	host, _, err := net.SplitHostPort(peer)
	if err != nil {
		host = peer
	}
	if len(trusted) == 0 {
		return host
	}
	hop, err := netip.ParseAddr(host)
	if err != nil || !isTrusted(hop, trusted) {
		return host
	}
	values := h.Values("X-Forwarded-For")
	for i := len(values) - 1; i >= 0; i-- {
		entries := strings.Split(values[i], ",")
		for j := len(entries) - 1; j >= 0; j-- {
			e := strings.TrimSpace(entries[j])
			if e == "" && len(entries) == 1 {
				continue // an empty header line: no hop
			}
			a, err := parseForwarded(e)
			if err != nil {
				return hop.String()
			}
			hop = a
			if !isTrusted(a, trusted) {
				return a.String()
			}
		}
	}
	return hop.String()
}

// parseForwarded reads one X-Forwarded-For entry: an address, which some
// proxies write with a port ("192.0.2.1:4711", "[2001:db8::1]:4711").
func parseForwarded(e string) (netip.Addr, error) {
	if a, err := netip.ParseAddr(e); err == nil {
		return a.Unmap().WithZone(""), nil
	}
	ap, err := netip.ParseAddrPort(e)
	if err != nil {
		return netip.Addr{}, err
	}
	return ap.Addr().Unmap().WithZone(""), nil
}

func isTrusted(a netip.Addr, trusted []netip.Prefix) bool {
	// A prefix never contains an address with a zone (a link-local peer,
	// fe80::1%eth0): the zone names the interface, not the host.
	a = a.Unmap().WithZone("")
	for _, p := range trusted {
		if p.Contains(a) {
			return true
		}
	}
	return false
}
