package hub

import (
	"context"
	"encoding/base64"
	"strconv"
	"strings"
	"sync"

	"github.com/c360dev/c360"
)

// Change is one change of the feed as the hub delivers it. The hub reads a
// change once and hands the same *Change to every subscriber that receives
// it, so work derived from it (the customer it names, a payload rendered for
// one selection) is done once and shared through Shared.
type Change struct {
	c360.Change

	mu   sync.Mutex
	memo map[string]*memoEntry
}

// memoEntry is one shared value: done is closed by the caller that computed
// it, after val, ok and again are set.
type memoEntry struct {
	done chan struct{}
	val  any
	ok   bool
	// again is set when compute failed because the caller that ran it
	// left (its ctx ended) or panicked: the failure is that caller's, not
	// the value's, so the waiting callers elect another to compute.
	again bool
}

// Cursor returns the opaque position of the change: resuming after it
// replays from the next version.
func (c *Change) Cursor() string {
	return Cursor{CustomerID: c.CustomerID, Version: c.Version}.Encode()
}

// Shared returns the value stored under key, computing it with compute when
// there is none. Concurrent callers with the same key wait for the one that
// computes instead of computing again. compute reports whether its value may
// be kept. When it may not (a failure that a later caller might not hit),
// the callers already waiting get that value too, at once: computing it
// again in turn would have each wait as long as the one before (a read
// retried through an outage for hub.Options.ReadRetry would answer the
// k-th subscriber after k times that), while a caller that comes after the
// failure computes afresh. Only when the failure is not the value's, the
// computing caller's ctx having ended (its subscriber left) or compute
// having panicked, does one of the waiting callers compute again. A waiting
// caller whose ctx ends gets ctx.Err().
func (c *Change) Shared(ctx context.Context, key string, compute func() (any, bool)) (any, error) {
	for {
		c.mu.Lock()
		if c.memo == nil {
			c.memo = make(map[string]*memoEntry, 2)
		}
		e := c.memo[key]
		if e == nil {
			e = &memoEntry{done: make(chan struct{})}
			c.memo[key] = e
			c.mu.Unlock()
			return c.fill(ctx, key, e, compute), nil
		}
		c.mu.Unlock()
		select {
		case <-e.done:
			if !e.again {
				return e.val, nil
			}
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// fill computes e's value as the caller with ctx.
func (c *Change) fill(ctx context.Context, key string, e *memoEntry, compute func() (any, bool)) any {
	e.again = true // until compute returns: a panic is not the value's failure
	defer func() {
		if !e.ok {
			// Forget the entry before waking the waiters, so that a later
			// caller (or, when again is set, one of the waiters) computes
			// instead of finding the failed entry.
			c.mu.Lock()
			delete(c.memo, key)
			c.mu.Unlock()
		}
		close(e.done)
	}()
	v, ok := compute()
	e.val, e.ok = v, ok
	e.again = !ok && ctx.Err() != nil
	return v
}

// Cursor is the position of one change: the customer whose feed holds it
// and its version. Customer ids are unique across workspaces, so a cursor
// names one feed; the workspace comes from the caller's key.
type Cursor struct {
	CustomerID int64
	Version    int64
}

// cursorPrefix tells change cursors from the other opaque cursors of the API.
const cursorPrefix = "chg."

// Encode returns the opaque form of c.
func (c Cursor) Encode() string {
	s := cursorPrefix + strconv.FormatInt(c.CustomerID, 36) + "." + strconv.FormatInt(c.Version, 36)
	return base64.RawURLEncoding.EncodeToString([]byte(s))
}

// DecodeCursor parses an opaque change cursor; anything else is EINVALID.
func DecodeCursor(s string) (Cursor, error) {
	bad := c360.Errorf(c360.EINVALID, "invalid cursor: pass the cursor of a change received from this subscription")
	if len(s) > 64 {
		return Cursor{}, bad
	}
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		return Cursor{}, bad
	}
	rest, ok := strings.CutPrefix(string(b), cursorPrefix)
	if !ok {
		return Cursor{}, bad
	}
	id, ver, ok := strings.Cut(rest, ".")
	if !ok {
		return Cursor{}, bad
	}
	n, err1 := strconv.ParseInt(id, 36, 64)
	v, err2 := strconv.ParseInt(ver, 36, 64)
	if err1 != nil || err2 != nil || n <= 0 || v < 0 {
		return Cursor{}, bad
	}
	return Cursor{CustomerID: n, Version: v}, nil
}
