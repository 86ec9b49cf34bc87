package c360

import (
	"strings"
	"time"
	"unicode"
)

// Consent statuses.
const (
	ConsentOptedIn  = "opted_in"
	ConsentOptedOut = "opted_out"
)

// Consent is a customer's permission to be messaged on a channel.
type Consent struct {
	CustomerID int64
	Channel    string
	Status     string
	UpdatedAt  time.Time
	Source     string
}

// Consent keywords, the carriers' usual opt-out, opt-in and help words,
// matched against a message that is one word (ConsentWord). The opt-out
// words are those Twilio's default filtering honours (since May 2025: STOP,
// STOPALL, UNSUBSCRIBE, CANCEL, END, QUIT, REVOKE, OPTOUT): Twilio blocks
// further messages to whoever sent one, so c360 must record the opt-out.
var (
	optOutKeywords = map[string]bool{"STOP": true, "STOPALL": true, "UNSUBSCRIBE": true, "CANCEL": true, "END": true, "QUIT": true,
		"REVOKE": true, "OPTOUT": true}
	optInKeywords = map[string]bool{"START": true, "YES": true, "UNSTOP": true}
	helpKeywords  = map[string]bool{"HELP": true, "INFO": true}
)

// ConsentWord returns text as a keyword candidate: its one word, upper-cased,
// without the spaces and punctuation around it ("  Stop. " is "STOP"), or ""
// when text holds more than one word ("please stop" is an ordinary
// message).
func ConsentWord(text string) string {
	word := strings.ToUpper(strings.TrimFunc(text, func(r rune) bool {
		return unicode.IsSpace(r) || unicode.IsPunct(r)
	}))
	if strings.ContainsFunc(word, unicode.IsSpace) {
		return ""
	}
	return word
}

// ConsentKeyword returns the consent keyword an inbound message's whole text
// is, and the consent it sets on the message's channel: ConsentOptedOut for
// STOP and its kin, ConsentOptedIn for START, YES and UNSTOP, and "" for HELP
// and INFO, which change nothing but are worth recording. It returns "", ""
// for any other text. Every connector that carries a customer's own text
// (Twilio, WhatsApp Cloud API) reads it the same way, so a STOP opts out
// whichever way it arrives.
func ConsentKeyword(text string) (keyword, status string) {
	word := ConsentWord(text)
	switch {
	case optOutKeywords[word]:
		return word, ConsentOptedOut
	case optInKeywords[word]:
		return word, ConsentOptedIn
	case helpKeywords[word]:
		return word, ""
	}
	return "", ""
}
