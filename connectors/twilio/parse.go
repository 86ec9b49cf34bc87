package twilio

import (
	"maps"
	"net/url"
	"slices"
	"sort"
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

// channelPrefixes are the channel prefixes Twilio writes before an
// address in From and To ("whatsapp:+1…", "messenger:1234…", "rcs:…"),
// whatever follows them. Any other run of lowercase letters and a colon
// counts as a prefix when a '+' follows it, so that a channel Twilio adds
// later with phone-number addresses is covered too.
var channelPrefixes = []string{"whatsapp", "messenger", "rcs"}

// checkSingle refuses a form that repeats a parameter of singleParams.
func checkSingle(form url.Values) error {
	for _, k := range singleParams {
		if len(form[k]) > 1 {
			return c360.Errorf(c360.EINVALID, "the parameter %s is sent more than once; Twilio sends it once", k)
		}
	}
	return nil
}

// checkNames refuses a parameter whose name Twilio would not send:
// Twilio's names are letters and digits. The names are checked in order,
// so that the refusal names the same one each time.
func checkNames(form url.Values) error {
	for _, k := range slices.Sorted(maps.Keys(form)) {
		if k == "" || strings.ContainsFunc(k, func(r rune) bool {
			return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9')
		}) {
			return c360.Errorf(c360.EINVALID, "the parameter %s is not one Twilio sends: Twilio's parameter names are letters and digits only", quoteName(k))
		}
	}
	return nil
}

// checkRecut refuses a request that may be a signed request cut anew to
// move its sender or recipient. Twilio signs the URL followed by each
// parameter's name and value, names sorted, with nothing between them, so
// the same signed string can be split into other parameters: a Body
// "STOPFrom+14155550100FromCity" from +14155550177 signs the same string
// as Body "STOP", From "+14155550100" and FromCity "From+14155550177".
// Whatever the cut, the genuine "From" and its address (and "To" and
// its) are still in the signed string, no longer at the start of the From
// (To) parameter: in another parameter's name or value, or across two of
// them. So the string the signature covers, the URL's query (query) and
// then the parameters as ValidSignature joins them, must hold "From" or
// "To" directly followed by the start of an address (isAddressStart) only
// where the From or To parameter itself begins. Body is no exception: a
// cut can put the genuine From into the Body and take the new one from a
// parameter that sorts after From (a WhatsApp ProfileName).
func checkRecut(query string, form url.Values) error {
	type segment struct {
		param string
		start int
		name  bool // the parameter's name, else its value
		query bool // the URL's query, else a parameter
	}
	var b strings.Builder
	var segs []segment
	add := func(param, text string, name bool) {
		segs = append(segs, segment{param: param, start: b.Len(), name: name})
		b.WriteString(text)
	}
	if query != "" {
		segs = append(segs, segment{query: true})
		b.WriteString(query)
	}
	for _, k := range slices.Sorted(maps.Keys(form)) {
		for _, v := range sortedValues(form[k], false) {
			add(k, k, true)
			add(k, v, false)
		}
	}
	s := b.String()
	for i := 0; i < len(s); i++ {
		var word string
		switch {
		case strings.HasPrefix(s[i:], "From"):
			word = "From"
		case strings.HasPrefix(s[i:], "To"):
			word = "To"
		default:
			continue
		}
		if !isAddressStart(s[i+len(word):]) {
			continue
		}
		// The segment i is in: the last to start at or before it (an
		// empty value starts where the next name does).
		j := sort.Search(len(segs), func(j int) bool { return segs[j].start > i }) - 1
		if g := segs[j]; g.start == i && g.name && g.param == word {
			continue // the From or To parameter itself
		}
		where := "the parameter " + quoteName(segs[j].param)
		if segs[j].query {
			where = "the URL's query"
		}
		return c360.Errorf(c360.EINVALID, "%s holds %q directly followed by an address, which only Twilio's own %s parameter does: the signed request may have been cut anew to move its %s", where, word, word, map[string]string{"From": "sender", "To": "recipient"}[word])
	}
	return nil
}

// isAddressStart reports whether s begins as a Twilio address does: '+'
// and a digit, a channel prefix Twilio uses (channelPrefixes) and a
// colon, or lowercase letters, a colon and a '+'.
func isAddressStart(s string) bool {
	if len(s) >= 2 && s[0] == '+' && s[1] >= '0' && s[1] <= '9' {
		return true
	}
	n := 0
	for n < len(s) && s[n] >= 'a' && s[n] <= 'z' {
		n++
	}
	if n == 0 || n == len(s) || s[n] != ':' {
		return false
	}
	return slices.Contains(channelPrefixes, s[:n]) || strings.HasPrefix(s[n+1:], "+")
}

// quoteName quotes a parameter name for a refusal, cut to 64 bytes.
func quoteName(k string) string {
	if len(k) > 64 {
		return strconv.Quote(strings.ToValidUTF8(k[:64], "")) + "…"
	}
	return strconv.Quote(k)
}

// checkForm refuses a form that could be a signed request cut anew by its
// names alone (checkNames, checkSingle). The handler checks the whole
// signed string, the URL's query and the form, once (checkRecut): the
// query is not the parsers' to see.
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
