package mcp_test

import (
	"strings"
	"testing"

	"github.com/c360dev/c360"
	"github.com/c360dev/c360/mcp"
)

// TestBridgeEndpoint: the bridge sends its key over https, or over plain
// http only to a loopback host, where it never crosses a network.
func TestBridgeEndpoint(t *testing.T) {
	for _, c := range []struct {
		raw, want, refusal string
	}{
		{"https://c360.example.com/mcp", "https://c360.example.com/mcp", ""},
		{"https://c360.example.com", "https://c360.example.com/mcp", ""},
		{"https://c360.example.com:8443/", "https://c360.example.com:8443/mcp", ""},
		{" https://c360.example.com/tenant/mcp ", "https://c360.example.com/tenant/mcp", ""},
		{"http://localhost:8080/mcp", "http://localhost:8080/mcp", ""},
		{"http://LOCALHOST:8080/mcp", "http://LOCALHOST:8080/mcp", ""},
		{"http://127.0.0.1:8080/mcp", "http://127.0.0.1:8080/mcp", ""},
		{"http://127.0.0.2:8080/mcp", "http://127.0.0.2:8080/mcp", ""},
		{"http://[::1]:8080/mcp", "http://[::1]:8080/mcp", ""},
		{"http://c360.example.com/mcp", "", "refusing http://c360.example.com: the API key would travel in clear"},
		{"http://10.0.0.7/mcp", "", "refusing http://10.0.0.7"},
		{"http://localhost.example.com/mcp", "", "refusing http://localhost.example.com"},
		{"http://127.0.0.1.nip.io/mcp", "", "refusing http://127.0.0.1.nip.io"},
		{"http://[::ffff:10.0.0.7]/mcp", "", "refusing"},
		{"ws://localhost/mcp", "", `unsupported URL scheme "ws"`},
		{"https://user:secret@c360.example.com/mcp", "", "must not carry credentials"},
		{"c360.example.com/mcp", "", "not an absolute URL"},
		{"https://", "", "not an absolute URL"},
		{"", "", "not an absolute URL"},
	} {
		got, err := mcp.BridgeEndpoint(c.raw)
		if c.refusal == "" {
			if err != nil || got != c.want {
				t.Errorf("BridgeEndpoint(%q) = %q, %v; want %q", c.raw, got, err, c.want)
			}
			continue
		}
		if err == nil || c360.ErrorCode(err) != c360.EINVALID || !strings.Contains(c360.ErrorMessage(err), c.refusal) {
			t.Errorf("BridgeEndpoint(%q) = %q, %v; want BAD_USER_INPUT %q", c.raw, got, err, c.refusal)
		}
		if strings.Contains(c360.ErrorMessage(err), "secret") {
			t.Errorf("BridgeEndpoint(%q): the refusal shows the URL's password: %v", c.raw, err)
		}
	}
}
