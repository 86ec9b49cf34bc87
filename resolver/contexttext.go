package resolver

import (
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/c360dev/c360"
	"github.com/c360dev/c360/pii"
)

// The text block of customerContext is built from sections in priority
// order. When it does not fit the budget, lines are dropped from the
// lowest-priority section first, each section losing its least important
// line first, and a last line says what was left out:
//
//  1. who: the customer, consent per channel, identities
//  2. messages of the open conversations (the oldest go first)
//  3. observations (unverified and older go first)
//  4. recent events (the least recent go first)
//  5. traits
//  6. merge notes (the oldest go first)
//
// Sections are dropped whole before any line of a higher one. If the first
// section alone does not fit, the block is cut at the budget.
const (
	maxTextBody   = 300 // characters of one message or observation in the text
	maxTextValue  = 120 // characters of one trait value
	maxTextTraits = 40
)

// contextText is the rendered text block and what it says about itself.
type contextText struct {
	text      string
	truncated bool
	// pii lists the personal data the text carries (identity.email,
	// traits.name, ...), masked or not.
	pii []string
}

// textSection is one section: a title line and its lines, most important
// first; show orders the kept lines for reading.
type textSection struct {
	name  string // what the trailing note calls its lines
	title string
	lines []string
	kept  int
	show  func([]string) []string
}

// renderContext renders cc for a prompt in at most budget characters,
// masking personal data unless sees.
func renderContext(cc *c360.CustomerContext, budget int, sees bool) contextText {
	var found []string
	record := func(kind string, paths ...string) {
		for _, p := range paths {
			found = append(found, strings.TrimSuffix(kind+"."+p, "."))
		}
	}
	mask := !sees
	// maskText masks free text and clips it to n characters: masked first, so
	// a clip never leaves part of a number unmasked.
	maskText := func(s, where string, n int) string {
		out, kinds := pii.Text(s, mask)
		for _, k := range kinds {
			record(where, k)
		}
		return clip(oneLine(out), n)
	}
	free := func(s string, where string) string { return maskText(s, where, maxTextBody) }
	identityValue := func(id c360.Identity) string {
		m, k := pii.Identity(id.Type, id.Value)
		if k == "" {
			return id.Value
		}
		record("identity", id.Type)
		if mask {
			return m
		}
		return id.Value
	}
	c := cc.Customer

	who := &textSection{name: "identity lines"}
	who.lines = append(who.lines, fmt.Sprintf("Customer %d (profile version %d, known since %s)", c.ID, c.Version, day(c.CreatedAt)))
	if len(cc.Consents) == 0 {
		who.lines = append(who.lines, "Consent: none recorded")
	} else {
		parts := make([]string, len(cc.Consents))
		for i, k := range cc.Consents {
			parts[i] = fmt.Sprintf("%s %s (%s)", k.Channel, k.Status, day(k.UpdatedAt))
		}
		who.lines = append(who.lines, "Consent: "+strings.Join(parts, "; "))
	}
	if len(cc.Identities) > 0 {
		parts := make([]string, len(cc.Identities))
		for i, id := range cc.Identities {
			parts[i] = id.Type + " " + identityValue(id.Identity)
		}
		who.lines = append(who.lines, "Identities: "+strings.Join(parts, "; "))
	}

	msgs := &textSection{name: "messages", show: reversed}
	var channels []string
	type line struct {
		at   time.Time
		text string
	}
	var all []line
	for _, cv := range cc.Conversations {
		last := "no messages yet"
		if cv.LastMessageAt != nil {
			last = "last " + minute(*cv.LastMessageAt)
		}
		channels = append(channels, fmt.Sprintf("%s (%s)", cv.Channel, last))
		for _, m := range cv.Messages {
			from := "customer"
			if m.Direction == c360.DirectionOutbound {
				from = "us" + outboundNote(m, maskText)
			}
			body := free(m.Body, "messages")
			if body == "" && len(m.MediaURLs) > 0 {
				body = fmt.Sprintf("(%d attachment(s))", len(m.MediaURLs))
			}
			all = append(all, line{m.CreatedAt, fmt.Sprintf("- [%s %s] %s: %s", m.Channel, minute(m.CreatedAt), from, body)})
		}
	}
	// Newest first: trimming drops the oldest; shown oldest first.
	slices.SortStableFunc(all, func(a, b line) int { return b.at.Compare(a.at) })
	for _, l := range all {
		msgs.lines = append(msgs.lines, l.text)
	}
	if len(channels) > 0 {
		msgs.title = "Open conversations: " + strings.Join(channels, ", ") + ". Last messages, oldest first:"
		if len(all) == 0 {
			msgs.lines = []string{"- (no messages)"}
		}
	}

	obs := &textSection{name: "observations", title: "Observations (verified first):"}
	for _, o := range cc.Observations {
		var meta []string
		if o.Source != "" {
			// A source is free text its recorder wrote, masked as such.
			meta = append(meta, "source "+maskText(o.Source, "observations.source", maxTextBody))
		}
		if o.Confidence != nil {
			meta = append(meta, "confidence "+strconv.FormatFloat(*o.Confidence, 'f', -1, 64))
		}
		meta = append(meta, "by "+string(o.RecordedByRole), day(o.CreatedAt))
		mark := ""
		if o.Verified {
			mark = "[verified] "
		}
		obs.lines = append(obs.lines, fmt.Sprintf("- %s%s (%s)", mark, free(o.Text, "observations"), strings.Join(meta, ", ")))
	}

	events := &textSection{name: "event groups", title: "Recent events (last 30 days):"}
	for _, e := range cc.Events {
		what := e.Type
		if e.Name != "" {
			// An app names its events as it likes, personal data included.
			what += " " + strconv.Quote(maskText(e.Name, "events.name", 80))
		}
		events.lines = append(events.lines, fmt.Sprintf("- %s ×%d, last %s", what, e.Count, minute(e.LastAt)))
	}

	traits := &textSection{name: "traits", title: "Traits:"}
	for _, k := range traitOrder(c.Traits) {
		v := c.Traits[k]
		masked, paths := pii.Value(k, v)
		// A trait's name may hold personal data itself (an address used
		// as a key): recorded, and shown, by its masked form.
		name, personal := pii.Key(k)
		if personal {
			record("traits", name)
		}
		record("traits."+name, paths...)
		if mask {
			k, v = name, masked
		}
		traits.lines = append(traits.lines, fmt.Sprintf("- %s: %s", clip(oneLine(k), 60), clip(oneLine(valueText(v)), maxTextValue)))
	}

	merges := &textSection{name: "merge notes", title: "Merges:"}
	for _, m := range cc.Merges {
		// The ledger holds the entries of the customers merged into this
		// one too (postgres mergesOfSQL): an entry is told relative to
		// "this one" only when this customer is one of its sides, else by
		// both of them. Another's merge has, as survivor, a customer since
		// merged into this one; another's split may have either side so.
		var s string
		switch {
		case m.Kind == c360.MergeKindSplit && m.SurvivorID == c.ID:
			s = fmt.Sprintf("split customer %d out of this one", m.MergedID)
		case m.Kind == c360.MergeKindSplit && m.MergedID == c.ID:
			s = fmt.Sprintf("split out of customer %d", m.SurvivorID)
		case m.Kind == c360.MergeKindSplit:
			s = fmt.Sprintf("customer %d split out of customer %d", m.MergedID, m.SurvivorID)
		case m.SurvivorID == c.ID:
			s = fmt.Sprintf("customer %d merged into this one", m.MergedID)
		case m.MergedID == c.ID:
			s = fmt.Sprintf("merged into customer %d", m.SurvivorID)
		default:
			s = fmt.Sprintf("customer %d merged into customer %d (since merged into this one)", m.MergedID, m.SurvivorID)
		}
		if m.Identity != nil {
			s += fmt.Sprintf(" via %s %s", m.Identity.Type, identityValue(*m.Identity))
		}
		if m.Reason != "" {
			// Reasons name the identifier that linked the customers.
			s += ": " + clip(free(m.Reason, "merges"), 120)
		}
		merges.lines = append(merges.lines, fmt.Sprintf("- %s %s (%s)", day(m.At), s, m.Actor))
	}

	sections := []*textSection{who, msgs, obs, events, traits, merges}
	text, truncated := fit(sections, budget)
	slices.Sort(found)
	return contextText{text: text, truncated: truncated, pii: slices.Compact(found)}
}

// fit keeps as many lines as fit in budget characters, dropping from the
// lowest-priority section first, and renders them.
func fit(sections []*textSection, budget int) (string, bool) {
	size := 0
	for _, s := range sections {
		s.kept = len(s.lines)
		size += s.size()
	}
	truncated := false
	// While trimming, room is kept for the short note only: what is left
	// out is said in detail when that fits too.
	for size > budget || (truncated && size+utf8.RuneCountInString(shortNote) > budget) {
		// The lowest-priority section with a line left; the first section
		// only when every other is empty.
		var s *textSection
		for i := len(sections) - 1; i >= 0; i-- {
			if sections[i].kept > 0 {
				s = sections[i]
				break
			}
		}
		if s == nil || (s == sections[0] && s.kept == 1) {
			break
		}
		size -= s.size()
		s.kept--
		size += s.size()
		truncated = true
	}
	trailer := note(sections)
	if size+utf8.RuneCountInString(trailer) > budget {
		trailer = shortNote
	}
	var b strings.Builder
	for _, s := range sections {
		if s.kept == 0 {
			continue
		}
		if s.title != "" {
			b.WriteString(s.title)
			b.WriteByte('\n')
		}
		kept := s.lines[:s.kept]
		if s.show != nil {
			kept = s.show(slices.Clone(kept))
		}
		for _, l := range kept {
			b.WriteString(l)
			b.WriteByte('\n')
		}
	}
	b.WriteString(trailer)
	out := strings.TrimSuffix(b.String(), "\n")
	if utf8.RuneCountInString(out) > budget {
		out, truncated = clip(out, budget), true
	}
	return out, truncated
}

// size is the characters the section takes with its kept lines.
func (s *textSection) size() int {
	if s.kept == 0 {
		return 0
	}
	n := 0
	if s.title != "" {
		n += utf8.RuneCountInString(s.title) + 1
	}
	for _, l := range s.lines[:s.kept] {
		n += utf8.RuneCountInString(l) + 1
	}
	return n
}

// note says what was left out, or nothing.
func note(sections []*textSection) string {
	var parts []string
	for _, s := range sections {
		if n := len(s.lines) - s.kept; n > 0 {
			parts = append(parts, fmt.Sprintf("%d %s", n, s.name))
		}
	}
	if len(parts) == 0 {
		return ""
	}
	return "(left out to fit the budget: " + strings.Join(parts, ", ") + ")"
}

// shortNote ends a trimmed text whose detailed note would not fit.
const shortNote = "(more left out)"

func reversed(lines []string) []string {
	slices.Reverse(lines)
	return lines
}

// keyTraits come first in the text, in this order; other traits follow by name.
var keyTraits = []string{"name", "first_name", "firstName", "last_name", "lastName", "email", "phone",
	"language", "locale", "timezone", "company", "plan", "tier", "status"}

func traitOrder(traits map[string]any) []string {
	rank := func(k string) int {
		if i := slices.Index(keyTraits, k); i >= 0 {
			return i
		}
		return len(keyTraits)
	}
	keys := make([]string, 0, len(traits))
	for k := range traits {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b string) int {
		if ra, rb := rank(a), rank(b); ra != rb {
			return ra - rb
		}
		return strings.Compare(a, b)
	})
	if len(keys) > maxTextTraits {
		keys = keys[:maxTextTraits]
	}
	return keys
}

func valueText(v any) string {
	if s, ok := v.(string); ok {
		return s
	}
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Sprint(v)
	}
	return string(b)
}

// clip cuts s to at most n characters, marking the cut with an ellipsis.
func clip(s string, n int) string {
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	if n <= 1 {
		return string([]rune(s)[:n])
	}
	return string([]rune(s)[:n-1]) + "…"
}

// oneLine keeps a value on its line: newlines and tabs become spaces.
func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}

func day(t time.Time) string    { return t.UTC().Format("2006-01-02") }
func minute(t time.Time) string { return t.UTC().Format("2006-01-02 15:04Z") }

// maxTextErrorCode bounds a provider's error code in the text.
const maxTextErrorCode = 32

// outboundNote is what the text says after "us" of an outbound message
// that did not certainly go out, so that a reader of the text never takes
// it for one the customer got: " (NOT delivered: failed, error 21211)" for
// one the provider refused or could not deliver (failed, undelivered,
// canceled), " (NOT confirmed sent: unconfirmed)" for one whose send has no
// known outcome (pending, unconfirmed). A message the provider took
// (accepted, queued, sent, delivered, read, ...) has none. maskText masks
// and clips free text, as the error code is.
func outboundNote(m *c360.Message, maskText func(s, where string, n int) string) string {
	switch {
	case c360.MessageStatusFinal(m.Status):
		note := "NOT delivered: " + m.Status
		if m.ErrorCode != "" {
			note += ", error " + maskText(m.ErrorCode, "messages", maxTextErrorCode)
		}
		return " (" + note + ")"
	case m.Status == c360.MessagePending || m.Status == c360.MessageUnconfirmed:
		return " (NOT confirmed sent: " + m.Status + ")"
	}
	return ""
}
