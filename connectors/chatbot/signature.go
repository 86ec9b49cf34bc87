package chatbot

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"strconv"
	"strings"
	"time"

	"github.com/c360dev/c360"
)

// SignatureHeader carries the request's signature.
const SignatureHeader = "X-C360-Signature"

// DefaultTolerance is how far a signature's timestamp may be from the
// server's clock, in either direction.
const DefaultTolerance = 5 * time.Minute

// maxSignatures bounds the v1 values of one header: two or three during a
// secret rotation are plenty, and each one costs a comparison.
const maxSignatures = 8

// Sign returns the X-C360-Signature value for body sent at t:
// "t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>".
func Sign(secret string, t time.Time, body []byte) string {
	ts := strconv.FormatInt(t.Unix(), 10)
	return "t=" + ts + ",v1=" + hex.EncodeToString(mac(secret, ts, body))
}

func mac(secret, ts string, body []byte) []byte {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write([]byte(ts))
	m.Write([]byte{'.'})
	m.Write(body)
	return m.Sum(nil)
}

// VerifySignature checks header, an X-C360-Signature value, against body:
// its timestamp must be within tolerance of now, either way, and one of its
// v1 values must be the HMAC of "<t>.<body>" under secret (several are
// allowed, so a sender can sign with an old and a new secret while rotating).
// Comparison is in constant time. Any failure is EUNAUTHENTICATED with a
// reason that says what was wrong, never what was expected.
func VerifySignature(secret, header string, body []byte, now time.Time, tolerance time.Duration) error {
	return verify(secret, "", header, body, now, tolerance)
}

// VerifyWorkspaceSignature is VerifySignature against the workspace's
// webhook secrets: its current one, or the one its last rotation replaced
// while now is before that one's expiry (the rotation's grace period). The
// expiry is a timestamp on the workspace row, so a row cached for a few
// seconds still refuses the previous secret from the instant it expires.
// A signature made with an expired previous secret is refused as any wrong
// one is ("the signature does not match the body").
func VerifyWorkspaceSignature(ws *c360.Workspace, header string, body []byte, now time.Time, tolerance time.Duration) error {
	previous := ""
	if exp := ws.PreviousWebhookSecretExpiresAt; exp != nil && now.Before(*exp) {
		previous = ws.PreviousWebhookSecret
	}
	return verify(ws.WebhookSecret, previous, header, body, now, tolerance)
}

// verify checks header against secret and, unless it is "", previous.
// Every v1 value is compared with the MAC under each secret, in constant
// time, with no early exit.
func verify(secret, previous, header string, body []byte, now time.Time, tolerance time.Duration) error {
	if secret == "" {
		return c360.Errorf(c360.EUNAUTHENTICATED, "the workspace has no webhook secret")
	}
	if header == "" {
		return c360.Errorf(c360.EUNAUTHENTICATED, "missing %s header", SignatureHeader)
	}
	var (
		ts   string
		sigs [][]byte
	)
	for part := range strings.SplitSeq(header, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(part), "=")
		if !ok {
			continue
		}
		switch k {
		case "t":
			if ts != "" {
				return malformed()
			}
			ts = v
		case "v1":
			if len(sigs) == maxSignatures {
				return c360.Errorf(c360.EUNAUTHENTICATED, "%s has more than %d v1 signatures", SignatureHeader, maxSignatures)
			}
			// A value that is not hex cannot match; it is kept as is.
			if b, err := hex.DecodeString(v); err == nil {
				sigs = append(sigs, b)
			} else {
				sigs = append(sigs, []byte(v))
			}
		}
	}
	if ts == "" || len(sigs) == 0 {
		return malformed()
	}
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return malformed()
	}
	if d := now.Sub(time.Unix(sec, 0)); d > tolerance || d < -tolerance {
		return c360.Errorf(c360.EUNAUTHENTICATED, "the signature's timestamp is more than %s away from the server's clock", tolerance)
	}
	wants := [][]byte{mac(secret, ts, body)}
	if previous != "" {
		wants = append(wants, mac(previous, ts, body))
	}
	ok := false
	for _, want := range wants {
		for _, s := range sigs {
			if hmac.Equal(s, want) {
				ok = true
			}
		}
	}
	if !ok {
		return errNoMatch
	}
	return nil
}

// errNoMatch refuses a well-formed, timely signature that no secret of the
// workspace made: the one refusal a newer row of the workspace (a secret
// rotated by another process) could turn into an acceptance.
var errNoMatch = c360.Errorf(c360.EUNAUTHENTICATED, "the signature does not match the body")

func malformed() error {
	return c360.Errorf(c360.EUNAUTHENTICATED, "malformed %s header: want t=<unix seconds>,v1=<hex HMAC-SHA256>", SignatureHeader)
}
