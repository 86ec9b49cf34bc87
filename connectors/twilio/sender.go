package twilio

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"time"

	twclient "github.com/twilio/twilio-go/client"
	twapi "github.com/twilio/twilio-go/rest/api/v2010"

	"github.com/c360dev/c360"
)

var _ c360.MessageSender = (*Sender)(nil)

// DefaultSendTimeout bounds one call to Twilio's Messages API.
const DefaultSendTimeout = 10 * time.Second

// Sender sends SMS and WhatsApp messages through Twilio's Messages API with
// each workspace's own credentials and senders.
type Sender struct {
	publicURL string
	http      *http.Client
	logger    *slog.Logger
}

// SenderConfig configures a Sender.
type SenderConfig struct {
	// PublicURL is the external base URL of c360 (C360_PUBLIC_URL); every
	// message asks Twilio to call PublicURL/webhooks/twilio/{slug}/status.
	PublicURL string
	// APIURL, when set, replaces Twilio's REST base URL (C360_TWILIO_API_URL),
	// e.g. an httptest stand-in: requests to *.twilio.com go there instead.
	APIURL string
	// Timeout bounds one call to Twilio; 0 means DefaultSendTimeout.
	Timeout time.Duration
	// Transport carries the requests; nil means http.DefaultTransport.
	Transport http.RoundTripper
	Logger    *slog.Logger
}

// NewSender returns a Sender, or an error when APIURL is not an absolute URL.
func NewSender(cfg SenderConfig) (*Sender, error) {
	rt := cfg.Transport
	if rt == nil {
		rt = http.DefaultTransport
	}
	if cfg.APIURL != "" {
		u, err := url.Parse(cfg.APIURL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return nil, fmt.Errorf("twilio API URL %q: want an absolute http(s) URL", cfg.APIURL)
		}
		rt = &rewriteTransport{base: u, next: rt}
	}
	timeout := cfg.Timeout
	if timeout <= 0 {
		timeout = DefaultSendTimeout
	}
	logger := cfg.Logger
	if logger == nil {
		logger = slog.Default()
	}
	return &Sender{
		publicURL: strings.TrimRight(cfg.PublicURL, "/"),
		http: &http.Client{
			Transport: rt,
			Timeout:   timeout,
			// As twilio-go's own client: an answer is final, redirects are not followed.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
		logger: logger,
	}, nil
}

// CheckSender returns SendMessage's refusal before any request: EINVALID
// when the workspace has no Twilio credentials or no sender for the channel.
func (s *Sender) CheckSender(ws *c360.Workspace, channel string) error {
	_, err := senderParams(ws, channel)
	return err
}

// senderParams returns the message's parameters that name the sender and
// the channel, or CheckSender's refusal.
func senderParams(ws *c360.Workspace, channel string) (*twapi.CreateMessageParams, error) {
	if ws.TwilioAccountSID == "" || ws.TwilioAuthToken == "" {
		return nil, c360.Errorf(c360.EINVALID, "workspace %q has no Twilio credentials: set them with c360 workspace update --twilio-account-sid SID --twilio-auth-token TOKEN", ws.Slug)
	}
	params := &twapi.CreateMessageParams{}
	switch channel {
	case c360.ChannelSMS:
		switch {
		case ws.TwilioSMSFrom != "":
			params.SetFrom(ws.TwilioSMSFrom)
		case ws.TwilioMessagingServiceSID != "":
			params.SetMessagingServiceSid(ws.TwilioMessagingServiceSID)
		default:
			return nil, c360.Errorf(c360.EINVALID, "workspace %q has no SMS sender: set --twilio-sms-from or --twilio-messaging-service-sid with c360 workspace update", ws.Slug)
		}
	case c360.ChannelWhatsApp:
		switch {
		case ws.TwilioWhatsAppFrom != "":
			params.SetFrom(whatsappPrefix + strings.TrimPrefix(ws.TwilioWhatsAppFrom, whatsappPrefix))
		case ws.TwilioMessagingServiceSID != "":
			params.SetMessagingServiceSid(ws.TwilioMessagingServiceSID)
		default:
			return nil, c360.Errorf(c360.EINVALID, "workspace %q has no WhatsApp sender: set --twilio-whatsapp-from or --twilio-messaging-service-sid with c360 workspace update", ws.Slug)
		}
	default:
		return nil, c360.Errorf(c360.EINVALID, "Twilio sends sms and whatsapp, not %q", channel)
	}
	return params, nil
}

// StatusCallbackURL is the StatusCallback of a message c360 recorded as
// messageID: the workspace's status webhook, naming the message in its
// query. Twilio signs the full URL it calls, query included, so a callback
// that names a message is Twilio's own (ValidSignature), and it reaches
// the message even when Twilio's answer to the send was lost.
func StatusCallbackURL(publicURL, slug string, messageID int64) string {
	u := strings.TrimRight(publicURL, "/") + "/webhooks/twilio/" + url.PathEscape(slug) + "/status"
	if messageID != 0 {
		u += "?" + url.Values{statusMessageParam: {strconv.FormatInt(messageID, 10)}}.Encode()
	}
	return u
}

// statusMessageParam is the status callback URL's query parameter that
// names c360's id of the message.
const statusMessageParam = "message"

// SendMessage sends m from the workspace's sender for m's channel: its
// from-number for the channel, else its Messaging Service, asking Twilio to
// report the status at StatusCallbackURL. It refuses as CheckSender does,
// before any request. A refusal of Twilio's (4xx) is a *c360.NotSentError,
// and so is a send never attempted; a server error or no answer leaves the
// outcome unknown (EUNAVAILABLE).
//
// twilio-go's requests take no context, so a cancelled caller does not abort
// a send in flight: the call ends when Twilio answers or the timeout passes.
func (s *Sender) SendMessage(ctx context.Context, ws *c360.Workspace, m c360.OutboundMessage) (*c360.SentMessage, error) {
	params, err := senderParams(ws, m.Channel)
	if err != nil {
		return nil, &c360.NotSentError{Err: err}
	}
	if m.Channel == c360.ChannelWhatsApp {
		params.SetTo(whatsappPrefix + m.To)
	} else {
		params.SetTo(m.To)
	}
	params.SetBody(m.Body)
	params.SetStatusCallback(StatusCallbackURL(s.publicURL, ws.Slug, m.MessageID))
	if err := ctx.Err(); err != nil {
		return nil, &c360.NotSentError{Err: fmt.Errorf("send message: %w", err)}
	}

	c := &twclient.Client{Credentials: twclient.NewCredentials(ws.TwilioAccountSID, ws.TwilioAuthToken), HTTPClient: s.http}
	c.SetAccountSid(ws.TwilioAccountSID)
	msg, err := twapi.NewApiServiceWithClient(c).CreateMessage(params)
	if err != nil {
		return nil, s.interpret(ws, err)
	}
	if msg.Sid == nil || *msg.Sid == "" {
		s.logger.Warn("twilio answered without a message SID", "workspace", ws.Slug)
		return nil, c360.Errorf(c360.EUNAVAILABLE, "Twilio answered without a message SID; the message may or may not have been sent")
	}
	out := &c360.SentMessage{ProviderID: *msg.Sid, Status: "queued"}
	if msg.Status != nil && *msg.Status != "" {
		out.Status = *msg.Status
	}
	return out, nil
}

// errUnsubscribed is Twilio's error for a recipient who replied STOP to
// the sender: Twilio refuses every message to them until they reply START.
const errUnsubscribed = 21610

// Twilio's rate limits that it answers with 400 as often as with 429: the
// account's requests, and the sender's queue of messages (a sender takes
// so many per second; Twilio queues at most some hours' worth).
const (
	errTooManyRequests = 20429
	errQueueFull       = 21611
)

// setupFaults says, for Twilio's error codes of refusals of the
// workspace's setup (c360.SetupRefusal), what of it Twilio refused.
var setupFaults = map[int]string{
	20003: "its credentials",
	20404: "its Account SID (or its Messaging Service), which Twilio does not find",
	21222: "its Account SID, which holds characters no Account SID holds",
	21224: "its auth token, which holds characters no auth token holds",
	21212: "its sender, which is not a valid phone number, short code or sender ID",
	21603: "its sender: no From number or Messaging Service",
	21701: "its Messaging Service, which does not exist",
	21704: "its Messaging Service, which holds no sender",
	63007: "its WhatsApp sender, which has no WhatsApp channel",
}

// destinationFaults says, for Twilio's error codes that refuse the sender
// for this recipient or for the account alike (Twilio's descriptions of
// 21606, "not a valid message-capable Twilio phone number for this
// destination/account", and 21659, "not a Twilio phone number or Short
// Code country mismatch", and 21703's message, "no phone number available
// to send a message to this phone number"), what the caller may do: the
// same message to this recipient would be refused again, so they refuse
// the message (not c360.SetupRefusal), with Twilio's text and this.
var destinationFaults = map[int]string{
	21606: "the workspace's sender cannot send to this recipient (a short code to another country, a number not capable of messaging there), or is not one of the account's message-capable numbers",
	21659: "the workspace's sender cannot send to this recipient (a short code of another country), or is not one of the account's Twilio numbers",
	21703: "no sender of the workspace's Messaging Service can send to this recipient (its country), or the service has none available",
}

// interpret turns a Twilio API error into a domain error whose message the
// caller can act on, each a *c360.NotSentError, since Twilio took nothing:
// a rate limit (429, or 20429 or 21611 with 400) is RATE_LIMITED; a refusal
// of the workspace's Twilio setup (401, 403 and 404, and the codes of
// c360.SetupRefusal: its credentials, account, sender or Messaging
// Service; twilio-go's own refusal of a malformed Account SID or auth
// token too) is UNAVAILABLE, saying that the setup is at fault and an
// admin must fix it; each of those lasts a moment, so it does not use up
// the send's key. Any other refusal (4xx) is of the message itself
// (Permanent): BAD_USER_INPUT with Twilio's message and error code,
// FORBIDDEN for an unsubscribed recipient. Anything else (5xx, timeouts,
// connection errors) is UNAVAILABLE, the outcome unknown. Twilio's message
// reaches the answer with its Account SIDs redacted (redactSIDs). The
// cause is logged here, without credentials or the Account SID (a
// connection error's URL names it), because the domain error does not
// carry it.
func (s *Sender) interpret(ws *c360.Workspace, err error) error {
	var (
		status, code int
		message      string
		restErr      *twclient.TwilioRestError
		v1Err        *twclient.RestErrorV1
	)
	switch {
	case errors.As(err, &restErr):
		status, code, message = restErr.Status, restErr.Code, restErr.Message
	case errors.As(err, &v1Err):
		status, code, message = v1Err.HttpStatusCode, v1Err.Code, v1Err.Message
	default:
		// A *url.Error's text holds the request's URL, which holds the
		// Account SID: log its cause alone.
		var urlErr *url.Error
		if errors.As(err, &urlErr) {
			err = urlErr.Err
		}
		s.logger.Warn("twilio unreachable", "workspace", ws.Slug, "error", redactSIDs(err.Error()))
		return c360.Errorf(c360.EUNAVAILABLE, "Twilio did not answer; the message may or may not have been sent")
	}
	// Twilio's message may name the account (20404 quotes the resource,
	// /2010-04-01/Accounts/AC…/Messages.json): the answer goes to whoever
	// sends, who need not know it.
	message = redactSIDs(message)
	if message == "" {
		message = "no message"
	}
	refused := func(err error) *c360.NotSentError {
		out := &c360.NotSentError{Err: err}
		if code != 0 {
			out.ProviderCode = strconv.Itoa(code)
		}
		return out
	}
	refusal := status >= 400 && status < 500
	setup := status == http.StatusUnauthorized || status == http.StatusForbidden || status == http.StatusNotFound ||
		refusal && c360.SetupRefusal(strconv.Itoa(code))
	if setup {
		s.logger.Warn("twilio refused the workspace's setup", "workspace", ws.Slug, "status", status, "twilioCode", code)
	} else {
		s.logger.Info("twilio refused a message", "workspace", ws.Slug, "status", status, "twilioCode", code)
	}
	switch {
	case status == http.StatusTooManyRequests || refusal && (code == errTooManyRequests || code == errQueueFull):
		return refused(c360.Errorf(c360.ERATELIMITED, "Twilio is rate limiting this account or sender: %s (Twilio error %d); send it again later", message, code))
	case setup:
		// The workspace's setup, not the message: once an admin fixes
		// it, the same message is taken.
		fault, ok := setupFaults[code]
		if !ok {
			fault = "its credentials or account"
		}
		return refused(c360.Errorf(c360.EUNAVAILABLE, "the message was not sent: Twilio refused the workspace's Twilio setup, not the message: %s: %s (Twilio error %d); an admin must correct the workspace's Twilio settings (c360 workspace update), then send it again (with the same messageId, if it had one)",
			fault, message, code))
	case refusal && code == errUnsubscribed:
		// Twilio knew of an opt-out c360 did not (one sent before c360 was
		// set up, or to another of the account's senders): record it, so
		// the next sender is refused before asking Twilio.
		out := refused(c360.Errorf(c360.EFORBIDDEN, "the customer unsubscribed from this sender (replied STOP), so Twilio refuses to message them until they reply START: %s (Twilio error %d); their opt-out is recorded", message, code))
		out.OptedOut, out.Permanent = true, true
		return out
	case refusal:
		// The message itself is refused (a number that is not a phone,
		// a body Twilio will not take, a recipient the sender cannot
		// reach): sending it again changes nothing.
		if fault, ok := destinationFaults[code]; ok {
			out := refused(c360.Errorf(c360.EINVALID, "Twilio refused the message: %s (Twilio error %d): %s; if Twilio refuses every recipient, an admin must correct the workspace's Twilio settings (c360 workspace update), then send it with a new messageId",
				message, code, fault))
			out.Permanent = true
			return out
		}
		out := refused(c360.Errorf(c360.EINVALID, "Twilio refused the message: %s (Twilio error %d)", message, code))
		out.Permanent = true
		return out
	}
	return c360.Errorf(c360.EUNAVAILABLE, "Twilio failed: %s (Twilio error %d); the message may or may not have been sent", message, code)
}

// accountSIDs matches a Twilio Account SID: AC and 32 hex digits.
var accountSIDs = regexp.MustCompile(`AC[0-9a-fA-F]{32}`)

// redactSIDs replaces the Account SIDs in text from Twilio or about a
// request to it, before the text reaches an answer or a log.
func redactSIDs(text string) string {
	return accountSIDs.ReplaceAllLiteralString(text, "AC[redacted]")
}

// rewriteTransport sends requests for Twilio's hosts to another base URL
// (an httptest stand-in). twilio-go builds absolute https://api.twilio.com
// URLs with no way to change the base, so the rewrite happens on the wire.
type rewriteTransport struct {
	base *url.URL
	next http.RoundTripper
}

// RoundTrip implements http.RoundTripper.
func (t *rewriteTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	host := req.URL.Hostname()
	if host != "twilio.com" && !strings.HasSuffix(host, ".twilio.com") {
		return t.next.RoundTrip(req)
	}
	r := req.Clone(req.Context())
	r.URL.Scheme, r.URL.Host = t.base.Scheme, t.base.Host
	r.URL.Path = strings.TrimRight(t.base.Path, "/") + req.URL.Path
	r.URL.RawPath = ""
	r.Host = ""
	return t.next.RoundTrip(r)
}
