package c360_test

import (
	"strings"
	"testing"
	"time"

	"github.com/c360dev/c360"
)

func TestMessageStatusAdvances(t *testing.T) {
	for _, tt := range []struct {
		current, next string
		want          bool
	}{
		{"queued", "sending", true},
		{"sending", "sent", true},
		{"sent", "delivered", true},
		{"delivered", "read", true},
		{"queued", "read", true},
		{"delivered", "sent", false},
		{"read", "delivered", false},
		{"sent", "sent", false},
		{"delivered", "failed", true},
		{"sent", "undelivered", true},
		{"failed", "delivered", false},
		{"undelivered", "failed", false},
		{"failed", "read", false},
		{"sent", "bogus", false},
		{"accepted", "queued", true},
	} {
		if got := c360.MessageStatusAdvances(tt.current, tt.next); got != tt.want {
			t.Errorf("MessageStatusAdvances(%s, %s) = %v, want %v", tt.current, tt.next, got, tt.want)
		}
	}
}

func TestCheckSendable(t *testing.T) {
	now := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	at := func(d time.Duration) *time.Time { x := now.Add(-d); return &x }
	for _, tt := range []struct {
		name string
		o    c360.Outreach
		code string
	}{
		{"sms ok", c360.Outreach{Channel: "sms", Phone: "+14155550100"}, ""},
		{"sms opted in", c360.Outreach{Channel: "sms", Phone: "+14155550100", Consent: &c360.Consent{Status: c360.ConsentOptedIn}}, ""},
		{"sms opted out", c360.Outreach{Channel: "sms", Phone: "+14155550100", Consent: &c360.Consent{Status: c360.ConsentOptedOut}}, c360.EFORBIDDEN},
		{"no phone", c360.Outreach{Channel: "sms"}, c360.EINVALID},
		{"whatsapp in window", c360.Outreach{Channel: "whatsapp", Phone: "+14155550100", LastInboundAt: at(23 * time.Hour)}, ""},
		{"whatsapp window closed", c360.Outreach{Channel: "whatsapp", Phone: "+14155550100", LastInboundAt: at(24*time.Hour + time.Second)}, c360.EFORBIDDEN},
		{"whatsapp never", c360.Outreach{Channel: "whatsapp", Phone: "+14155550100"}, c360.EFORBIDDEN},
		{"whatsapp opted out in window", c360.Outreach{Channel: "whatsapp", Phone: "+14155550100", LastInboundAt: at(time.Hour),
			Consent: &c360.Consent{Status: c360.ConsentOptedOut}}, c360.EFORBIDDEN},
	} {
		if got := c360.ErrorCode(tt.o.CheckSendable(now)); got != tt.code {
			t.Errorf("%s: code = %q, want %q", tt.name, got, tt.code)
		}
	}
}

func TestCheckOutboundMessage(t *testing.T) {
	for _, tt := range []struct {
		channel, body string
		ok            bool
	}{
		{"sms", "hi", true},
		{"whatsapp", "hi", true},
		{"chat", "hi", false},
		{"sms", " \n", false},
		{"sms", strings.Repeat("é", 1600), true}, // characters, not bytes
		{"sms", strings.Repeat("x", 1601), false},
		// PostgreSQL could not record these once sent.
		{"sms", "Your code is\u0000 4242", false},
		{"whatsapp", "\x00", false},
		{"sms", "caf\xe9", false},
		{"sms", "\xff\xfe", false},
		{"sms", "caf\u00e9 \U0001F44D", true},
	} {
		if err := c360.CheckOutboundMessage(tt.channel, tt.body); (err == nil) != tt.ok {
			t.Errorf("CheckOutboundMessage(%q, %d bytes) = %v, want ok=%v", tt.channel, len(tt.body), err, tt.ok)
		}
	}
}
