package identity

import (
	"errors"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/nyaruka/phonenumbers"
	"golang.org/x/net/idna"
	"golang.org/x/text/unicode/norm"
	"golang.org/x/text/width"
)

// KnownRegion reports whether region is a region code phone numbers are
// known by (phonenumbers' metadata): a DefaultRegion that is not one makes
// every national number fail to parse.
func KnownRegion(region string) bool {
	return phonenumbers.GetSupportedRegions()[region]
}

// Normalizer validates identities and brings their values to a canonical
// form, so that the same person sent as "Bob@Example.com" and
// " bob@example.com" resolves to one customer. The zero value is usable but
// only accepts phone numbers written with a country code.
type Normalizer struct {
	// DefaultRegion is the ISO 3166-1 alpha-2 region ("US", "GB") assumed
	// for phone numbers written without a country code. Case does not
	// matter. When empty, such numbers are refused, because guessing the
	// country would file them under the wrong person.
	DefaultRegion string
}

// builtinBlocked lists placeholder values that integrations send when they
// have no real identifier. They are compared case-insensitively.
var builtinBlocked = [...]string{"null", "nil", "undefined", "anonymous", "none", "n/a", "0", "-1"}

// minPhoneDigits is the fewest digits (country code included) a phone
// number may have; anything shorter is an extension, a short code or junk,
// none of which identify one person.
const minPhoneDigits = 7

// maxPhoneDigits is the E.164 maximum, country code included.
const maxPhoneDigits = 15

// Normalize validates id and returns it in canonical form.
//
// The type must satisfy ValidType; it is not lowercased, because silently
// accepting "Email" would let a typo create a parallel custom type.
// Values are trimmed of surrounding Unicode whitespace and must be valid
// UTF-8, at most MaxValueLen bytes and free of control characters. Emails
// are lowercased (a leading "mailto:" is removed), brought to one Unicode
// form (fullwidth forms folded, the local part in NFC, the domain's labels
// IDNA accepts through IDNA to their Unicode form, see canonicalEmail and
// canonicalDomain) and checked for a
// plausible shape; phone numbers are converted to E.164 (a "whatsapp:"
// address from WhatsApp's form of the number, see WhatsAppNumber); every
// other type is only trimmed, keeping its case.
//
// Placeholder values ("", "null", "undefined", "0", "000", "---", ...; for
// phones also numbers whose national part is all zeros) return
// (Identity{}, ErrBlocked), which callers treat as "ignore this
// identifier". Any other refusal is an *InvalidError.
func (n Normalizer) Normalize(id Identity) (Identity, error) {
	if !ValidType(id.Type) {
		return Identity{}, &InvalidError{Field: "type", Type: id.Type, Value: id.Value,
			Reason: "must start with a lowercase letter, contain only a-z, 0-9, '_', '.', ':' or '-', and be at most 64 bytes"}
	}
	v := strings.TrimSpace(id.Value)
	// Blocked values are checked before any value check so that "0" is
	// ignored rather than reported as a malformed phone number.
	if isBuiltinBlocked(v) {
		return Identity{}, ErrBlocked
	}
	if reason := checkValue(v); reason != "" {
		return Identity{}, invalidValue(id, reason)
	}
	switch id.Type {
	case TypeEmail:
		return normalizeEmail(id)
	case TypePhone:
		k := phoneKey{region: n.DefaultRegion, raw: v}
		if r, ok := phones.get(k); ok {
			return r.id, r.err
		}
		out, err := n.normalizePhone(id)
		phones.put(k, phoneResult{out, err})
		return out, err
	default:
		return Identity{Type: id.Type, Value: v}, nil
	}
}

func invalidValue(id Identity, reason string) *InvalidError {
	return &InvalidError{Field: "value", Type: id.Type, Value: id.Value, Reason: reason}
}

// isBuiltinBlocked reports whether v (already trimmed) is a placeholder.
func isBuiltinBlocked(v string) bool {
	if v == "" {
		return true
	}
	// "000", "---", "0-0": zero-filled ids and masked numbers.
	if strings.Trim(v, "0-") == "" {
		return true
	}
	if len(v) > len("undefined")*4 { // no folding can make a longer value match
		return false
	}
	for _, b := range builtinBlocked {
		if strings.EqualFold(v, b) {
			return true
		}
	}
	return false
}

// checkValue applies the checks shared by all types and returns a reason
// when v is unacceptable. Invalid UTF-8 and NUL bytes are refused because
// PostgreSQL text columns reject them; other control characters because
// they make two visually identical values distinct.
func checkValue(v string) string {
	if len(v) > MaxValueLen {
		return "longer than 256 bytes"
	}
	if !utf8.ValidString(v) {
		return "not valid UTF-8"
	}
	for _, r := range v {
		if unicode.IsControl(r) {
			return "contains control characters"
		}
	}
	return ""
}

// normalizeEmail brings an email address to its canonical form
// (canonicalEmail) and validates it. It deliberately does not use
// net/mail: that parser accepts display names ("Bob <b@x.com>") and
// comments, which are never what an API client meant to send as an
// identifier.
func normalizeEmail(id Identity) (Identity, error) {
	v := strings.TrimSpace(id.Value)
	ascii := isASCII(v)
	if !ascii {
		// Fullwidth forms (a Japanese or Chinese keyboard's "ｒｏｓａ＠…")
		// are the ASCII characters they look like: folded before the
		// "mailto:" prefix and the '@' are looked for.
		v = strings.TrimSpace(width.Fold.String(v))
	}
	v = strings.ToLower(v)
	v = strings.TrimSpace(strings.TrimPrefix(v, "mailto:"))
	if isBuiltinBlocked(v) {
		return Identity{}, ErrBlocked
	}
	// A pure-ASCII address without a punycode label is already canonical:
	// the hot path does no Unicode work.
	if !ascii || strings.Contains(v, "xn--") {
		v = canonicalEmail(v)
	}
	// Lowercasing can change the byte length of some runes, so the shared
	// limit is enforced again on the final form; otherwise a value could be
	// accepted once and refused when normalized a second time.
	if len(v) > MaxValueLen {
		return Identity{}, invalidValue(id, "longer than 256 bytes")
	}
	if reason := checkEmail(v); reason != "" {
		return Identity{}, invalidValue(id, reason)
	}
	return Identity{Type: TypeEmail, Value: v}, nil
}

// canonicalEmail brings the lowercased, width-folded address v to one
// Unicode form, so that one address typed two ways is one identity
// (docs/identity.md#email-addresses): the local part to NFC, "jose" and a
// combining acute accent being "josé"; the domain to canonicalDomain's
// form. A v that is not one local part, one '@' and one domain is
// returned as is, for checkEmail to refuse.
func canonicalEmail(v string) string {
	at := strings.IndexByte(v, '@')
	if at < 0 || strings.IndexByte(v[at+1:], '@') >= 0 {
		return v
	}
	local := norm.NFC.String(v[:at])
	return local + "@" + canonicalDomain(v[at+1:], MaxValueLen-len(local)-1)
}

// canonicalDomain brings the lowercased, width-folded domain d to one
// form, label by label: a label IDNA accepts goes through its lookup
// mapping (UTS #46, the Lookup profile) to its Unicode form,
// "xn--bcher-kva" and "BÜCHER" being "bücher"; a label IDNA refuses (a
// malformed xn-- label, "ab--cd" beside a non-ASCII label, a right-to-left
// label starting with a digit) is kept as it is, in NFC, as the address
// was before this rule: checkEmail alone judges it, so no address the
// plausibility check accepts is refused for IDNA's stricter rules. An
// ASCII label not starting with "xn--" is its own form and skips IDNA.
//
// When the Unicode form would not fit in room bytes (punycode is shorter
// than the UTF-8 of the name it spells), the labels IDNA accepts are
// written in their ASCII (punycode) form instead: an address short enough
// to be sent is never refused for the length of its Unicode form, and both
// of its forms still give the one value.
func canonicalDomain(d string, room int) string {
	// IDNA reads the ideographic full stop (and the fullwidth and halfwidth
	// ones, which width folding made ASCII and ideographic) as a dot.
	d = strings.ReplaceAll(norm.NFC.String(d), "\u3002", ".")
	labels := strings.Split(d, ".")
	converted := make([]bool, len(labels)) // labels IDNA gave the Unicode form
	for i, l := range labels {
		if isASCII(l) && !strings.HasPrefix(l, "xn--") {
			continue
		}
		if u, err := idna.Lookup.ToUnicode(l); err == nil {
			// UTS #46 maps Cherokee small letters to the capitals (the
			// script's original letters): lowercased again, so that an
			// email stays lowercase; IDNA maps either case to one.
			u = strings.ToLower(u)
			// A label IDNA takes but checkEmail would refuse in its Unicode
			// form stays as typed, as one IDNA refuses does: an emoji
			// domain (xn--ls8h.la is 💩.la), a label of characters IDNA
			// ignores (it maps to nothing), a top-level domain of other
			// digits (𝟏𝟐 maps to 12). Each was accepted as typed before.
			if domainLabelOK(u, i == len(labels)-1) {
				labels[i], converted[i] = u, true
			}
		}
	}
	if d = strings.Join(labels, "."); len(d) <= room {
		return d
	}
	for i, l := range labels {
		// A label the first pass kept as typed (IDNA refused it, or its
		// Unicode form is no label checkEmail takes) stays so here too:
		// an emoji label is refused in a long domain as in a short one.
		if !converted[i] || isASCII(l) {
			continue
		}
		if a, err := idna.Lookup.ToASCII(l); err == nil {
			labels[i] = a
		}
	}
	return strings.Join(labels, ".")
}

// domainLabelOK reports whether checkEmail takes the IDNA result u as a
// label of the domain (the last one when last): not empty, and of letters,
// marks, digits and hyphens, and not all digits if last.
func domainLabelOK(u string, last bool) bool {
	if u == "" || !strings.ContainsFunc(u, func(r rune) bool { return !('0' <= r && r <= '9') }) && last {
		return false
	}
	return !strings.ContainsFunc(u, func(r rune) bool { return !emailDomainRune(r) })
}

// isASCII reports whether s holds only ASCII bytes.
func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= utf8.RuneSelf {
			return false
		}
	}
	return true
}

// checkEmail returns why the lowercased address v is not plausible, or "".
func checkEmail(v string) string {
	at := strings.IndexByte(v, '@')
	if at < 0 || strings.Count(v, "@") != 1 {
		return "must contain exactly one '@'"
	}
	local, domain := v[:at], v[at+1:]
	if local == "" {
		return "empty local part"
	}
	if len(local) > 64 {
		return "local part longer than 64 bytes"
	}
	// Dot-atom rules (RFC 5322): no leading, trailing or doubled dots.
	// Quoted local parts are not supported; they are vanishingly rare and
	// mostly appear in pasted display names.
	if local[0] == '.' || local[len(local)-1] == '.' || strings.Contains(local, "..") {
		return "local part has a misplaced dot"
	}
	for _, r := range local {
		if !emailLocalRune(r) {
			return "local part contains " + quoteRune(r)
		}
	}
	if domain == "" {
		return "empty domain"
	}
	if domain[0] == '.' || domain[len(domain)-1] == '.' {
		return "domain starts or ends with a dot"
	}
	if !strings.Contains(domain, ".") {
		return "domain has no dot"
	}
	labels := strings.Split(domain, ".")
	for _, label := range labels {
		if label == "" {
			return "domain has an empty label"
		}
		// A DNS label is at most 63 bytes in its ASCII form: an
		// internationalized label is measured as punycode too, and is
		// refused only when both forms are longer (the UTF-8 bytes were
		// the only measure before, and are kept so that nothing accepted
		// then is refused).
		if len(label) > 63 && (isASCII(label) || punycodeLen(label) > 63) {
			return "domain label longer than 63 bytes"
		}
		if label[0] == '-' || label[len(label)-1] == '-' {
			return "domain label starts or ends with '-'"
		}
		for _, r := range label {
			if !emailDomainRune(r) {
				return "domain contains " + quoteRune(r)
			}
		}
	}
	// No top-level domain is numeric; this refuses bare IP addresses
	// ("a@10.0.0.1"), which are never a person's mailbox.
	if strings.Trim(labels[len(labels)-1], "0123456789") == "" {
		return "top-level domain is numeric"
	}
	return ""
}

// punycodeLen returns the length of the ASCII (punycode, "xn--") form of
// the non-ASCII label.
func punycodeLen(label string) int {
	a, err := idna.Punycode.ToASCII(label)
	if err != nil {
		return len(label)
	}
	return len(a)
}

// emailLocalRune reports whether r may appear in the local part: RFC 5322
// atext plus '.', and non-ASCII letters, marks and digits (RFC 6531
// internationalized addresses). Other non-ASCII runes (symbols, invisible
// format characters) are refused because they usually come from copy and
// paste and would split one person into two identities.
func emailLocalRune(r rune) bool {
	if r < utf8.RuneSelf {
		switch {
		case 'a' <= r && r <= 'z', 'A' <= r && r <= 'Z', '0' <= r && r <= '9':
			return true
		}
		return strings.ContainsRune(".!#$%&'*+-/=?^_`{|}~", r)
	}
	return unicode.IsLetter(r) || unicode.IsMark(r) || unicode.IsDigit(r)
}

// emailDomainRune reports whether r may appear in a domain label: LDH
// ASCII, plus non-ASCII letters, marks and digits for internationalized
// domain names (marks are needed by scripts such as Devanagari).
func emailDomainRune(r rune) bool {
	if r < utf8.RuneSelf {
		return 'a' <= r && r <= 'z' || 'A' <= r && r <= 'Z' || '0' <= r && r <= '9' || r == '-'
	}
	return unicode.IsLetter(r) || unicode.IsMark(r) || unicode.IsDigit(r)
}

// quoteRune names r for an error reason.
func quoteRune(r rune) string {
	if unicode.IsSpace(r) {
		return "whitespace"
	}
	return strconv.QuoteRune(r)
}

// phonePrefixes are URI schemes and channel prefixes that messaging
// providers (Twilio, WhatsApp) put in front of numbers.
var phonePrefixes = [...]string{whatsAppPrefix, "sms:", "tel:"}

// whatsAppPrefix marks a WhatsApp address ("whatsapp:+5215512345678"), as
// Twilio writes it: its number is read as WhatsApp writes numbers
// (WhatsAppNumber).
const whatsAppPrefix = "whatsapp:"

// normalizePhone converts a phone number to E.164 ("+14155550100").
// A number behind the "whatsapp:" prefix is first brought from WhatsApp's
// form to the number's (WhatsAppNumber).
func (n Normalizer) normalizePhone(id Identity) (Identity, error) {
	v := strings.TrimSpace(id.Value)
	whatsApp := false
	for _, p := range phonePrefixes {
		if len(v) >= len(p) && strings.EqualFold(v[:len(p)], p) {
			v = strings.TrimSpace(v[len(p):])
			whatsApp = p == whatsAppPrefix
			break
		}
	}
	if isBuiltinBlocked(v) {
		return Identity{}, ErrBlocked
	}
	if whatsApp {
		v = WhatsAppNumber(v)
	}
	// phonenumbers silently converts letters ("1-800-FLOWERS") and splits
	// off extensions ("x12", "ext. 12"). Neither belongs in an identifier:
	// vanity numbers are shared by a whole company and an extension is not
	// a reachable mobile number, so both are refused here, before parsing.
	for _, r := range v {
		if r < utf8.RuneSelf && ('a' <= r && r <= 'z' || 'A' <= r && r <= 'Z') {
			return Identity{}, invalidValue(id, "contains letters; vanity numbers and extensions are not supported")
		}
		if !phoneRune(r) {
			return Identity{}, invalidValue(id, "contains "+quoteRune(r)+", which is not part of a phone number")
		}
	}
	// "(000) 000-0000" is a masked or placeholder number whatever the
	// region; without this it would be refused as invalid when no
	// DefaultRegion is set instead of being ignored.
	digits := phonenumbers.NormalizeDigitsOnly(v)
	if digits == "" {
		return Identity{}, invalidValue(id, "not a valid phone number: it has no digits")
	}
	if strings.Trim(digits, "0") == "" {
		return Identity{}, ErrBlocked
	}
	// "00" is the international call prefix in most of the world. Parsing
	// only recognizes the prefix of DefaultRegion (011 in the US), so it
	// is rewritten to "+" to accept "00 44 20 7946 0958" everywhere.
	if strings.HasPrefix(v, "00") {
		v = "+" + v[2:]
	}
	num, err := phonenumbers.Parse(v, strings.ToUpper(n.DefaultRegion))
	if err != nil {
		if errors.Is(err, phonenumbers.ErrInvalidCountryCode) && !strings.HasPrefix(v, "+") && n.DefaultRegion == "" {
			return Identity{}, invalidValue(id, "not a valid phone number: it has no country code and no default region is configured")
		}
		return Identity{}, invalidValue(id, "not a valid phone number: "+err.Error())
	}
	if num.GetExtension() != "" {
		return Identity{}, invalidValue(id, "not a valid phone number: extensions are not supported")
	}
	if num.GetNationalNumber() == 0 {
		return Identity{}, ErrBlocked
	}
	// IS_POSSIBLE_LOCAL_ONLY is refused even though IsPossibleNumber
	// accepts it: a number without its area code ("555 0100") is shared by
	// a different person in every area, so it cannot identify anyone.
	switch phonenumbers.IsPossibleNumberWithReason(num) {
	case phonenumbers.IS_POSSIBLE:
	case phonenumbers.IS_POSSIBLE_LOCAL_ONLY:
		return Identity{}, invalidValue(id, "not a valid phone number: it is missing its area code")
	case phonenumbers.INVALID_COUNTRY_CODE:
		return Identity{}, invalidValue(id, "not a valid phone number: unknown country calling code")
	case phonenumbers.TOO_SHORT:
		return Identity{}, invalidValue(id, "not a valid phone number: too short")
	case phonenumbers.TOO_LONG:
		return Identity{}, invalidValue(id, "not a valid phone number: too long")
	default:
		return Identity{}, invalidValue(id, "not a valid phone number: wrong length for its country")
	}
	out := phonenumbers.Format(num, phonenumbers.E164)
	// Counted on the output rather than the input so that normalizing an
	// already normalized number gives the same verdict.
	if len(out)-1 < minPhoneDigits {
		return Identity{}, invalidValue(id, "not a valid phone number: fewer than 7 digits")
	}
	// E.164 caps numbers at 15 digits, but the metadata of a few countries
	// (Germany, Austria) allows longer possible numbers; those would not
	// fit the columns and APIs that expect E.164.
	if len(out)-1 > maxPhoneDigits {
		return Identity{}, invalidValue(id, "not a valid phone number: more than 15 digits")
	}
	// Parsing strips a leading national prefix from a number only when the
	// number looks invalid with it, so an invalid number such as
	// "+44 0 0000 0001" can lose one prefix per pass and never settle.
	// Such numbers are refused, which keeps Normalize idempotent; a valid
	// E.164 number always reads back unchanged.
	// An input already in that form was the first parse's input: parsing
	// it again would repeat the same work to the same answer.
	if out == v {
		return Identity{Type: TypePhone, Value: out}, nil
	}
	if again, err := phonenumbers.Parse(out, ""); err != nil || phonenumbers.Format(again, phonenumbers.E164) != out {
		return Identity{}, invalidValue(id, "not a valid phone number: its digits are ambiguous")
	}
	return Identity{Type: TypePhone, Value: out}, nil
}

// PhoneFragment returns the forms in which a customer's search text may
// hold the phone number, or the part of one, that v writes as people
// write numbers ("(415) 555-0100", "+1 415 555 0100", "555-0100"): its
// digits, a leading "+" kept, and, when v reads as a whole number (with
// DefaultRegion, as Normalize reads it) whose E.164 form does not contain
// those digits ("00 44 20 7946 0958"), that form too. The digits alone are
// searched because a whole number read with the default region may be the
// part of a foreign one: "55 1234 5678" reads as +1 551 234 5678 and is
// the end of +52 55 1234 5678. ok is false when v is not written as a
// phone number: it holds a character no written number holds (a letter,
// an "@"), or no digit.
func (n Normalizer) PhoneFragment(v string) (forms []string, ok bool) {
	v = strings.TrimSpace(v)
	for _, r := range v {
		if !phoneRune(r) {
			return nil, false
		}
	}
	digits := phonenumbers.NormalizeDigitsOnly(v)
	if digits == "" {
		return nil, false
	}
	if strings.HasPrefix(v, "+") || strings.HasPrefix(v, "＋") {
		digits = "+" + digits
	}
	forms = []string{digits}
	if id, err := n.Normalize(Identity{Type: TypePhone, Value: v}); err == nil && !strings.Contains(id.Value, digits) {
		forms = append(forms, id.Value)
	}
	return forms, true
}

// phoneRune reports whether r may appear in a written phone number: digits
// (any script, phonenumbers maps them to ASCII), whitespace, plus signs,
// dashes and the grouping punctuation people use ("(415) 555-0100",
// "415.555.0100", "415/5550100").
func phoneRune(r rune) bool {
	if unicode.IsDigit(r) || unicode.IsSpace(r) || unicode.Is(unicode.Pd, r) {
		return true
	}
	return strings.ContainsRune("+＋().[]/（）［］．／", r)
}
