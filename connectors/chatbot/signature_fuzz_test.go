package chatbot

import (
	"bytes"
	"encoding/hex"
	"strings"
	"testing"
	"time"

	"github.com/c360dev/c360"
)

// FuzzVerifySignature checks the X-C360-Signature parser: any header is
// accepted or refused as UNAUTHENTICATED, never a panic, and only a header
// carrying the true signature is accepted.
func FuzzVerifySignature(f *testing.F) {
	now := time.Unix(1740830400, 0)
	const secret = "whsec_test"
	body := []byte(`{"sessionId":"s"}`)
	f.Add(Sign(secret, now, body), body)
	f.Add("t=1740830400,v1=00", body)
	f.Add("t=1740830400,v1=zz,v1=", []byte{})
	f.Add("t=,v1=", body)
	f.Add("t=1,t=2,v1=ab", body)
	f.Add("v1=ab,t=-9223372036854775808", body)
	f.Add(",,,=,t==,v1==", body)
	f.Fuzz(func(t *testing.T, header string, body []byte) {
		err := VerifySignature(secret, header, body, now, DefaultTolerance)
		if err == nil {
			if !signs(secret, header, body) {
				t.Fatalf("VerifySignature accepted %q for body %q", header, body)
			}
			return
		}
		if code := c360.ErrorCode(err); code != c360.EUNAUTHENTICATED {
			t.Fatalf("VerifySignature(%q) error code = %s, want %s", header, code, c360.EUNAUTHENTICATED)
		}
	})
}

// signs reports whether one of the header's v1 values is the HMAC of its t
// and body: the oracle, written independently of VerifySignature's loop.
func signs(secret, header string, body []byte) bool {
	ts := ""
	var sigs []string
	for _, part := range strings.Split(header, ",") {
		k, v, _ := strings.Cut(strings.TrimSpace(part), "=")
		switch k {
		case "t":
			ts = v
		case "v1":
			sigs = append(sigs, v)
		}
	}
	want := mac(secret, ts, body)
	for _, s := range sigs {
		if b, err := hex.DecodeString(s); err == nil && bytes.Equal(b, want) {
			return true
		}
	}
	return false
}
