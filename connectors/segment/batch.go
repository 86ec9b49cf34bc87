package segment

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/c360dev/c360"
)

// Limits of Segment's HTTP Tracking API, which SDKs already respect.
const (
	// MaxCallBytes bounds one call: a single call's body or one batch item.
	MaxCallBytes = 32 << 10
	// MaxBatchBytes bounds a batch request's body.
	MaxBatchBytes = 500 << 10
	// MaxBatchCalls bounds the items of one batch: as many as a body of
	// MaxBatchBytes holds of the smallest valid call (SmallestCall), so no
	// batch of valid calls within Segment's byte limit (Segment has no
	// count limit) can exceed it. It bounds what a batch of tiny items
	// that are not calls ({} is 2 bytes) would cost to decode; a batch
	// over it is refused whole, before anything is stored.
	MaxBatchCalls = MaxBatchBytes / len(SmallestCall)
	// MaxBatchContextCopies bounds the bytes a batch's context adds to what
	// its calls store: its size times the batch's calls. Each call is
	// stored with it, so without this bound a 500 KB batch of a 31 KB
	// context and ten thousand tiny calls would store some 300 MB, from a
	// client key any browser holds. SDKs send context with each call,
	// not for the batch, so no batch they send comes near it.
	MaxBatchContextCopies = 16 * MaxBatchBytes
)

// SmallestCall is the shortest valid call in a batch, with the comma that
// separates it from the next: a page needs only its type and one id, and
// an id may be a one-digit number.
const SmallestCall = `{"type":"page","userId":1},`

// Batch is a decoded /v1/batch body.
type Batch struct {
	Items []BatchItem
	// Context is the batch's own context, which applies to every call: a
	// call is stored with the keys of its own context and those of the
	// batch's it lacks (Result.applyBatchContext).
	Context Object
	// ContextSize is the length of the batch's context in the request, in
	// bytes; it counts towards each call's MaxCallBytes.
	ContextSize int
	// SentAt is when the client sent the batch, by its own clock.
	SentAt time.Time
	// SentAtUnread reports a sentAt sent but not read as a time.
	SentAtUnread bool
	WriteKey     string
}

// BatchItem is one call of a batch, kept even when it cannot be decoded so
// the answer can name it.
type BatchItem struct {
	Message Message
	// Size is the item's length in bytes in the request.
	Size int
	// Err is why the item is refused (EINVALID), or nil.
	Err error
}

// ParseBatch decodes a batch body in one pass. A body that is not JSON,
// whose top level is not shaped as a batch, or that holds more than
// MaxBatchCalls items, is refused with EINVALID; an item
// that is JSON but not a valid call is kept with its Err set, so the rest of
// the batch can go on.
func ParseBatch(body []byte) (*Batch, error) {
	dec := json.NewDecoder(bytes.NewReader(body))
	if err := expectDelim(dec, '{', "the body"); err != nil {
		return nil, err
	}
	b := &Batch{}
	seen := false
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, invalidJSON(err)
		}
		key, _ := tok.(string)
		switch key {
		case "batch":
			seen = true
			if err := b.decodeItems(dec, body); err != nil {
				return nil, err
			}
		case "context":
			start := skipSeparators(body, int(dec.InputOffset()))
			if err := dec.Decode(&b.Context); err != nil {
				return nil, invalidJSON(err)
			}
			if err := b.Context.check("context"); err != nil {
				return nil, invalidJSON(err)
			}
			b.ContextSize = 0
			if !b.Context.absent() {
				b.ContextSize = int(dec.InputOffset()) - start
			}
			// Every call is stored with the batch's context: a larger one
			// would make each of them larger than a call may be.
			if b.ContextSize > MaxCallBytes {
				return nil, c360.Errorf(c360.EINVALID, "the batch's context is larger than 32 KB (%d bytes): it is part of every call of the batch, and a call is at most 32 KB", b.ContextSize)
			}
		case "sentAt":
			var t Time
			if err := dec.Decode(&t); err != nil {
				return nil, invalidJSON(err)
			}
			b.SentAt, b.SentAtUnread = t.Time, t.Invalid
		case "writeKey":
			if err := dec.Decode(&b.WriteKey); err != nil {
				return nil, invalidJSON(err)
			}
		default:
			var skip json.RawMessage
			if err := dec.Decode(&skip); err != nil {
				return nil, invalidJSON(err)
			}
		}
	}
	if _, err := dec.Token(); err != nil { // the closing brace
		return nil, invalidJSON(err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, c360.Errorf(c360.EINVALID, "invalid JSON: data after the top-level object")
	}
	if !seen {
		return nil, c360.Errorf(c360.EINVALID, `the body has no "batch" array`)
	}
	if b.ContextSize > 0 {
		if copies := b.ContextSize * len(b.Items); copies > MaxBatchContextCopies {
			return nil, c360.Errorf(c360.EINVALID, "the batch's context (%d bytes) is part of each of its %d calls: %d KB in all, over the %d KB a batch may add; send the context with each call instead, or fewer calls per batch",
				b.ContextSize, len(b.Items), copies>>10, MaxBatchContextCopies>>10)
		}
		// The context may come after the batch in the body.
		for i := range b.Items {
			it := &b.Items[i]
			if it.Err == nil && it.Size+b.ContextSize > MaxCallBytes {
				it.Err = c360.Errorf(c360.EINVALID, "the call is larger than 32 KB with the batch's context, which is part of it (%d bytes of call and %d of context)", it.Size, b.ContextSize)
			}
		}
	}
	return b, nil
}

// skipSeparators returns the offset of the first byte at or after i in
// body that is not a comma, a colon or white space: where the value after
// a decoder's InputOffset starts.
func skipSeparators(body []byte, i int) int {
	for i < len(body) && (body[i] == ',' || body[i] == ':' || body[i] == ' ' || body[i] == '\n' || body[i] == '\r' || body[i] == '\t') {
		i++
	}
	return i
}

func (b *Batch) decodeItems(dec *json.Decoder, body []byte) error {
	tok, err := dec.Token()
	if err != nil {
		return invalidJSON(err)
	}
	if tok == nil {
		// Refused as a batch missing: a client that sends it has lost its
		// calls, and a 200 would tell it they were stored.
		return c360.Errorf(c360.EINVALID, "batch: want an array, got null")
	}
	if d, ok := tok.(json.Delim); !ok || d != '[' {
		return c360.Errorf(c360.EINVALID, "batch: want an array")
	}
	for dec.More() {
		if len(b.Items) == MaxBatchCalls {
			// Only items smaller than any call can make that many: the
			// batch is refused whole rather than stored in part.
			return c360.Errorf(c360.EINVALID, "the batch holds more than %d items: no %d KB batch of valid calls holds that many", MaxBatchCalls, MaxBatchBytes>>10)
		}
		// The offset may still point at the comma before the item.
		start := skipSeparators(body, int(dec.InputOffset()))
		b.Items = append(b.Items, BatchItem{})
		it := &b.Items[len(b.Items)-1]
		err := dec.Decode(&it.Message)
		it.Size = int(dec.InputOffset()) - start
		if err != nil {
			var te *json.UnmarshalTypeError
			if !errors.As(err, &te) {
				return invalidJSON(err)
			}
			it.Err = c360.Errorf(c360.EINVALID, "%s", describeDecodeError(err))
			continue
		}
		if err := it.Message.checkObjects(); err != nil {
			it.Err = c360.Errorf(c360.EINVALID, "%s", describeDecodeError(err))
			continue
		}
		if it.Size > MaxCallBytes {
			it.Err = c360.Errorf(c360.EINVALID, "the call is larger than 32 KB (%d bytes)", it.Size)
		}
	}
	_, err = dec.Token() // the closing bracket
	if err != nil {
		return invalidJSON(err)
	}
	return nil
}

func expectDelim(dec *json.Decoder, want json.Delim, what string) error {
	tok, err := dec.Token()
	if err != nil {
		return invalidJSON(err)
	}
	if d, ok := tok.(json.Delim); !ok || d != want {
		return c360.Errorf(c360.EINVALID, "%s must be a JSON object", what)
	}
	return nil
}

// ParseCall decodes the body of a single call.
func ParseCall(body []byte) (*Message, error) {
	var m Message
	err := json.Unmarshal(body, &m)
	if err == nil {
		err = m.checkObjects()
	}
	if err != nil {
		return &m, c360.Errorf(c360.EINVALID, "%s", describeDecodeError(err))
	}
	return &m, nil
}

func invalidJSON(err error) error {
	return c360.Errorf(c360.EINVALID, "%s", describeDecodeError(err))
}

// Events converts the batch's items into canonical events received at
// receivedAt. Each result has either an event or the reason it is refused.
//
// A messageId names one call of a batch: a call whose messageId an earlier
// item has, whatever became of that one, is refused ("messageId repeats
// call N"). Stored together, the two would have raced, the ingest worker
// committing first keeping its call and the other answered as stored.
func (b *Batch) Events(receivedAt time.Time) []Result {
	out := make([]Result, len(b.Items))
	first := make(map[ID]int, len(b.Items)) // the index of each messageId's first item
	for i := range b.Items {
		it := &b.Items[i]
		r := &out[i]
		r.Index, r.MessageID = i, string(it.Message.MessageID)
		if id := it.Message.MessageID; id != "" {
			if j, ok := first[id]; ok && it.Err == nil {
				r.Err = c360.Errorf(c360.EINVALID, "messageId repeats call %d", j)
				continue
			} else if !ok {
				first[id] = i
			}
		}
		if it.Err != nil {
			r.Err = it.Err
			continue
		}
		m := &it.Message
		typ, ok := callTypes[m.Type]
		if !ok {
			if m.Type == "" {
				r.Err = c360.Errorf(c360.EINVALID, "the call has no type: use identify, track, page, screen, group or alias")
			} else {
				r.Err = c360.Errorf(c360.EINVALID, "unknown call type %q: use identify, track, page, screen, group or alias", truncate(m.Type, 40))
			}
			continue
		}
		r.Event, r.Err = m.Canonical(typ, receivedAt, b.SentAt)
		r.UnreadTimes = m.UnreadTimes()
		if r.Err == nil && !b.Context.empty() {
			r.batchContext = &b.Context
		}
	}
	return out
}

// Result is what became of one call: an event to ingest, or why not.
type Result struct {
	Index     int
	MessageID string
	Event     *c360.Event
	Err       error
	// UnreadTimes names the call's time fields that were sent but not
	// read (Message.UnreadTimes).
	UnreadTimes []string
	// batchContext is the context of the call's batch, not yet applied
	// to Event (applyBatchContext); nil when there is none.
	batchContext *Object
	// inserted reports a call this request stored, not one found stored
	// already.
	inserted bool
}

// applyBatchContext gives r's event the context it is stored with: the
// call's own, with the keys of its batch's context that it lacks. It is
// applied when the event is about to be stored rather than when the batch
// is decoded, so that the copies of a batch's context in its calls'
// contexts, which can make a 500 KB batch hundreds of megabytes, are
// alive only for the part of the batch being stored (Handler.ingest).
func (r *Result) applyBatchContext() {
	bc := r.batchContext
	if bc == nil || r.Event == nil {
		return
	}
	r.batchContext = nil
	ev := r.Event
	own := Object{raw: ev.RawContext, m: ev.Context}
	switch {
	case own.empty():
		// Shared by the batch's calls, never written.
		ev.RawContext, ev.Context = bc.raw, bc.m
	case own.raw != nil && bc.raw != nil:
		// The call's keys come last: of the keys an object repeats,
		// PostgreSQL's jsonb keeps the last, as encoding/json does, so
		// the call's own keys win without either object being decoded.
		ev.RawContext, ev.Context = joinObjects(bc.raw, own.raw), nil
	default:
		// An object that is not kept as its bytes (Object): merged as
		// maps, a rare case that costs a decoding.
		merged := own.Map()
		batch := bc.m
		if batch == nil {
			batch = (&Object{raw: bc.raw}).Map()
		}
		for k, v := range batch {
			if _, ok := merged[k]; !ok {
				merged[k] = v
			}
		}
		ev.RawContext, ev.Context = nil, merged
	}
}

// joinObjects returns one JSON object with the members of first, then
// those of last: two plain objects (c360.PlainObject), neither empty.
func joinObjects(first, last []byte) []byte {
	a, b := objectMembers(first), objectMembers(last)
	out := make([]byte, 0, len(a)+len(b)+3)
	out = append(out, '{')
	out = append(out, a...)
	out = append(out, ',')
	out = append(out, b...)
	return append(out, '}')
}

// objectMembers returns the bytes of a JSON object between its braces.
func objectMembers(raw []byte) []byte {
	raw = bytes.TrimSpace(raw)
	return raw[1 : len(raw)-1]
}

// warning names a time field of a call (or of the batch, without index)
// that was ignored because it is not a time c360 reads.
type warning struct {
	Index     *int   `json:"index,omitempty"`
	MessageID string `json:"messageId,omitempty"`
	Warning   string `json:"warning"`
}

// maxWarnings bounds the warnings of an answer: a batch of thousands of
// calls with the same unread field would otherwise get megabytes of them.
const maxWarnings = 100

// unreadTimeWarnings returns a warning for each time field of the stored
// calls of results that was ignored, and for the batch's own sentAt when
// batchSentAt (inBatch: results are a batch's): the first maxWarnings, and
// how many more there are.
func unreadTimeWarnings(results []Result, inBatch, batchSentAt bool) (_ []warning, omitted int) {
	var out []warning
	add := func(w warning) {
		if len(out) == maxWarnings {
			omitted++
			return
		}
		out = append(out, w)
	}
	if batchSentAt {
		add(warning{Warning: unreadTime("the batch's sentAt")})
	}
	for i := range results {
		r := &results[i]
		if r.Err != nil {
			continue
		}
		for _, f := range r.UnreadTimes {
			w := warning{MessageID: r.MessageID, Warning: unreadTime(f)}
			if inBatch {
				w.Index = &r.Index
			}
			add(w)
		}
	}
	return out, omitted
}

func unreadTime(field string) string {
	return field + " is not a time c360 reads (ISO-8601, such as 2025-03-01T12:00:00Z): it was ignored"
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return fmt.Sprintf("%s...", s[:n])
}
