package hub

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/c360dev/c360"
)

// Stream is a subscription's source of changes.
type Stream interface {
	// Next blocks for the next change. It returns ErrSlow when the
	// subscriber fell behind, ErrClosed when the stream or the hub was
	// closed, ctx.Err() when ctx ended, and feed errors as they come: a
	// read that fails with c360.EUNAVAILABLE was retried for
	// Options.ReadRetry first. The stream is done after an error.
	Next(ctx context.Context) (*Change, error)
	// Close unregisters the stream; a blocked Next returns. It may be called
	// from any goroutine, more than once.
	Close()
	// Wait blocks until Next has a change to return without waiting for
	// the hub, or the stream ends: Close ends a Wait. It returns at once
	// when ctx has ended, but it does not watch ctx while it blocks (that
	// would cost it a select's frame): a caller closes the stream when ctx
	// ends. Like Next, it is called from the stream's goroutine. It lets a
	// caller block where its stack is shallow (see
	// resolver.SharedSubscriptions).
	Wait(ctx context.Context)
}

// replayPage is the most changes one replay read returns; a stream reads
// at most a queue's worth (Hub.replayPage).
const replayPage = 200

// retryBackoff is the first wait before a stream reads again after a read
// failed with EUNAVAILABLE; each failure doubles it, up to maxRetryBackoff.
const (
	retryBackoff    = 50 * time.Millisecond
	maxRetryBackoff = time.Second
)

// maxFollow bounds the merges a stream follows in one step (merges keep
// every merged id one hop from its survivor, so two suffice).
const maxFollow = 8

// CustomerStream delivers every change of one customer in version order:
// first those after the resume position, read from the feed, then live ones
// from the hub, with no gap and no duplicate. It registers with the hub
// before it reads the feed and drops what it already delivered by version;
// a live change that skips versions sends it back to the feed. When the
// customer is merged away, it delivers the merged_into change and goes on
// with the survivor's changes from the one that absorbed it. When it is
// erased, it delivers the erased change and ends with ENOTFOUND.
type CustomerStream struct {
	h  *Hub
	ws int64

	// Owned by the goroutine calling Next.
	cur     int64 // the customer followed
	last    int64 // last version of cur delivered
	replay  bool  // read the feed before waiting on the hub
	pending []c360.Change
	err     error // a read Wait made failed: Next returns it

	mu     sync.Mutex // guards sub and closed against Close
	sub    *subscriber
	closed bool
}

var _ Stream = (*CustomerStream)(nil)

// SubscribeCustomer opens a stream of the customer's changes. Without after,
// it starts with the next change; with it, it starts after that position,
// which must be in the feed of the customer or of a customer merged with it
// (else EINVALID). A merged-away id follows its survivor. An unknown id is
// ENOTFOUND.
func (h *Hub) SubscribeCustomer(ctx context.Context, workspaceID, customerID int64, after *Cursor) (*CustomerStream, error) {
	st := &CustomerStream{h: h, ws: workspaceID, replay: true}
	if after != nil {
		// A cursor of another id must belong to the same survivor. The
		// usual resume, a cursor of the subscribed id, needs no check:
		// follow reads that customer's state (ENOTFOUND when unknown).
		if after.CustomerID != customerID {
			want, err := h.survivor(ctx, workspaceID, customerID)
			if err != nil {
				return nil, err
			}
			got, err := h.survivor(ctx, workspaceID, after.CustomerID)
			if c360.ErrorCode(err) == c360.ENOTFOUND || (err == nil && got != want) {
				return nil, c360.Errorf(c360.EINVALID, "invalid cursor: it is not a position of customer %d", customerID)
			} else if err != nil {
				return nil, err
			}
		}
		if err := st.follow(ctx, after.CustomerID, func(int64) int64 { return after.Version }, false); err != nil {
			return nil, err
		}
		h.streams.Add(1)
		return st, nil
	}
	if err := st.follow(ctx, customerID, func(v int64) int64 { return v }, true); err != nil {
		return nil, err
	}
	h.streams.Add(1)
	return st, nil
}

func (h *Hub) survivor(ctx context.Context, ws, id int64) (int64, error) {
	_, merged, err := h.customerState(ctx, ws, id)
	if err != nil {
		return 0, err
	}
	if merged != 0 {
		return merged, nil
	}
	return id, nil
}

// follow registers the stream on customer id (or its survivor) and sets the
// position to start(current version). Registering comes first, so that any
// change committed after the version is read reaches the stream. A customer
// already merged away with nothing left to deliver hands over to its
// survivor: from now on when live, else from the change that absorbed it.
func (st *CustomerStream) follow(ctx context.Context, id int64, start func(version int64) int64, live bool) error {
	for range maxFollow {
		sub, err := st.h.register(st.ws, id)
		if err != nil {
			return err
		}
		version, merged, err := st.h.customerState(ctx, st.ws, id)
		if err != nil {
			st.h.unregister(sub)
			return err
		}
		if p := start(version); p > version {
			// A position the feed has not reached (a cursor from before a
			// restore, say): every change up to it would be taken as
			// delivered, and the stream would stay silent.
			st.h.unregister(sub)
			return c360.Errorf(c360.EINVALID, "invalid cursor: version %d is ahead of the customer's changes (at %d)", p, version)
		}
		st.h.setBaseline(sub, version)
		if merged != 0 && start(version) >= version {
			// Already merged away, and nothing of it left to deliver.
			st.h.unregister(sub)
			if live {
				id = merged
				continue
			}
			// The survivor to go on with is the one its merged_into change
			// names, as for a live stream (deliver): the customer's
			// pointer names the survivor of the last of a chain of merges
			// (M into X, then X into S, points M at S), whose feed would
			// skip X's changes and does not name M.
			if direct, err := st.mergedInto(ctx, id, version); err != nil {
				return err
			} else if direct != 0 {
				merged = direct
			}
			v, err := st.h.mergeVersion(ctx, st.ws, merged, id)
			if err != nil {
				return fmt.Errorf("follow merge of customer %d into %d: %w", id, merged, err)
			}
			id, start = merged, func(int64) int64 { return v - 1 }
			continue
		}
		if !st.swap(sub) {
			return ErrClosed
		}
		st.cur, st.last = id, start(version)
		return nil
	}
	return fmt.Errorf("follow customer %d: too many merges", id)
}

// mergedInto returns the survivor the customer's last change, at version,
// names when it is its merged_into change; else 0.
func (st *CustomerStream) mergedInto(ctx context.Context, id, version int64) (int64, error) {
	rows, err := st.h.changesAfter(ctx, st.ws, id, version-1, 1)
	if err != nil {
		return 0, fmt.Errorf("read the merge of customer %d: %w", id, err)
	}
	if len(rows) != 1 || rows[0].Kind != c360.ChangeMergedInto {
		return 0, nil
	}
	return survivorOf(&Change{Change: rows[0]})
}

// swap makes sub the stream's registration, dropping the previous one. It
// reports false, dropping sub, when the stream was closed.
func (st *CustomerStream) swap(sub *subscriber) bool {
	st.mu.Lock()
	old, closed := st.sub, st.closed
	if !closed {
		st.sub = sub
	}
	st.mu.Unlock()
	st.h.unregister(old)
	if closed {
		st.h.unregister(sub)
		return false
	}
	return true
}

// Next returns the next change of the customer (or of its survivor).
func (st *CustomerStream) Next(ctx context.Context) (*Change, error) {
	if st.err != nil {
		return nil, st.err
	}
	for {
		if len(st.pending) > 0 {
			c := st.pending[0]
			// The page's array lives until the next read: what was
			// delivered lets go of its diff now, and a page delivered
			// whole lets go of the array, which a stream that caught up
			// would otherwise keep for as long as it lives.
			st.pending[0] = c360.Change{}
			if st.pending = st.pending[1:]; len(st.pending) == 0 {
				st.pending = nil
			}
			if c.CustomerID != st.cur || c.Version <= st.last {
				continue
			}
			return st.deliver(ctx, &Change{Change: c})
		}
		if st.replay {
			if err := st.readFeed(ctx); err != nil {
				return nil, err
			}
			if len(st.pending) > 0 {
				continue
			}
		}
		st.mu.Lock()
		sub := st.sub
		st.mu.Unlock()
		if sub == nil {
			return nil, ErrClosed
		}
		c, err := sub.q.pop(ctx)
		if err != nil {
			return nil, err
		}
		if c.Version <= st.last {
			continue
		}
		if c.Version > st.last+1 {
			// A gap: this subscriber registered while the topic was
			// behind, or missed a wake. The feed has what is missing.
			st.replay = true
			continue
		}
		return st.deliver(ctx, c)
	}
}

// readFeed reads the next page of the feed after the position.
func (st *CustomerStream) readFeed(ctx context.Context) error {
	page := st.h.replayPage()
	rows, err := st.h.changesAfter(ctx, st.ws, st.cur, st.last, page)
	if err != nil {
		return fmt.Errorf("replay changes of customer %d: %w", st.cur, err)
	}
	st.replay = len(rows) >= page
	st.pending = rows
	return nil
}

// Wait blocks until Next has something to return, or the stream ends. It
// reads the feed first when the stream is replaying.
func (st *CustomerStream) Wait(ctx context.Context) {
	if ctx.Err() != nil || st.err != nil {
		return
	}
	if len(st.pending) == 0 && st.replay {
		if err := st.readFeed(ctx); err != nil {
			st.err = err // for Next to return: the read was retried already
			return
		}
	}
	if len(st.pending) > 0 || st.replay {
		return
	}
	st.mu.Lock()
	sub := st.sub
	st.mu.Unlock()
	if sub != nil {
		sub.q.wait()
	}
}

// deliver advances the position to c; a merged_into change moves the stream
// to the survivor before c is returned. An erased change is the last of its
// customer: the stream lets go of the hub, and the next call of Next ends
// it with ENOTFOUND.
func (st *CustomerStream) deliver(ctx context.Context, c *Change) (*Change, error) {
	if c.Kind == c360.ChangeErased {
		st.last = c.Version
		st.err = c360.Errorf(c360.ENOTFOUND, "customer %d was erased", c.CustomerID)
		st.pending, st.replay = nil, false
		st.mu.Lock()
		sub := st.sub
		st.sub = nil
		st.mu.Unlock()
		st.h.unregister(sub)
		return c, nil
	}
	if c.Kind != c360.ChangeMergedInto {
		st.last = c.Version
		return c, nil
	}
	survivor, err := survivorOf(c)
	if err != nil {
		return nil, err
	}
	v, err := st.h.mergeVersion(ctx, st.ws, survivor, c.CustomerID)
	if err != nil {
		return nil, fmt.Errorf("follow merge of customer %d into %d: %w", c.CustomerID, survivor, err)
	}
	if err := st.follow(ctx, survivor, func(int64) int64 { return v - 1 }, false); err != nil {
		return nil, err
	}
	st.replay, st.pending = true, nil
	return c, nil
}

// replayPage is how many changes a stream reads from the feed at once:
// no more than its queue holds, so that a subscriber catching up holds at
// most a queue's worth of changes besides its queue, whatever the backlog.
func (h *Hub) replayPage() int { return min(replayPage, h.opts.QueueSize) }

// customerState, mergeVersion and changesAfter are a stream's reads of the
// feed, retried (see Retry).
func (h *Hub) customerState(ctx context.Context, ws, id int64) (version, merged int64, err error) {
	err = h.Retry(ctx, func() (err error) {
		version, merged, err = h.feed.CustomerState(ctx, ws, id)
		return err
	})
	return version, merged, err
}

func (h *Hub) mergeVersion(ctx context.Context, ws, survivor, merged int64) (v int64, err error) {
	err = h.Retry(ctx, func() (err error) {
		v, err = h.feed.MergeVersion(ctx, ws, survivor, merged)
		return err
	})
	return v, err
}

func (h *Hub) changesAfter(ctx context.Context, ws, id, version int64, limit int) (rows []c360.Change, err error) {
	err = h.Retry(ctx, func() (err error) {
		rows, err = h.feed.ChangesAfter(ctx, []c360.Change{{WorkspaceID: ws, CustomerID: id, Version: version}}, limit)
		return err
	})
	return rows, err
}

// Retry runs read, and again, with a growing wait, while it fails with
// EUNAVAILABLE (PostgreSQL restarting or failing over, a statement
// timeout), for up to ReadRetry or until ctx ends. A stream's reads change
// its position only once they succeed, so a read that succeeds late goes on
// where the stream stopped; without the retry, a blip of the database would
// end its subscriptions. Subscriptions read through it what they read
// besides the feed (a message a change names, a conversation's owner), so
// that every read of a stream rides out the same outage. It returns the
// last read's error: when ctx ended, the caller tells that from an outage
// by ctx.Err().
func (h *Hub) Retry(ctx context.Context, read func() error) error {
	err := read()
	if err == nil || c360.ErrorCode(err) != c360.EUNAVAILABLE {
		return err
	}
	deadline := time.Now().Add(h.opts.ReadRetry)
	for wait := retryBackoff; ; wait = min(2*wait, maxRetryBackoff) {
		left := time.Until(deadline)
		if left <= 0 {
			return err
		}
		t := time.NewTimer(min(wait, left))
		select {
		case <-ctx.Done():
			t.Stop()
			return err
		case <-t.C:
		}
		if err = read(); err == nil || c360.ErrorCode(err) != c360.EUNAVAILABLE {
			return err
		}
	}
}

func survivorOf(c *Change) (int64, error) {
	s, _ := c.Diff["survivorId"].(string) // written as a string (postgres/merge.go)
	id, _ := strconv.ParseInt(s, 10, 64)
	if id <= 0 {
		return 0, fmt.Errorf("merged_into change %d/%d has no survivorId", c.CustomerID, c.Version)
	}
	return id, nil
}

// Close unregisters the stream.
func (st *CustomerStream) Close() {
	st.mu.Lock()
	sub, was := st.sub, st.closed
	st.sub, st.closed = nil, true
	st.mu.Unlock()
	if !was {
		st.h.streams.Add(-1)
	}
	st.h.unregister(sub)
}

// WorkspaceStream delivers every change of every customer of a workspace,
// optionally only some kinds, from its start on. It has no replay: changes
// are matched to the stream by the time it started, so a change committed
// within clock skew of that moment may be missed, and one workspace stream
// tracks at most Options.MaxWorkspaceTopics customers before starting over.
type WorkspaceStream struct {
	h      *Hub
	sub    *subscriber
	closed atomic.Bool
}

var _ Stream = (*WorkspaceStream)(nil)

// SubscribeWorkspace opens a stream of the workspace's changes that include
// one of the given kinds (c360.Change.Includes), or all of them when kinds
// is empty.
func (h *Hub) SubscribeWorkspace(workspaceID int64, kinds []string) (*WorkspaceStream, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return nil, c360.Errorf(c360.EUNAVAILABLE, "the server is shutting down; reconnect")
	}
	w := h.workspaces[workspaceID]
	if w == nil {
		w = &workspace{id: workspaceID, since: h.opts.Now(), subs: map[*subscriber]struct{}{}, owned: map[int64]*topic{}}
		h.workspaces[workspaceID] = w
	}
	s := &subscriber{q: newQueue(), ws: w}
	s.q.emptied = h.emptied
	if len(kinds) > 0 {
		s.kinds = make(map[string]bool, len(kinds))
		for _, k := range kinds {
			s.kinds[k] = true
		}
	}
	w.subs[s] = struct{}{}
	h.subs.Add(1)
	h.streams.Add(1)
	return &WorkspaceStream{h: h, sub: s}, nil
}

// Next returns the next change of the workspace.
func (st *WorkspaceStream) Next(ctx context.Context) (*Change, error) {
	return st.sub.q.pop(ctx)
}

// Wait blocks until Next has something to return, or the stream ends.
func (st *WorkspaceStream) Wait(ctx context.Context) {
	if ctx.Err() == nil {
		st.sub.q.wait()
	}
}

// Close unregisters the stream.
func (st *WorkspaceStream) Close() {
	if st.closed.CompareAndSwap(false, true) {
		st.h.streams.Add(-1)
	}
	st.h.unregister(st.sub)
}
