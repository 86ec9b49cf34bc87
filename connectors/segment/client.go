package segment

import (
	"strings"

	"github.com/c360dev/c360"
)

// markClientCalls marks the events of calls sent with a client key (one
// for a browser or a mobile app, public by design) as such: ingest then
// links them by the userId and anonymousId they name and by nothing
// their traits say (c360.Event.FromClientKey). How the key was presented
// (a Basic header, the body's writeKey, a one-letter browser path) says
// nothing: whoever holds a public key can send it any way, so the key's
// role alone decides.
//
// Their messageIds are kept in a dedupe space of their own
// (c360.ClientKeyDedupePrefix): a call made up with a public key cannot
// claim the messageId of a call a server sends with the write key, which
// would then be answered 200 and never stored, nor the other way round.
// A call of another key whose messageId starts with that prefix is
// refused: it could otherwise take a client call's place.
func markClientCalls(p *c360.Principal, results []Result) {
	client := p.Role == c360.RoleClient
	for i := range results {
		r := &results[i]
		ev := r.Event
		if ev == nil || r.Err != nil {
			continue
		}
		switch {
		case client:
			ev.FromClientKey = true
			ev.DedupeKey = c360.ClientKeyDedupePrefix + ev.DedupeKey
		case strings.HasPrefix(ev.DedupeKey, c360.ClientKeyDedupePrefix):
			r.Event, r.Err = nil, c360.Errorf(c360.EINVALID, "a messageId starting with %q is kept for the calls of client keys: use another messageId", c360.ClientKeyDedupePrefix)
		}
	}
}
