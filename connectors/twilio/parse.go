package twilio

import (
	"maps"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/c360dev/c360"
	"github.com/c360dev/c360/identity"
)

// Source is the event source of everything this connector records.
const Source = "twilio"

// whatsappPrefix marks a WhatsApp address in Twilio's From and To.
const whatsappPrefix = "whatsapp:"

// maxMedia is the most media Twilio attaches to one message.
const maxMedia = 10

// singleParams are the parameters Twilio sends once, which the parsers read
// as one value. A request repeating one is refused: Twilio's signature is
// the plain concatenation of names and values, so a signed Body ending in
// "From+1…" signs the same string as a shorter Body and From sent twice,
// and reading the first From would store the message on a number the
// signed request never named. MediaUrlN and MediaContentTypeN may repeat:
// every value is read (media), and they cannot move a
// message to another customer.
var singleParams = []string{
	"MessageSid", "SmsMessageSid", "SmsSid", "AccountSid", "MessagingServiceSid",
	"From", "To", "Body", "NumMedia", "WaId", "ProfileName",
	"ButtonText", "ButtonPayload", "OptOutType",
	"MessageStatus", "SmsStatus", "ErrorCode",
}

// readParams are the parameters the parsers read (ParseInbound,
// ParseStatus), besides the indexed ones (indexedParams).
var readParams = []string{
	"MessageSid", "SmsMessageSid", "SmsSid", "From", "To", "Body", "NumMedia", "WaId", "ProfileName",
	"ButtonText", "ButtonPayload", "OptOutType", "MessageStatus", "SmsStatus", "ErrorCode",
}

// indexedParams are the parameters read with an index after their name:
// MediaUrl0, MediaContentType0, ... (media).
var indexedParams = []string{"MediaUrl", "MediaContentType"}

// continuedParams are the parameters Twilio documents for inbound messages
// and status callbacks whose names begin with the name of one of
// readParams: the sender's and the recipient's place. Twilio's other
// documented parameters (AccountSid, MessagingServiceSid, NumSegments,
// ApiVersion, Forwarded, FrequentlyForwarded, Latitude, Longitude,
// Address, Label, Referral…, OriginalRepliedMessage…, MessageType,
// ChannelMetadata, ExternalUserId, ErrorMessage, RawDlrDoneDate,
// Channel…, EventType, ...) begin with none.
var continuedParams = map[string]bool{
	"FromCity": true, "FromState": true, "FromZip": true, "FromCountry": true,
	"ToCity": true, "ToState": true, "ToZip": true, "ToCountry": true,
}

// checkSingle refuses a form that repeats a parameter of singleParams.
func checkSingle(form url.Values) error {
	for _, k := range singleParams {
		if len(form[k]) > 1 {
			return c360.Errorf(c360.EINVALID, "the parameter %s is sent more than once; Twilio sends it once", k)
		}
	}
	return nil
}

// checkNames refuses a parameter whose name Twilio would not send, the
// other way a signed request can be cut anew (checkSingle): a signed Body
// "STOPFrom+14155550100" and From "+14155550177" sign the same string as
// a Body "STOP", a From "+14155550100" and a parameter named
// "From+14155550177" with no value, and "Fromwhatsapp" valued ":+1…" does
// it for a WhatsApp From. Twilio's names are letters and digits, and a
// name that begins with the name of a parameter c360 reads is that
// parameter, one Twilio documents as its continuation (continuedParams),
// or, after MediaUrl and MediaContentType, an index. The names are checked
// in order, so that the refusal names the same one each time.
func checkNames(form url.Values) error {
	names := slices.Sorted(maps.Keys(form))
	for _, k := range names {
		if k == "" || strings.ContainsFunc(k, func(r rune) bool {
			return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9')
		}) {
			return c360.Errorf(c360.EINVALID, "the parameter %s is not one Twilio sends: Twilio's parameter names are letters and digits only", quoteName(k))
		}
	}
	for _, k := range names {
		if continuedParams[k] {
			continue
		}
		for _, p := range indexedParams {
			if rest, ok := strings.CutPrefix(k, p); ok && !allDigits(rest) {
				return c360.Errorf(c360.EINVALID, "the parameter %s is not one Twilio sends: after %s Twilio writes only an index (%s0, %s1, ...)", quoteName(k), p, p, p)
			}
		}
		for _, p := range readParams {
			if len(k) > len(p) && strings.HasPrefix(k, p) {
				return c360.Errorf(c360.EINVALID, "the parameter %s is not one Twilio sends: its name begins with %s, which c360 reads, and Twilio sends no such continuation of it", quoteName(k), p)
			}
		}
	}
	return nil
}

// quoteName quotes a parameter name for a refusal, cut to 64 bytes.
func quoteName(k string) string {
	if len(k) > 64 {
		return strconv.Quote(strings.ToValidUTF8(k[:64], "")) + "…"
	}
	return strconv.Quote(k)
}

// allDigits reports whether s is one or more ASCII digits.
func allDigits(s string) bool {
	return s != "" && !strings.ContainsFunc(s, func(r rune) bool { return r < '0' || r > '9' })
}

// checkForm refuses a form that could be a signed request cut anew
// (checkNames, checkSingle).
func checkForm(form url.Values) error {
	if err := checkNames(form); err != nil {
		return err
	}
	return checkSingle(form)
}

// ParseInbound turns the form of Twilio's inbound message webhook into a
// canonical message event: the sender's phone identifies the customer (SMS
// and WhatsApp alike), the channel comes from the "whatsapp:" prefix, and a
// consent keyword sets that channel's consent.
func ParseInbound(form url.Values, now time.Time) (*c360.Event, error) {
	if err := checkForm(form); err != nil {
		return nil, err
	}
	sid := first(form, "MessageSid", "SmsMessageSid", "SmsSid")
	if err := checkSID(sid); err != nil {
		return nil, err
	}
	channel, from, err := splitAddress(form.Get("From"))
	if err != nil {
		return nil, c360.Errorf(c360.EINVALID, "From: %s", c360.ErrorMessage(err))
	}
	body := form.Get("Body")
	urls, types := media(form)
	ev := &c360.Event{
		Type:       c360.EventMessage,
		Source:     Source,
		DedupeKey:  sid,
		Identities: []c360.Identity{{Type: "phone", Value: from}},
		Properties: map[string]any{},
		OccurredAt: now,
		ReceivedAt: now,
		Message: &c360.MessageInput{
			Channel:    channel,
			Direction:  c360.DirectionInbound,
			Body:       body,
			MediaURLs:  urls,
			ProviderID: sid,
			Status:     "received",
		},
	}
	if _, to, err := splitAddress(form.Get("To")); err == nil {
		ev.Properties["to"] = to
	}
	if waID := strings.TrimSpace(form.Get("WaId")); channel == c360.ChannelWhatsApp && waID != "" && len(waID) <= 64 {
		ev.Properties["waId"] = waID
	}
	if name := strings.TrimSpace(form.Get("ProfileName")); name != "" {
		ev.TraitsIfAbsent = map[string]any{"name": name}
		ev.Properties["profileName"] = name
	}
	if len(types) > 0 {
		ev.Properties["mediaContentTypes"] = types
	}
	// A tap on a WhatsApp quick-reply or button arrives with its title as
	// the Body: words the business wrote ("Cancel" under a reminder, "Yes"
	// under a question), not a keyword the customer typed. Only Twilio's
	// own opt-out decision (OptOutType) is taken from such a message.
	keywordText := body
	if form.Get("ButtonPayload") != "" || form.Get("ButtonText") != "" {
		keywordText = ""
	}
	keyword, status := consentKeyword(keywordText, form.Get("OptOutType"))
	if keyword != "" {
		ev.Properties["keyword"] = keyword
	}
	if status != "" {
		ev.Consent = &c360.ConsentInput{Channel: channel, Status: status}
	}
	return ev, nil
}

// ParseStatus turns the form of Twilio's message status callback into a
// message_status event for the customer the message was sent to. Its dedupe
// key is "<MessageSid>:<status>": each status is recorded once. It needs a
// MessageSid and a MessageStatus; the To, when c360 can read it, gives the
// event its phone identity and channel.
func ParseStatus(form url.Values, now time.Time) (*c360.Event, error) {
	if err := checkForm(form); err != nil {
		return nil, err
	}
	sid := first(form, "MessageSid", "SmsSid")
	if err := checkSID(sid); err != nil {
		return nil, err
	}
	status := strings.ToLower(strings.TrimSpace(first(form, "MessageStatus", "SmsStatus")))
	if !validStatus(status) {
		return nil, c360.Errorf(c360.EINVALID, "MessageStatus: want a Twilio message status")
	}
	code := strings.TrimSpace(form.Get("ErrorCode"))
	if len(code) > 16 {
		return nil, c360.Errorf(c360.EINVALID, "ErrorCode is too long")
	}
	props := map[string]any{"messageSid": sid, "status": status}
	if code != "" {
		props["errorCode"] = code
	}
	ev := &c360.Event{
		Type:       c360.EventMessageStatus,
		Source:     Source,
		DedupeKey:  sid + ":" + status,
		Properties: props,
		OccurredAt: now,
		ReceivedAt: now,
		Message: &c360.MessageInput{
			Direction:  c360.DirectionOutbound,
			ProviderID: sid,
			Status:     status,
			ErrorCode:  code,
		},
	}
	// A status finds its message by MessageSid alone, and the stored
	// message has its channel: a To c360 cannot read (missing, too long,
	// another channel's "rcs:…") is left out, as an inbound message's To
	// is, rather than refused. Twilio does not retry a 400, so a refusal
	// would lose the status.
	if channel, to, err := splitAddress(form.Get("To")); err == nil {
		ev.Identities = []c360.Identity{{Type: "phone", Value: to}}
		ev.Message.Channel = channel
	}
	return ev, nil
}

// consentKeyword returns the keyword a message carries and the consent it
// sets. Twilio's Advanced Opt-Out names the keyword class in OptOutType, so
// that custom keywords configured in Twilio count; otherwise the body is
// matched against the keywords every connector knows (c360.ConsentKeyword).
func consentKeyword(body, optOutType string) (keyword, status string) {
	word := c360.ConsentWord(body)
	switch strings.ToUpper(strings.TrimSpace(optOutType)) {
	case "STOP":
		return orDefault(word, "STOP"), c360.ConsentOptedOut
	case "START":
		return orDefault(word, "START"), c360.ConsentOptedIn
	case "HELP":
		return orDefault(word, "HELP"), ""
	}
	return c360.ConsentKeyword(body)
}

// splitAddress returns the channel and phone number of a Twilio address:
// "whatsapp:+14155550100" is WhatsApp, "+14155550100" is SMS. A WhatsApp
// address's number is the one WhatsApp's form stands for
// (identity.WhatsAppNumber: Twilio relays a Mexican mobile as
// "whatsapp:+521…", the number being "+52…"). The number is normalized to
// E.164 by ingest.
func splitAddress(addr string) (channel, phone string, err error) {
	addr = strings.TrimSpace(addr)
	switch {
	case addr == "":
		return "", "", c360.Errorf(c360.EINVALID, "missing address")
	case len(addr) > 64:
		return "", "", c360.Errorf(c360.EINVALID, "address is too long")
	case strings.HasPrefix(strings.ToLower(addr), whatsappPrefix):
		phone = identity.WhatsAppNumber(strings.TrimSpace(addr[len(whatsappPrefix):]))
		channel = c360.ChannelWhatsApp
	case strings.Contains(addr, ":"):
		return "", "", c360.Errorf(c360.EINVALID, "unsupported channel %q: c360 takes SMS and WhatsApp", addr[:strings.Index(addr, ":")])
	default:
		phone, channel = addr, c360.ChannelSMS
	}
	if phone == "" {
		return "", "", c360.Errorf(c360.EINVALID, "missing phone number")
	}
	return channel, phone, nil
}

// media returns the URLs of MediaUrl0..MediaUrl{NumMedia-1}, at most ten,
// and the content types of MediaContentType0..{NumMedia-1} beside them
// (types is nil when none is given). Every value of a repeated MediaUrlN
// is read, a repeat of one value once: the signature covered them all
// (ValidSignature). Each URL is paired with its index's type, so that a
// repeated URL under one type does not shift the types of later indexes:
// the index's one type goes with each of its URLs, several go in order.
func media(form url.Values) (urls []string, types []any) {
	n, err := strconv.Atoi(strings.TrimSpace(form.Get("NumMedia")))
	if err != nil || n <= 0 {
		return nil, nil
	}
	typed := false
	for i := range min(n, maxMedia) {
		index := strconv.Itoa(i)
		ts := slices.DeleteFunc(sortedValues(form["MediaContentType"+index], true), func(t string) bool { return t == "" || len(t) > 128 })
		for j, u := range sortedValues(form["MediaUrl"+index], true) {
			if u = strings.TrimSpace(u); u == "" || len(u) > 2048 || len(urls) == maxMedia {
				continue
			}
			t := ""
			switch {
			case j < len(ts):
				t = ts[j]
			case len(ts) == 1:
				t = ts[0]
			}
			urls, types = append(urls, u), append(types, t)
			typed = typed || t != ""
		}
	}
	if !typed {
		types = nil
	}
	return urls, types
}

// checkSID refuses a missing or implausible message SID: it becomes a
// dedupe key and a provider id.
func checkSID(sid string) error {
	if sid == "" {
		return c360.Errorf(c360.EINVALID, "missing MessageSid")
	}
	if len(sid) > 64 {
		return c360.Errorf(c360.EINVALID, "MessageSid is too long")
	}
	for _, r := range sid {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_' || r == '-') {
			return c360.Errorf(c360.EINVALID, "MessageSid has unexpected characters")
		}
	}
	return nil
}

// validStatus accepts Twilio's lowercase status words (queued, sent,
// partially_delivered...). Unknown words are stored but never move a message.
func validStatus(s string) bool {
	if s == "" || len(s) > 32 {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r == '_') {
			return false
		}
	}
	return true
}

// first returns the first non-empty value among the keys.
func first(form url.Values, keys ...string) string {
	for _, k := range keys {
		if v := strings.TrimSpace(form.Get(k)); v != "" {
			return v
		}
	}
	return ""
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}
