package webhook

import (
	"strings"
	"testing"

	"github.com/c360dev/c360"
)

func TestLogReason(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{`invalid phone "+4420794609": not a valid phone number: it is missing its area code`, `invalid phone "+44****4609": not a valid phone number: it is missing its area code`},
		// Too long for pii.Text's phone numbers (8 to 15 digits), still masked.
		{`invalid phone "+1415555010012345": not a valid phone number: too long`, `invalid phone "+1***********2345": not a valid phone number: too long`},
		{`invalid email "jane@example.com": no dot in the domain`, `invalid email "j***@example.com": no dot in the domain`},
		// Short numbers identify no one and stay readable.
		{`body larger than 65536 bytes; at most 1000 turns`, `body larger than 65536 bytes; at most 1000 turns`},
		{`invalid phone "+12345": too short`, `invalid phone "+12345": too short`},
	} {
		if got := LogReason(c360.Errorf(c360.EINVALID, "%s", tc.in)); got != tc.want {
			t.Errorf("LogReason(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
	if got := LogReason(c360.Errorf(c360.EINVALID, "order 2024-03-01T10:00:00Z")); strings.Contains(got, "*") {
		t.Errorf("a date was masked: %q", got)
	}
}
