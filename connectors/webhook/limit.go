package webhook

import "net/http"

// Limit charges a verified webhook request to its workspace's rate limit
// (server.LimitWebhook). A connector calls it only once the request has
// passed verification, so that requests anyone can send to a public
// webhook URL never spend the provider's tokens. When the workspace is over
// its limit, Limit answers the request itself (429 with Retry-After) and
// returns false.
type Limit func(w http.ResponseWriter, r *http.Request, workspaceID int64) bool

// Allow calls l; a nil Limit allows every request.
func (l Limit) Allow(w http.ResponseWriter, r *http.Request, workspaceID int64) bool {
	return l == nil || l(w, r, workspaceID)
}
