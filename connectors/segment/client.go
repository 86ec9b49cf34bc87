package segment

import "github.com/c360dev/c360"

// markClientCalls marks the events of calls sent with a client key (one
// for a browser or a mobile app, public by design) as such: ingest then
// links them by the userId and anonymousId they name and by nothing
// their traits say (c360.Event.FromClientKey). How the key was presented
// (a Basic header, the body's writeKey, a one-letter browser path) says
// nothing: whoever holds a public key can send it any way, so the key's
// role alone decides.
func markClientCalls(p *c360.Principal, results []Result) {
	if p.Role != c360.RoleClient {
		return
	}
	for i := range results {
		if ev := results[i].Event; ev != nil {
			ev.FromClientKey = true
		}
	}
}
