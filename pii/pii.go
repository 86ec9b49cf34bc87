// Package pii recognizes personal data in customer profiles and masks it
// for callers that may not see it: j***@example.com for an email,
// +1******0100 for a phone number, J*** for a name, *** for an address.
//
// Personal data is recognized by where it sits (an identity's type, a
// trait's or property's name) and, as a second line, by its shape (any
// string that looks like an email address or an E.164 number). It is pure
// logic without I/O; docs/security.md lists the rules.
package pii

import (
	"bytes"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/nyaruka/phonenumbers"
)

// Kind is a category of personal data.
type Kind string

// Kinds of personal data. The empty Kind means "not personal data".
const (
	KindEmail   Kind = "email"
	KindPhone   Kind = "phone"
	KindName    Kind = "name"
	KindAddress Kind = "address"
	KindBirth   Kind = "birthday"
)

// Kinds a key may name, but need not: its word for a phone or an email is
// ambiguous (mobile, cell, wa, whatsapp, fax, mail: is_mobile,
// consent_whatsapp, direct_mail, grid_cell name no number). KeyKind reads
// them as phone and email; a value under such a key is masked as one only
// when it has the shape of one (ambiguousKind).
const (
	maybePhone Kind = "phone?"
	maybeEmail Kind = "email?"
)

// Redacted replaces a value that is masked entirely.
const Redacted = "***"

// Email masks an email address to its first character and its domain:
// jane@example.com -> j***@example.com. Anything that is not an address is
// redacted entirely.
func Email(s string) string {
	at := strings.LastIndexByte(s, '@')
	if at <= 0 || at == len(s)-1 {
		return Redacted
	}
	r, _ := utf8.DecodeRuneInString(s)
	return string(r) + "***" + s[at:]
}

// Phone masks a phone number to its country code and last four digits:
// +14155550100 -> +1******0100. A number without a country code keeps its
// last four digits; one too short to hide anything is redacted.
func Phone(s string) string {
	digits := make([]byte, 0, len(s))
	for i := 0; i < len(s); i++ {
		if s[i] >= '0' && s[i] <= '9' {
			digits = append(digits, s[i])
		}
	}
	if len(digits) < 7 {
		return Redacted
	}
	keep := 0
	prefix := ""
	if strings.HasPrefix(strings.TrimSpace(s), "+") {
		prefix = "+"
		keep = countryCodeLen(string(digits))
	}
	hidden := len(digits) - keep - 4
	if hidden < 3 {
		return Redacted
	}
	return prefix + string(digits[:keep]) + strings.Repeat("*", hidden) + string(digits[len(digits)-4:])
}

// countryCodeLen returns how many leading digits of an international number
// are its country code (1 to 3), or 1 when it cannot tell.
func countryCodeLen(digits string) int {
	for n := 1; n <= 3 && n < len(digits); n++ {
		cc, _ := strconv.Atoi(digits[:n])
		if phonenumbers.GetRegionCodeForCountryCode(cc) != "ZZ" {
			return n
		}
	}
	return 1
}

// Name masks a name to its first letter: Jane Doe -> J***.
func Name(s string) string {
	s = strings.TrimSpace(s)
	if s == "" {
		return ""
	}
	r, _ := utf8.DecodeRuneInString(s)
	return string(r) + "***"
}

// mask masks s as personal data of kind k.
func mask(k Kind, s string) string {
	switch k {
	case KindEmail:
		return Email(s)
	case KindPhone:
		return Phone(s)
	case KindName:
		return Name(s)
	}
	return Redacted
}

// LooksLikeEmail reports whether s has the shape of an email address.
func LooksLikeEmail(s string) bool {
	at := strings.LastIndexByte(s, '@')
	if at <= 0 || at >= len(s)-3 || len(s) > 320 || strings.ContainsAny(s, " \t\n<>") {
		return false
	}
	dot := strings.LastIndexByte(s[at:], '.')
	return dot > 1 && dot < len(s[at:])-1
}

// LooksLikePhone reports whether s has the shape of an E.164 number.
func LooksLikePhone(s string) bool {
	if len(s) < 8 || len(s) > 16 || s[0] != '+' || s[1] == '0' {
		return false
	}
	for i := 1; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// shape returns the kind a string's shape reveals, if any.
func shape(s string) Kind {
	switch {
	case s == "":
		return ""
	case LooksLikeEmail(s):
		return KindEmail
	case LooksLikePhone(s):
		return KindPhone
	}
	return ""
}

// ProviderID masks a message's provider id: the id its provider (Twilio,
// the WhatsApp Cloud API) gave it. A Twilio message SID (SM or MM and 32
// hex digits) is an opaque id and is returned unchanged with the empty
// Kind. A WhatsApp id (wamid.) is base64 of a record that starts with the
// customer's WhatsApp number, and is masked to wamid.***; an id of any
// other form may encode as much, and is masked whole.
func ProviderID(s string) (string, Kind) {
	switch {
	case s == "", twilioSID(s):
		return s, ""
	case strings.HasPrefix(s, "wamid."):
		return "wamid." + Redacted, KindPhone
	}
	return Redacted, KindPhone
}

// whatsAppID reports whether s is a WhatsApp message id (wamid.), which
// ProviderID masks, and not one masked already (wamid.***).
func whatsAppID(s string) bool {
	return strings.HasPrefix(s, "wamid.") && s != "wamid."+Redacted
}

// twilioSID reports whether s is a Twilio message SID: SM (an SMS) or MM
// (an MMS), then 32 hex digits.
func twilioSID(s string) bool {
	if len(s) != 34 || (s[:2] != "SM" && s[:2] != "MM") {
		return false
	}
	for i := 2; i < len(s); i++ {
		c := s[i]
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F') {
			return false
		}
	}
	return true
}

// Identity classifies an identity value by its type (email, phone, or a
// custom type naming one of them, e.g. work_email) or else by its shape,
// and returns the masked value. When neither decides, the value is read as
// a trait's value is (the whole value only digits is an id): the email
// addresses and phone numbers inside it are masked (Ann Lee
// <ann@corp.example>, whatsapp:+14155550199, tel: 4155550100,
// user:14155550100), and the Kind is the first found. Its own rules
// (bareIdentity): digits glued by _ or - to a channel's word are a phone
// number (wa_14155550199: channelPrefix), to another word its id
// (sess_4155550100); and more digits than a phone number has are an id,
// whatever joins them (GA1.2.1234567890.1700000000,
// shop:12345678/987654321). A value that holds no personal data (a
// user_id, an anonymous_id) has the empty Kind and is returned unchanged.
func Identity(typ, value string) (string, Kind) {
	k := IdentityKind(typ)
	if k == "" {
		k = shape(value)
	}
	if k != "" {
		return mask(k, value), k
	}
	m, kinds := text(value, true, bareIdentity)
	if len(kinds) == 0 {
		return value, ""
	}
	return m, Kind(kinds[0])
}

// IdentityKind is the kind of personal data an identity type names: email
// or phone (sms and whatsapp ids are phone numbers), else what the type
// names read as a trait's name (KeyKind: msisdn, mobile, wa_id, tel are
// phones), "" for a type that says nothing (its value's shape then
// decides).
func IdentityKind(typ string) Kind {
	switch {
	case strings.Contains(typ, "email"):
		return KindEmail
	case strings.Contains(typ, "phone"), strings.Contains(typ, "whatsapp"), strings.Contains(typ, "sms"):
		return KindPhone
	}
	return KeyKind(typ)
}

// keyKinds classifies trait and property names, normalized by normalizeKey.
// mail, mobile, cell, whatsapp and fax, and mobile's names in other
// languages (celular, movil, handy), may name something else: their kind
// is a maybe (maybePhone, maybeEmail). from is not here: it is a maybe
// only inside a kept WhatsApp item (keptItemKind); elsewhere it is a date,
// a time or a page as often as anything.
var keyKinds = map[string]Kind{
	"email": KindEmail, "emailaddress": KindEmail, "mail": maybeEmail,
	"phone": KindPhone, "phonenumber": KindPhone, "mobile": maybePhone, "mobilephone": KindPhone,
	"tel": KindPhone, "telephone": KindPhone, "cell": maybePhone, "cellphone": KindPhone, "whatsapp": maybePhone,
	"whatsappid": KindPhone, "waid": KindPhone, "msisdn": KindPhone, "fax": maybePhone, "smsto": KindPhone,
	"telefono": KindPhone, "telefone": KindPhone, "telefon": KindPhone, "celular": maybePhone, "movil": maybePhone,
	"handy": maybePhone, "handynummer": KindPhone,
	"name": KindName, "firstname": KindName, "lastname": KindName, "fullname": KindName, "givenname": KindName,
	"familyname": KindName, "middlename": KindName, "surname": KindName, "displayname": KindName,
	"profilename": KindName, "username": KindName, "nickname": KindName,
	"address": KindAddress, "street": KindAddress, "streetaddress": KindAddress, "postalcode": KindAddress,
	"postcode": KindAddress, "zip": KindAddress, "zipcode": KindAddress,
	"birthday": KindBirth, "birthdate": KindBirth, "dateofbirth": KindBirth, "dob": KindBirth,
}

// KeyWords lists the names KeyKind knows whole (email, phone, mobile,
// firstname, zip, ...), normalized as it reads them: in lower case,
// without _ - . and spaces. They are words, not anyone's data: an erasure
// keeps them in the audit log's field paths (postgres.EraseCustomer).
func KeyWords() []string {
	return slices.Sorted(maps.Keys(keyKinds))
}

// KeyKind classifies a trait or property name: firstName, first_name and
// First Name are all names; work_email, homePhone, phone2 and
// mobile_number are an email and phones; shipping_address is an address;
// billing_name is a name, and so is any name but of a thing (company_name,
// product_name: nonPersonalNames). A name none of these rules knows is
// read word by word (tokenKind): home_phone_number, contact_mobile,
// phoneNumbers, wa_number and contact_emails end in words naming a phone
// or an email.
//
// A name whose word for a phone or an email may mean something else
// (mobile, cell, wa, whatsapp, fax, mail: is_mobile, direct_mail) is a
// phone or an email here, as a key that may name one; the values under it
// are masked only when they have the shape of one (Value, JSON).
func KeyKind(key string) Kind {
	switch k := keyKind(key); k {
	case maybePhone:
		return KindPhone
	case maybeEmail:
		return KindEmail
	default:
		return k
	}
}

// keyKind is KeyKind with the kinds a key may name (maybePhone,
// maybeEmail) told apart.
func keyKind(key string) Kind {
	if k := knownKeyKind(key); k != "" {
		return k
	}
	return tokenKind(key)
}

// ambiguousKind is the kind of the string v under a key that may name a
// phone or an email (k is maybePhone or maybeEmail): a phone when v has
// the shape of a phone number (phoneShape), an email when it holds an @;
// otherwise none, and v is read as under a key that says nothing.
// consent_whatsapp "granted", direct_mail "subscribed", is_mobile "yes"
// and platform_mobile "ios" are shown; contact_mobile "4155550100" is
// masked.
func ambiguousKind(k Kind, v string) Kind {
	switch {
	case k == maybePhone && phoneShape(v):
		return KindPhone
	case k == maybeEmail && mayHoldAt(v):
		return KindEmail
	}
	return ""
}

// phoneShape reports whether s is written as a phone number is, with or
// without a country code: 7 to 15 digits and the +, spaces, dashes, dots,
// slashes and parentheses people write between their groups, and nothing
// else; a + only first. A date (2024-03-01), a negative number, a decimal
// (37.7749295) or an IPv4 address is not one.
func phoneShape(s string) bool {
	t, _ := plainView(s)
	t = strings.TrimSpace(t)
	if t == "" || t[0] == '-' || dateLen(t) > 0 || ipv4(t) {
		return false
	}
	digits, dots, others, groups := 0, 0, 0, 0
	for i := 0; i < len(t); i++ {
		switch c := t[i]; {
		case isDigit(c):
			if i == 0 || !isDigit(t[i-1]) {
				groups++
			}
			digits++
		case c == '+' && i == 0:
		case c == '.':
			dots++
		case c == ' ' || c == '-' || c == '(' || c == ')' || c == '/':
			others++
		default:
			return false
		}
	}
	if groups == 2 && dots == 1 && others == 0 {
		return false // a decimal
	}
	return digits >= 7 && digits <= 15
}

// numberShape is phoneShape for a number: an integer of 7 to 15 digits.
func numberShape(v any) bool {
	s := toString(v)
	if strings.ContainsAny(s, ".eE-") {
		return false
	}
	n := countDigits(s)
	return n >= 7 && n <= 15
}

// knownKeyKind is KeyKind by the normalized name: the names people give
// these fields (keyKinds), and their endings. A name of ASCII that fits
// in 64 bytes, as most do, is normalized on the stack.
func knownKeyKind(key string) Kind {
	var buf [64]byte
	n, ok := normalizeASCII(key, &buf)
	if !ok {
		n = []byte(normalizeKey(key))
	}
	if k, ok := keyKinds[string(n)]; ok {
		return k
	}
	// phone2, address_line1, email_2.
	if t := trimDigits(n); len(t) < len(n) {
		n = t
		if k, ok := keyKinds[string(n)]; ok {
			return k
		}
	}
	switch {
	case hasSuffix(n, "email"), hasSuffix(n, "emailaddress"):
		return KindEmail
	case hasSuffix(n, "phone") && !devicePhone(n[:len(n)-len("phone")]), phoneNumberKey(n):
		return KindPhone
	case hasSuffix(n, "address"), hasPrefix(n, "address"), hasPrefix(n, "street"),
		hasSuffix(n, "zip"), hasSuffix(n, "zipcode"),
		hasSuffix(n, "postalcode"), hasSuffix(n, "postcode"):
		return KindAddress
	case bytes.Contains(n, []byte("birth")), hasSuffix(n, "dob"):
		return KindBirth
	case hasSuffix(n, "name") && !nonPersonalNames[string(n[:len(n)-len("name")])]:
		return KindName
	}
	return ""
}

func hasSuffix(n []byte, s string) bool { return len(n) >= len(s) && string(n[len(n)-len(s):]) == s }

// devicePhone reports whether p, all that a normalized key holds before
// its closing "phone", makes the key name a thing rather than a number:
// smartphone, microphone, headphone, earphone, iphone, has_iphone. p must
// be the device's word whole, so that run-together keys such as
// deptheadphone or yearphone stay phones, as taxi_phone does.
func devicePhone(p []byte) bool {
	switch string(p) {
	case "smart", "micro", "head", "ear", "xylo", "saxo", "mega", "gramo", "speaker",
		"i", "hasi", "isi", "usesi", "ownsi":
		return true
	}
	return false
}
func hasPrefix(n []byte, s string) bool { return len(n) >= len(s) && string(n[:len(s)]) == s }

// phoneNumberKey reports whether n names a phone by its kind and a word for
// number: mobile_number, contact_no, whatsapp_num, cellnumber; and ends
// there (phone_verified is not a phone).
func phoneNumberKey(n []byte) bool {
	if !hasSuffix(n, "number") && !hasSuffix(n, "no") && !hasSuffix(n, "num") && !hasSuffix(n, "nr") {
		return false
	}
	for _, kind := range [...]string{"phone", "mobile", "cell", "tel", "telephone", "contact", "whatsapp", "sms", "fax"} {
		if hasPrefix(n, kind) {
			switch string(n[len(kind):]) {
			case "number", "no", "num", "nr":
				return true
			}
		}
	}
	return false
}

// tokenKind classifies a key by its last words, split where a separator
// (keySeparator) or a change of case (homePhone, WANumber) parts them: a
// phone when it ends in a word for one (phone, tel, msisdn: home_phone,
// phones) or is one before a word for number (home_phone_number,
// phoneNumbers, wa_number, cell_no; contact and sms name a phone only
// there: emergency_contact_no); an email when it ends in email, optionally
// followed by address (contact_emails, emailAddresses, contact-e-mail).
// A key that ends in a word that may name a phone or an email but need
// not (mobile, cell, wa, whatsapp, fax; mail: contact_mobile, is_mobile,
// consent_whatsapp, work_mail, direct_mail) may name one: maybePhone,
// maybeEmail (ambiguousKind). Digits it ends with are left out (phone_2).
// Words that only say which of a person's numbers or addresses it is
// (qualifier: home, work, primary, e164, raw, ...) may follow: phone_home,
// phoneE164, email_work, "Phone (home)" and home_phone_primary are read
// as phone and email are, and mobile_e164 as mobile is; mobile
// and the other words that may name a phone are qualifiers too
// (phone_mobile is a phone). A word that says something else of it is
// not (email_verified, email_hash, phone_type, phone_provider,
// phone_status, email_count, email_opt_in: none). A word is whole:
// telemetry, hotel and automobile hold no phone word. It reads the key
// from its end, and allocates nothing.
func tokenKind(key string) Kind {
	maybe := Kind("")
	for end := wordEnd(key, len(key)); end > 0; end = wordEnd(key, wordStart(key, end)) {
		start := wordStart(key, end)
		switch k := endKind(key, start, end); k {
		case KindPhone, KindEmail:
			return k
		case maybePhone, maybeEmail:
			if maybe == "" {
				maybe = k
			}
		}
		if !qualifier(key, start, end) {
			break
		}
	}
	return maybe
}

// qualifier reports whether the word key[start:end], with the digits that
// follow it (e164), only says which of a person's numbers or addresses a
// key names: home, work, primary, e164, raw, ...; or is a word that may
// name a phone (phone_mobile, phone_cell).
func qualifier(key string, start, end int) bool {
	if wordClass(key[start:end]) == mobileWords {
		return true
	}
	for end < len(key) && isDigit(key[end]) {
		end++
	}
	return wordClass(key[start:end]) == qualifierWords
}

// endKind is the kind the words of key ending with key[start:end] name
// (tokenKind), "" when none.
func endKind(key string, start, end int) Kind {
	switch wordBefore(key, start, end) {
	case phoneWords:
		return KindPhone
	case mobileWords:
		return maybePhone
	case emailWords:
		return KindEmail
	case mailWords:
		return mailKind(key, start)
	case numberWords:
		// phone_number, contact_no: the word before says whose number.
		if e := wordEnd(key, start); e > 0 {
			switch wordBefore(key, wordStart(key, e), e) {
			case phoneWords, mobileWords, contactWords:
				return KindPhone
			}
		}
	case addressWords:
		if e := wordEnd(key, start); e > 0 {
			switch s := wordStart(key, e); wordBefore(key, s, e) {
			case emailWords:
				return KindEmail
			case mailWords:
				return mailKind(key, s)
			}
		}
	}
	return ""
}

// mailKind is the kind of a key whose word mail starts at start: an email
// after the word e (e-mail, E_Mail), else maybe one (work_mail,
// direct_mail).
func mailKind(key string, start int) Kind {
	if e := wordEnd(key, start); e > 0 && start-e <= 1 && sameASCII(key[wordStart(key, e):e], "e") {
		return KindEmail
	}
	return maybeEmail
}

// wordEnd is where the last word of key[:end] ends: before the digits and
// separators key[:end] ends with.
func wordEnd(key string, end int) int {
	for end > 0 && (isDigit(key[end-1]) || keySeparator(key[end-1])) {
		end--
	}
	return end
}

// wordStart is where the word of key ending at end starts: after a
// separator, or at a change of case (homePhone: a capital after a small
// letter or a digit; WANumber: the last capital of a run, before a small
// letter).
func wordStart(key string, end int) int {
	i := end
	for i > 0 {
		c := key[i-1]
		if keySeparator(c) {
			break
		}
		if i-1 > 0 && isUpper(c) {
			p := key[i-2]
			if isLower(p) || isDigit(p) || isUpper(p) && i < end && isLower(key[i]) {
				return i - 1
			}
		}
		i--
	}
	return i
}

// wordBefore is the class of the word key[start:end], read with the word
// before it where the two write one (WhatsApp, Whats_App).
func wordBefore(key string, start, end int) class {
	c := wordClass(key[start:end])
	if c != appWords {
		return c
	}
	e := start
	for e > 0 && keySeparator(key[e-1]) {
		e--
	}
	if e > 0 && sameASCII(key[wordStart(key, e):e], "whats") {
		return mobileWords
	}
	return otherWords
}

// A class of words tokenKind knows.
type class uint8

const (
	otherWords     class = iota
	phoneWords           // phone, tel, msisdn, ...: a phone
	mobileWords          // mobile, cell, wa, whatsapp, fax: maybe a phone
	contactWords         // contact, sms: a phone before a word for number
	numberWords          // number, no, num, nr
	emailWords           // email: an email
	mailWords            // mail: maybe an email (but e-mail)
	addressWords         // address, addr
	appWords             // app: WhatsApp's second word
	qualifierWords       // home, work, e164, ...: which number or address it is
)

// wordClass is the class of the word w, in any case.
func wordClass(w string) class {
	var buf [16]byte
	if len(w) > len(buf) {
		return otherWords // longer than any word it knows
	}
	for i := 0; i < len(w); i++ {
		c := w[i]
		if isUpper(c) {
			c += 'a' - 'A'
		}
		buf[i] = c
	}
	switch string(buf[:len(w)]) {
	case "phone", "phones", "telephone", "telephones", "cellphone", "cellphones", "tel", "msisdn":
		return phoneWords
	case "mobile", "mobiles", "cell", "whatsapp", "wa", "fax":
		return mobileWords
	case "contact", "sms":
		return contactWords
	case "number", "numbers", "no", "num", "nr":
		return numberWords
	case "email", "emails":
		return emailWords
	case "mail", "mails":
		return mailWords
	case "address", "addresses", "addr":
		return addressWords
	case "app":
		return appWords
	case "home", "work", "office", "business", "personal", "private", "primary", "secondary", "main",
		"alt", "alternate", "alternative", "other", "backup", "new", "old", "previous", "preferred",
		"e164", "normalized", "normalised", "formatted", "raw", "intl", "international", "national",
		"local", "landline", "fixed":
		return qualifierWords
	}
	return otherWords
}

// sameASCII reports whether s is the lower-case word w in any case.
func sameASCII(s, w string) bool {
	if len(s) != len(w) {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if isUpper(c) {
			c += 'a' - 'A'
		}
		if c != w[i] {
			return false
		}
	}
	return true
}

// keySeparator reports whether c parts a key's words: _ - . : a space,
// and the brackets, # and / of names written for people ("Phone (home)",
// "phone#", "phone/work").
func keySeparator(c byte) bool {
	switch c {
	case '_', '-', '.', ':', ' ', '(', ')', '[', ']', '#', '/':
		return true
	}
	return false
}

func isUpper(c byte) bool { return c >= 'A' && c <= 'Z' }
func isLower(c byte) bool { return c >= 'a' && c <= 'z' }

// trimDigits drops the digits n ends with.
func trimDigits(n []byte) []byte {
	i := len(n)
	for i > 0 && n[i-1] >= '0' && n[i-1] <= '9' {
		i--
	}
	return n[:i]
}

// nonPersonalNames are the things whose name a key may hold (company_name,
// productName) that is not a person's. Any other key ending in name is
// taken for a person's: masking a thing's name is the safer mistake.
var nonPersonalNames = map[string]bool{
	"company": true, "business": true, "organization": true, "organisation": true, "org": true,
	"product": true, "item": true, "sku": true, "variant": true, "brand": true, "category": true,
	"collection": true, "plan": true, "campaign": true, "event": true, "page": true, "screen": true,
	"app": true, "device": true, "browser": true, "os": true, "file": true, "host": true,
	"domain": true, "store": true, "shop": true, "team": true, "group": true, "list": true,
	"template": true, "channel": true, "tag": true, "field": true, "property": true, "trait": true,
	"source": true, "integration": true, "workspace": true, "project": true, "coupon": true,
	"promotion": true, "experiment": true, "feature": true, "step": true, "flow": true, "bot": true,
	"city": true, "town": true, "country": true, "state": true, "region": true, "province": true,
	"county": true, "location": true, "venue": true, "language": true, "locale": true, "timezone": true,
	"currency": true, "payment": true, "method": true, "provider": true, "carrier": true, "network": true,
	"job": true, "role": true, "title": true, "department": true, "industry": true, "segment": true,
}

// normalizeASCII writes key to buf as normalizeKey does, and returns it;
// false when key is not ASCII or does not fit.
func normalizeASCII(key string, buf *[64]byte) ([]byte, bool) {
	j := 0
	for i := 0; i < len(key); i++ {
		c := key[i]
		switch {
		case c == '_' || c == '-' || c == '.' || c == ' ':
			continue
		case c >= 0x80 || j == len(buf):
			return nil, false
		case c >= 'A' && c <= 'Z':
			c += 'a' - 'A'
		}
		buf[j] = c
		j++
	}
	return buf[:j], true
}

func normalizeKey(key string) string {
	clean := true
	for i := 0; i < len(key); i++ {
		if c := key[i]; c == '_' || c == '-' || c == '.' || c == ' ' || (c >= 'A' && c <= 'Z') || c >= 0x80 {
			clean = false
			break
		}
	}
	if clean {
		return key
	}
	var b strings.Builder
	b.Grow(len(key))
	for _, r := range key {
		switch {
		case r == '_' || r == '-' || r == '.' || r == ' ':
		default:
			b.WriteRune(unicode.ToLower(r))
		}
	}
	return b.String()
}

// Value masks the value of the trait or property named key: by the key's
// kind, else (for strings) by shape; objects and lists are masked entry by
// entry. It returns the masked value and the personal data found, as paths
// below key ("" for key itself).
func Value(key string, v any) (any, []string) {
	var found []string
	out, _ := value(keyKind(key), v, "", &found, true)
	return out, found
}

// Find lists the personal data in a JSON object, as dotted key paths
// (email, contact.phone), without copying it.
func Find(m map[string]any) []string {
	var found []string
	object(m, "", &found, false)
	slices.Sort(found)
	return slices.Compact(found)
}

// JSON masks a JSON object key by key and returns the masked copy and the
// paths of the personal data found. A key that holds personal data itself
// is masked as well (Key), and its path is written with the masked name.
// An object without personal data is returned as it is, without a copy.
func JSON(m map[string]any) (map[string]any, []string) {
	var found []string
	out, _ := object(m, "", &found, true)
	slices.Sort(found)
	return out, slices.Compact(found)
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

// Diff masks a change's diff (CustomerChange.diff) as JSON does, and
// masks the parts the change feed writes whose key says nothing of them:
// identities ({type, value} under identity, cause and identitiesAdded) by
// their type, as Identity does; an operator's reason, an event's name
// (event.name) and an observation's source (observation.source) as free
// text, as the fields they copy are masked; and the identities an event
// could not attach (dropped: `type "value": why`) by their type, the why
// as free text. It returns the masked copy (m itself
// when nothing changed) and the paths of the personal data found.
func Diff(m map[string]any, masking bool) (map[string]any, []string) {
	var found []string
	out, _ := walk(m, "", &found, masking, diffPart)
	slices.Sort(found)
	return out, slices.Compact(found)
}

// diffPart masks a top-level part of a diff that Diff knows by its key; ok
// is false for the others, which are masked as JSON masks them.
func diffPart(key string, v any, found *[]string, masking bool) (nv any, changed, ok bool) {
	switch key {
	case "identity", "cause":
		nv, changed = identityObject(v, key, found, masking)
	case "identitiesAdded":
		nv, changed = eachOf(v, func(e any) (any, bool) { return identityObject(e, key, found, masking) })
	case "event":
		// The event's id and type are no one's, but an app names its events
		// as it likes ("Callback requested by +14155550100"): the name is
		// free text, masked as Event.name is.
		nv, changed = fieldText(v, key, "name", found, masking)
	case "observation":
		// An observation's source is free text its recorder wrote, masked
		// as Observation.source is; the rest is ids, flags and a key's name.
		nv, changed = fieldText(v, key, "source", found, masking)
	case "reason":
		nv, changed = textValue(v, key, found, masking)
	case "dropped":
		nv, changed = eachOf(v, func(e any) (any, bool) { return droppedText(e, key, found, masking) })
	default:
		return v, false, false
	}
	return nv, changed, true
}

// identityObject masks an identity written as {"type": ..., "value": ...}.
func identityObject(v any, path string, found *[]string, masking bool) (any, bool) {
	id, _ := v.(map[string]any)
	typ, _ := id["type"].(string)
	val, isString := id["value"].(string)
	if !isString {
		return value("", v, path, found, masking)
	}
	m, k := Identity(typ, val)
	if k == "" {
		return v, false
	}
	*found = append(*found, path+".value")
	if !masking {
		return v, false
	}
	out := maps.Clone(id)
	out["value"] = m
	return out, true
}

// fieldText masks the field name of the object v as free text (Text, where
// a number alone is a phone number), at path.name; the object's other
// fields are passed on as they are.
func fieldText(v any, path, name string, found *[]string, masking bool) (any, bool) {
	obj, ok := v.(map[string]any)
	if !ok {
		return value("", v, path, found, masking)
	}
	s, ok := obj[name].(string)
	if !ok {
		return v, false
	}
	m, kinds := Text(s, masking)
	if len(kinds) == 0 {
		return v, false
	}
	*found = append(*found, path+"."+name)
	if !masking {
		return v, false
	}
	out := maps.Clone(obj)
	out[name] = m
	return out, true
}

// droppedText masks an identity an event could not attach, as ingest
// words it: `type "value": why`.
func droppedText(v any, path string, found *[]string, masking bool) (any, bool) {
	s, ok := v.(string)
	if !ok {
		return value("", v, path, found, masking)
	}
	typ, rest, _ := strings.Cut(s, " ")
	quoted, err := strconv.QuotedPrefix(rest)
	if err != nil {
		return textValue(s, path, found, masking)
	}
	val, _ := strconv.Unquote(quoted)
	masked, k := Identity(typ, val)
	why, whyChanged := textValue(rest[len(quoted):], path, found, masking)
	if k == "" && !whyChanged {
		return v, false
	}
	if k != "" {
		*found = append(*found, path)
	}
	if !masking {
		return v, false
	}
	return typ + " " + strconv.Quote(masked) + why.(string), true
}

// textValue masks a string as free text.
func textValue(v any, path string, found *[]string, masking bool) (any, bool) {
	s, ok := v.(string)
	if !ok {
		return value("", v, path, found, masking)
	}
	m, kinds := Text(s, masking)
	if len(kinds) == 0 {
		return v, false
	}
	*found = append(*found, path)
	return m, masking
}

// eachOf applies f to each element of a list, copying the list only when
// an element changes.
func eachOf(v any, f func(any) (any, bool)) (any, bool) {
	list, ok := v.([]any)
	if !ok {
		return f(v)
	}
	var out []any
	for i, e := range list {
		ne, changed := f(e)
		if !changed {
			continue
		}
		if out == nil {
			out = slices.Clone(list)
		}
		out[i] = ne
	}
	if out == nil {
		return v, false
	}
	return out, true
}

// object masks m (when masking) and appends the paths of personal data to
// found. It copies m only when something in it changes, and reports whether
// it did.
func object(m map[string]any, path string, found *[]string, masking bool) (map[string]any, bool) {
	return walk(m, path, found, masking, nil)
}

// walk is object with a first say for part over each key of m: where part
// is nil or answers !ok, the key's value is masked by the key's kind.
//
// A key is data too ({"invitees": {"bob@example.com": "accepted"}}): one
// that holds personal data (Key) is found at its masked name (keyNames,
// suffixed as it is renamed), and, when masking, renamed to it.
func walk(m map[string]any, path string, found *[]string, masking bool,
	part func(key string, v any, found *[]string, masking bool) (any, bool, bool)) (map[string]any, bool) {
	var out map[string]any
	names := keyNames(m)
	for k, v := range m {
		name, personal := names[k]
		if personal {
			*found = append(*found, join(path, name))
		} else {
			name = k
		}
		var nv any
		changed, ok := false, false
		if part != nil {
			nv, changed, ok = part(k, v, found, masking)
		}
		if !ok {
			kind := keyKind(k)
			if kind == "" {
				kind = keptItemKind(path, k)
			}
			nv, changed = value(kind, v, join(path, name), found, masking)
		}
		if !changed {
			continue
		}
		if out == nil {
			out = maps.Clone(m)
		}
		out[k] = nv
	}
	if masking && len(names) > 0 {
		if out == nil {
			out = maps.Clone(m)
		}
		renameKeys(out, names)
	}
	if out == nil {
		return m, false
	}
	return out, true
}

// keptItemKind is the kind of the key k of an object at path that its
// name alone does not tell (keyKind ""): a WhatsApp message c360 keeps as
// Meta sent it, in the event property item (path item; properties.item
// in a dead letter's event), names its sender's number under from
// ("from": "14155550100", the wa_id: digits), and so may a quoted
// message's context. There, and only there, from may name a phone
// (maybePhone: masked when the value has a phone number's shape);
// elsewhere a from is a date, a time or a page ({"period": {"from":
// "20240301"}}, "from": 1709251200) and says nothing.
func keptItemKind(path, k string) Kind {
	if k != "from" {
		return ""
	}
	for _, item := range [...]string{"item", "properties.item"} {
		if rest, ok := strings.CutPrefix(path, item); ok && (rest == "" || rest[0] == '.') {
			return maybePhone
		}
	}
	return ""
}

// Key masks the personal data written in a trait's or property's name
// (an invitee's address, a phone number as a key) as a value under a key
// that says nothing is masked (KeyText), and reports whether it held any.
// A number alone is not a phone number there: a key of digits is an id or
// a time (1700000000, an EAN 4006381333931) unless written as a phone
// number is, with a +, in three groups or with parentheses
// (+14155550100, (415) 555-0100). Most names hold none, and cost a scan of
// their bytes.
func Key(k string) (string, bool) {
	m, kinds := KeyText(k, true)
	return m, len(kinds) > 0
}

// KeyText is Key as Text reports: the name masked when masking is set,
// and the kinds of personal data found either way.
func KeyText(k string, masking bool) (string, []string) {
	if whatsAppID(k) {
		// A WhatsApp message id as a key (statuses by message) is one as
		// a value is.
		if !masking {
			return k, []string{string(KindPhone)}
		}
		m, _ := ProviderID(k)
		return m, []string{string(KindPhone)}
	}
	return text(k, masking, bareInWords)
}

// keyNames returns the names the keys of m that hold personal data (Key)
// are found at and renamed to, nil when none does: their masked names.
// Two keys may mask alike (bob@example.com and bill@example.com are both
// b***@example.com), or like a key that is there: a name already taken
// gets " (2)", " (3)", ... so that no value is lost. The keys are taken in
// sorted order, so the same object is always named alike.
func keyNames(m map[string]any) map[string]string {
	var held []string
	for k := range m {
		if _, personal := Key(k); personal {
			held = append(held, k)
		}
	}
	if len(held) == 0 {
		return nil
	}
	slices.Sort(held)
	names := make(map[string]string, len(held))
	for _, k := range held {
		names[k] = "" // moves: its name is free for another
	}
	used := make(map[string]bool, len(held))
	for _, k := range held {
		base, _ := Key(k)
		name := base
		for n := 2; ; n++ {
			_, there := m[name]
			_, moves := names[name]
			if !used[name] && (!there || moves) {
				break
			}
			name = base + " (" + strconv.Itoa(n) + ")"
		}
		names[k], used[name] = name, true
	}
	return names
}

// renameKeys renames the keys of out named in names to their names.
func renameKeys(out map[string]any, names map[string]string) {
	values := make(map[string]any, len(names))
	for k := range names {
		values[k] = out[k]
		delete(out, k)
	}
	for k, name := range names {
		out[name] = values[k]
	}
}

// value masks v, known by its key to be of kind k ("" if the key says
// nothing; maybePhone or maybeEmail if it may name one: ambiguousKind),
// at path. It reports whether the value changed; without masking it only
// appends to found.
func value(k Kind, v any, path string, found *[]string, masking bool) (any, bool) {
	switch v := v.(type) {
	case nil:
		return nil, false
	case string:
		if whatsAppID(v) {
			// A WhatsApp message id (a reply's or a reaction's target,
			// replyTo, reactionTo) encodes the customer's number whatever
			// its key: masked as Message.providerId is.
			*found = append(*found, path)
			if !masking {
				return v, false
			}
			m, _ := ProviderID(v)
			return m, true
		}
		if k == maybePhone || k == maybeEmail {
			k = ambiguousKind(k, v)
		}
		if k == "" {
			// A key that says nothing: its addresses and phone numbers are
			// masked, a whole one included, but a bare run of digits is an
			// id or a time there, not a phone number (text's bare).
			m, kinds := text(v, masking, bareInWords)
			if len(kinds) == 0 {
				return v, false
			}
			*found = append(*found, path)
			return m, masking
		}
		if v == "" {
			return v, false
		}
		kind := k
		*found = append(*found, path)
		if !masking {
			return v, false
		}
		return mask(kind, v), true
	case map[string]any:
		if k == "" || k == maybePhone || k == maybeEmail {
			// An object under a key that may name a phone (mobile: {os,
			// version}) is read key by key.
			return object(v, path, found, masking)
		}
		// An address object, say: masked whole.
		*found = append(*found, path)
		if !masking {
			return v, false
		}
		return Redacted, true
	case []any:
		return eachOf(v, func(e any) (any, bool) { return value(k, e, path, found, masking) })
	case bool:
		// A flag says nothing of anyone, whatever its key (is_mobile,
		// address_verified).
		return v, false
	default:
		// Numbers: personal only by their key (a phone stored as a
		// number, a zip code), and never an email address; under a
		// phone's key, not one below 1000 (phones: 2 is a count, is_mobile:
		// 1 a flag), which no phone number is.
		if k == "" || k == KindEmail || k == maybeEmail || k == KindPhone && smallNumber(v) ||
			k == maybePhone && !numberShape(v) {
			return v, false
		}
		*found = append(*found, path)
		if !masking {
			return v, false
		}
		if k == KindPhone || k == maybePhone {
			return Phone(toString(v)), true
		}
		return Redacted, true
	}
}

// smallNumber reports whether the number v is below 1000 either way.
func smallNumber(v any) bool {
	f, err := strconv.ParseFloat(toString(v), 64)
	return err == nil && f > -1000 && f < 1000
}

func toString(v any) string {
	switch v := v.(type) {
	case float64:
		return strconv.FormatFloat(v, 'f', -1, 64)
	case int64:
		return strconv.FormatInt(v, 10)
	case int:
		return strconv.Itoa(v)
	}
	return fmt.Sprint(v)
}
