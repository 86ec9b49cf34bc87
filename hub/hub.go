// Package hub fans committed changes out to the subscriptions of one c360
// process. The change rows in PostgreSQL are the truth: the hub is only told
// which customers' feeds grew (directly after a local commit, or through
// LISTEN/NOTIFY from another replica), reads the new rows of each such
// customer once, whatever the number of its subscribers, and hands the same
// *Change to each of them.
//
// Every subscriber has a bounded queue. The hub never blocks on one: a
// subscriber whose queue is full is dropped with ErrSlow, and its client
// resumes from the last cursor it received. A burst (more changes of one
// customer, or of a workspace's customers for a workspace stream, than a
// queue holds) is held back instead, for up to Options.CatchUp, until the
// subscribers have taken what they hold.
package hub

import (
	"cmp"
	"context"
	"errors"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/c360dev/c360"
)

// ErrSlow ends a stream whose subscriber did not keep up: its queue filled.
// Its client should reconnect and resume after the last cursor it received.
var ErrSlow = errors.New("hub: subscriber too slow")

// ErrClosed ends a stream because the hub stopped.
var ErrClosed = errors.New("hub: closed")

// Feed is the change feed the hub reads. Package postgres implements it.
type Feed interface {
	// ChangesAfter returns, for each position given as a change (workspace,
	// customer and the last version already seen), up to limit changes that
	// follow it, ordered by customer and version.
	ChangesAfter(ctx context.Context, after []c360.Change, limit int) ([]c360.Change, error)
	// CustomerState returns the customer's current version and, when it was
	// merged away, its survivor (else 0). It is ENOTFOUND when the workspace
	// has no such customer.
	CustomerState(ctx context.Context, workspaceID, customerID int64) (version, mergedInto int64, err error)
	// MergeVersion returns the version of the survivor's change that
	// absorbed the merged customer.
	MergeVersion(ctx context.Context, workspaceID, survivorID, mergedID int64) (int64, error)
	// VersionsBefore returns, per customer, the highest version of its
	// changes made before t (customers without one are absent).
	VersionsBefore(ctx context.Context, workspaceID int64, customerIDs []int64, t time.Time) (map[int64]int64, error)
	// CustomersChangedSince returns the customers of the workspace with a
	// change made at or after t.
	CustomersChangedSince(ctx context.Context, workspaceID int64, t time.Time) ([]int64, error)
}

// sweepMargin is how far before its last sweep a workspace is swept again
// after a reconnect of the listener (Resync) or a whole-workspace wake. A
// change row is dated by the process that writes it, during its
// transaction, and may commit a while later: a sweep that started after the
// date but read before the commit did not see it, so the next sweep must
// reach back past its predecessor's start by as long as a transaction may
// take from dating its change to committing it, plus the clock skew between
// that process and this one. A minute covers any transaction of the store
// but an erasure's. Reading a change twice delivers it once: each topic
// knows the last version it fanned out.
const sweepMargin = time.Minute

// resyncSweepMargin is sweepMargin for the periodic resync's sweeps
// (Options.ResyncInterval). They are a second net, for a change whose
// NOTIFY was lost (a NOTIFY that arrives wakes its customer whatever its
// date), and they run every few seconds: with sweepMargin each would read a
// minute of the feed of every workspace (the index is on created_at only)
// and wake every customer changed in it, about 13 times a minute for a 5 s
// interval. 15 s covers the usual gap between a change's date and its
// commit with room (milliseconds; a statement is cut at the default
// statement_timeout, 10 s) and 5 s of clock skew. It is not a bound: a
// group commit dates its changes before several statements, each with
// its own timeout and lock waits, and the COMMIT itself has no timeout (a
// synchronous standby can hold it). A change committed later than 15 s
// after its date whose NOTIFY was also lost reaches a customerChanges
// stream that does not follow its customer yet with the next reconnect's
// or whole-workspace wake's sweep (a minute's margin), or with its
// customer's next change; streams that follow the customer get it at the
// next resync, which reads their feeds by version, not by date.
const resyncSweepMargin = 15 * time.Second

// Options tune the hub; zero values take the defaults.
type Options struct {
	// QueueSize bounds each subscriber's queue of undelivered changes (64),
	// and the changes a customer stream reads from the feed at once while
	// it catches up.
	QueueSize int
	// Workers is the number of concurrent feed reads (2).
	Workers int
	// BatchSize is the most customers one feed read covers (256).
	BatchSize int
	// PageSize is the most changes of one customer one read returns (100;
	// at most QueueSize, so that one read fits a subscriber that kept up).
	PageSize int
	// CatchUp is how long the rest of a customer's burst waits for its
	// subscribers to make room before it is read anyway, dropping those
	// still full, and how long a workspace stream refused changes for want
	// of room has to take all it holds before it is dropped (2s).
	CatchUp time.Duration
	// MaxWorkspaceTopics bounds the customers a workspace-wide stream
	// tracks (100000); past it the tracking starts over (see SubscribeWorkspace).
	MaxWorkspaceTopics int
	// ReadRetry is how long a customer stream goes on retrying a read of
	// its own (catching up, following a merge, starting) that failed with
	// c360.EUNAVAILABLE, a database restarting or failing over or a
	// statement timeout, before it ends with that error (10s); Retry
	// gives the other reads of a subscription the same. The hub's own
	// reads retry until they succeed.
	ReadRetry time.Duration
	// ResyncInterval is how often the hub reads every feed it follows
	// again, and sweeps every workspace with workspace streams, as after
	// a reconnect of the listener but from the last sweep less
	// resyncSweepMargin (5s; negative: never). It is the safety
	// net for a notification that was lost: another replica killed
	// between its commit and its batched NOTIFY, or whose last NOTIFY
	// failed, sends none, and without it the change would wait for the
	// customer's next one. One feed read covers BatchSize customers of
	// one workspace and finds nothing when nothing is new: 10,000
	// followed customers cost about 40 statements per interval.
	ResyncInterval time.Duration
	Logger         *slog.Logger
	// Now is the clock; it dates the start of workspace-wide streams.
	Now func() time.Time
}

// Hub routes change notifications to subscribers. Create it with New, run it
// with Run; Wake and Resync may be called from any goroutine.
type Hub struct {
	feed   Feed
	opts   Options
	signal chan struct{} // capacity 1: there is work in queue

	mu         sync.Mutex
	topics     map[topicKey]*topic
	workspaces map[int64]*workspace
	queue      []*topic
	// sweeps are the workspaces whose changed customers must be found: a
	// whole workspace was woken, and its workspace streams follow only the
	// customers they were told of. Each has how far before its last sweep
	// to start (sweepMargin, or resyncSweepMargin for a periodic resync).
	sweeps map[int64]time.Duration
	// backlog holds the topics whose last read filled a page while their
	// subscribers had no room for another, with when to read them anyway.
	backlog map[*topic]time.Time
	// backlogged mirrors len(backlog), for queues to read without the lock.
	backlogged atomic.Int32
	closed     bool

	delivered atomic.Int64
	dropped   atomic.Int64
	reads     atomic.Int64
	subs      atomic.Int64
	streams   atomic.Int64
}

type topicKey struct{ ws, customer int64 }

// topic is one customer's feed as the hub follows it.
type topic struct {
	topicKey
	// last is the highest version fanned out; -1 until known.
	last int64
	// since, for a topic made while a workspace stream was open, dates its
	// baseline: changes made before it were not for that stream.
	since time.Time
	subs  subscribers
	// owned is set while a workspace stream keeps the topic alive.
	owned bool
	// queued: in h.queue; fetching: a worker is reading it; again: woken
	// while being read; waiting: woken before its baseline was known.
	queued, fetching, again, waiting bool
}

// workspace is the workspace-wide subscribers of one workspace.
type workspace struct {
	id    int64
	since time.Time
	subs  map[*subscriber]struct{}
	owned map[int64]*topic
	// refused holds when each stream was first refused changes for want of
	// room, since its queue was last empty (see Hub.workspaceRoom).
	refused map[*subscriber]time.Time
	// swept is when the last sweep started (zero: never).
	swept time.Time
}

// subscriber is one stream's registration. The hub is the only producer of
// its queue; the stream's goroutine is the only consumer.
type subscriber struct {
	q      queue
	closed bool // unregistered; guarded by the hub's mu
	topic  *topic
	idx    int // in topic.subs
	ws     *workspace
	kinds  map[string]bool // nil: every kind
}

// wants reports whether a workspace stream takes c: every change without
// kinds, else one that includes a kind it asked for, whatever kind it is
// of (a message that also gave a name is of kind traits).
func (s *subscriber) wants(c *c360.Change) bool {
	if s.kinds == nil {
		return true
	}
	for k := range s.kinds {
		if c.Includes(k) {
			return true
		}
	}
	return false
}

// subscribers are a topic's subscribers. Each knows its index, so that one
// leaves in constant time; a slice, because most topics have one, which a
// map would hold in 128 bytes.
type subscribers []*subscriber

func (ss *subscribers) add(s *subscriber) {
	s.idx = len(*ss)
	*ss = append(*ss, s)
}

// remove takes s out, moving the last subscriber into its place.
func (ss *subscribers) remove(s *subscriber) {
	l, last := *ss, len(*ss)-1
	l[s.idx] = l[last]
	l[s.idx].idx = s.idx
	l[last] = nil
	if *ss = l[:last]; last == 0 {
		*ss = nil
	}
}

// queue is a subscriber's bounded queue of undelivered changes. It holds
// no array while it is empty, which is how an idle subscriber spends its
// life: a channel of QueueSize would cost every subscriber QueueSize
// pointers up front (2 KiB at 256).
type queue struct {
	ready chan struct{} // capacity 1: changes are queued, or the queue was closed
	// emptied, when set, is called when the consumer takes the last change.
	emptied func()

	mu      sync.Mutex
	changes []*Change
	closed  bool
	// refused is set while the hub holds changes back for want of room,
	// until the queue is next empty (workspace streams: Hub.workspaceRoom).
	// A bool beside closed takes no room.
	refused bool
	err     error // why it was closed
}

func newQueue() queue { return queue{ready: make(chan struct{}, 1)} }

// push queues c unless the queue holds max changes already; it reports
// whether c was queued.
func (q *queue) push(c *Change, max int) bool {
	q.mu.Lock()
	if q.closed {
		q.mu.Unlock()
		return true
	}
	if len(q.changes) >= max {
		q.mu.Unlock()
		return false
	}
	q.changes = append(q.changes, c)
	q.mu.Unlock()
	select {
	case q.ready <- struct{}{}:
	default:
	}
	return true
}

// fits reports whether the queue has room for n more changes besides those
// it holds, at most max in all. When it has not, the queue is marked
// refused until it is next empty, and again reports whether it was marked
// already: it has not taken all it holds since it was last refused.
func (q *queue) fits(n, max int) (ok, again bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed || len(q.changes)+n <= max {
		return true, false
	}
	again, q.refused = q.refused, true
	return false, again
}

// len is how many changes the queue holds.
func (q *queue) len() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.changes)
}

// close ends the queue with err once the changes it holds are taken.
func (q *queue) close(err error) {
	q.mu.Lock()
	if !q.closed {
		q.closed, q.err = true, err
		close(q.ready)
	}
	q.mu.Unlock()
}

// wait blocks until the queue holds a change or is closed. A token left in
// ready by a change already taken does not end it.
func (q *queue) wait() {
	for !q.hasWork() {
		<-q.ready
	}
}

// hasWork reports whether the queue holds a change or is closed.
func (q *queue) hasWork() bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.changes) > 0 || q.closed
}

// pop waits for the next change. It returns the queue's error once the
// queue is closed and drained, and ctx.Err() when ctx ends first.
func (q *queue) pop(ctx context.Context) (*Change, error) {
	for {
		q.mu.Lock()
		if len(q.changes) > 0 {
			c := q.changes[0]
			q.changes[0] = nil
			q.changes = q.changes[1:]
			empty := len(q.changes) == 0
			if empty {
				q.changes = nil   // let go of the array: an idle queue holds none
				q.refused = false // it took all it was given: it keeps up
			}
			q.mu.Unlock()
			if empty && q.emptied != nil {
				q.emptied()
			}
			return c, nil
		}
		closed, err := q.closed, q.err
		q.mu.Unlock()
		if closed {
			return nil, err
		}
		select {
		case <-q.ready:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// New returns a hub reading feed.
func New(feed Feed, opts Options) *Hub {
	if opts.QueueSize <= 0 {
		opts.QueueSize = 64
	}
	if opts.Workers <= 0 {
		opts.Workers = 2
	}
	if opts.BatchSize <= 0 {
		opts.BatchSize = 256
	}
	if opts.PageSize <= 0 {
		opts.PageSize = 100
	}
	opts.PageSize = min(opts.PageSize, opts.QueueSize)
	if opts.CatchUp <= 0 {
		opts.CatchUp = 2 * time.Second
	}
	if opts.MaxWorkspaceTopics <= 0 {
		opts.MaxWorkspaceTopics = 100000
	}
	if opts.ReadRetry <= 0 {
		opts.ReadRetry = 10 * time.Second
	}
	if opts.ResyncInterval == 0 {
		opts.ResyncInterval = 5 * time.Second
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	return &Hub{
		feed:       feed,
		opts:       opts,
		signal:     make(chan struct{}, 1),
		topics:     map[topicKey]*topic{},
		workspaces: map[int64]*workspace{},
		sweeps:     map[int64]time.Duration{},
		backlog:    map[*topic]time.Time{},
	}
}

// Run reads the feed for woken customers until ctx ends, then drops every
// subscriber with ErrClosed. It owns the hub's worker goroutines and its
// periodic resync (Options.ResyncInterval), and returns after they have
// stopped.
func (h *Hub) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	for i := 0; i < h.opts.Workers; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			h.work(ctx)
		}()
	}
	if h.opts.ResyncInterval > 0 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			t := time.NewTicker(h.opts.ResyncInterval)
			defer t.Stop()
			for {
				select {
				case <-ctx.Done():
					return
				case <-t.C:
					h.resync(resyncSweepMargin)
				}
			}
		}()
	}
	wg.Wait()
	h.mu.Lock()
	h.closed = true
	for _, t := range h.topics {
		for i := len(t.subs) - 1; i >= 0; i-- {
			h.drop(t.subs[i], ErrClosed)
		}
	}
	for _, w := range h.workspaces {
		for s := range w.subs {
			h.drop(s, ErrClosed)
		}
	}
	h.mu.Unlock()
	return nil
}

// Wake tells the hub that the feeds of these customers grew. It never
// blocks on I/O: customers nobody follows cost a map lookup.
func (h *Hub) Wake(workspaceID int64, customerIDs []int64) {
	h.mu.Lock()
	w := h.workspaces[workspaceID]
	n := 0
	for _, id := range customerIDs {
		k := topicKey{workspaceID, id}
		t := h.topics[k]
		if t == nil {
			if w == nil {
				continue
			}
			t = h.ownedTopic(w, k)
			h.topics[k] = t
		} else if w != nil && !t.owned {
			// Keep it for the workspace stream once its customer streams end,
			// so its baseline stays exact.
			h.own(w, t)
			if t.last < 0 {
				// No customer stream has read its version yet: read from
				// the workspace stream's start, which this change follows.
				t.since = w.since
			}
		}
		if h.wakeTopic(t) {
			n++
		}
	}
	h.mu.Unlock()
	if n > 0 {
		h.kick()
	}
}

// wakeTopic queues t for a read, unless it waits in the backlog: the
// backlog reads it from the last version it fanned out once its
// subscribers made room (or CatchUp passed), which covers the change this
// wake is for, whereas read now it would push into queues still full and
// drop their subscribers as slow. It reports whether t was queued. Called
// with h.mu held.
func (h *Hub) wakeTopic(t *topic) bool {
	if _, ok := h.backlog[t]; ok {
		return false
	}
	h.markDirty(t)
	return true
}

// WakeWorkspace tells the hub that feeds of any customers of the workspace
// may have grown: every customer it follows there is read again, and, for
// the workspace's workspace streams, the customers changed since their last
// sweep are found and followed.
func (h *Hub) WakeWorkspace(workspaceID int64) {
	h.mu.Lock()
	for k, t := range h.topics {
		if k.ws == workspaceID {
			h.wakeTopic(t)
		}
	}
	if h.workspaces[workspaceID] != nil {
		h.addSweep(workspaceID, sweepMargin)
	}
	h.mu.Unlock()
	h.kick()
}

// Resync reads every followed customer's feed again, and sweeps every
// workspace with workspace streams. The listener calls it after
// reconnecting, since notifications sent meanwhile are lost, and Run every
// ResyncInterval, since a replica that dies between its commit and its
// NOTIFY sends none.
//
// A read starts after the last version its topic fanned out, so a feed
// that did not grow yields nothing and one that did is delivered once, in
// order, as for a wake. The topics are queued by workspace, so that a read
// of BatchSize of them is one statement (ChangesAfter makes one per
// workspace it covers): in the map's order, a batch would cover most
// workspaces followed. A backlogged topic is left to its backlog, which
// reads it once its subscribers made room (read now, it could drop them as
// slow), as by every wake (wakeTopic), including those of the sweeps.
func (h *Hub) Resync() { h.resync(sweepMargin) }

// resync is Resync, whose sweeps start margin before each workspace's last
// sweep.
func (h *Hub) resync(margin time.Duration) {
	h.mu.Lock()
	ts := make([]*topic, 0, len(h.topics))
	for _, t := range h.topics {
		ts = append(ts, t)
	}
	slices.SortFunc(ts, func(a, b *topic) int {
		return cmp.Or(cmp.Compare(a.ws, b.ws), cmp.Compare(a.customer, b.customer))
	})
	for _, t := range ts {
		h.wakeTopic(t)
	}
	for ws := range h.workspaces {
		h.addSweep(ws, margin)
	}
	h.mu.Unlock()
	h.kick()
}

// addSweep queues a sweep of ws reaching margin before its last sweep; a
// sweep queued already keeps the larger margin. Called with h.mu held.
func (h *Hub) addSweep(ws int64, margin time.Duration) {
	if m, ok := h.sweeps[ws]; !ok || margin > m {
		h.sweeps[ws] = margin
	}
}

// takeSweep pops a workspace to sweep, when to sweep it from, its
// previous sweep's start and the sweep's margin (for a failed sweep to put
// back).
func (h *Hub) takeSweep() (int64, time.Time, time.Time, time.Duration, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for ws, margin := range h.sweeps {
		delete(h.sweeps, ws)
		w := h.workspaces[ws]
		if w == nil {
			continue // its streams ended meanwhile
		}
		from, prev := w.since, w.swept
		if prev.After(from) {
			from = prev
		}
		w.swept = h.opts.Now()
		return ws, from.Add(-margin), prev, margin, true
	}
	return 0, time.Time{}, time.Time{}, 0, false
}

// sweep finds the customers of ws changed since from and wakes them, which
// makes the workspace's streams follow them. A failed read is tried again,
// from where it started (prev is the sweep before it, margin its margin).
func (h *Hub) sweep(ctx context.Context, ws int64, from, prev time.Time, margin time.Duration) error {
	h.reads.Add(1)
	ids, err := h.feed.CustomersChangedSince(ctx, ws, from)
	if err != nil {
		h.mu.Lock()
		if w := h.workspaces[ws]; w != nil {
			if w.swept.After(prev) {
				w.swept = prev // unless a sweep since has moved it back already
			}
			h.addSweep(ws, margin)
		}
		h.mu.Unlock()
		return err
	}
	h.Wake(ws, ids)
	return nil
}

// Stats are the hub's counters.
type Stats struct {
	Streams     int64 // streams open and positioned now: later commits reach them
	Subscribers int64 // registrations with topics and workspaces now
	Topics      int   // customers followed now
	Delivered   int64 // changes queued to subscribers
	Dropped     int64 // subscribers dropped for being slow
	Reads       int64 // feed reads
}

// Stats returns the hub's counters.
func (h *Hub) Stats() Stats {
	h.mu.Lock()
	n := len(h.topics)
	h.mu.Unlock()
	return Stats{Streams: h.streams.Load(), Subscribers: h.subs.Load(), Topics: n, Delivered: h.delivered.Load(),
		Dropped: h.dropped.Load(), Reads: h.reads.Load()}
}

func (h *Hub) kick() {
	select {
	case h.signal <- struct{}{}:
	default:
	}
}

// markDirty queues t for a read. Called with h.mu held.
func (h *Hub) markDirty(t *topic) {
	switch {
	case t.fetching:
		t.again = true
	case t.last < 0 && t.since.IsZero():
		t.waiting = true
	case !t.queued:
		t.queued = true
		h.queue = append(h.queue, t)
	}
}

func (h *Hub) work(ctx context.Context) {
	for {
		if ws, from, prev, margin, ok := h.takeSweep(); ok {
			if err := h.sweep(ctx, ws, from, prev, margin); err != nil {
				if ctx.Err() != nil {
					return
				}
				h.opts.Logger.Error("hub: find changed customers", "error", err, "workspace", ws)
				select {
				case <-ctx.Done():
					return
				case <-time.After(250 * time.Millisecond):
				}
				h.kick()
			}
			continue
		}
		waiting := h.drainBacklog()
		batch := h.take()
		if len(batch) == 0 {
			var recheck <-chan time.Time
			if waiting {
				// A backlogged topic's wait may end without a kick.
				recheck = time.After(h.opts.CatchUp / 8)
			}
			select {
			case <-ctx.Done():
				return
			case <-h.signal:
			case <-recheck:
			}
			continue
		}
		if err := h.fetch(ctx, batch); err != nil {
			if ctx.Err() != nil {
				h.release(batch)
				return
			}
			h.opts.Logger.Error("hub: read change feed", "error", err, "customers", len(batch))
			h.release(batch)
			select {
			case <-ctx.Done():
				return
			case <-time.After(250 * time.Millisecond):
			}
			h.kick()
		}
	}
}

// take pops up to BatchSize queued topics and marks them being read.
func (h *Hub) take() []*topic {
	h.mu.Lock()
	defer h.mu.Unlock()
	n := min(len(h.queue), h.opts.BatchSize)
	if n == 0 {
		return nil
	}
	batch := make([]*topic, 0, n)
	for _, t := range h.queue[:n] {
		t.queued = false
		if h.topics[t.topicKey] != t {
			continue // unsubscribed meanwhile
		}
		t.fetching = true
		batch = append(batch, t)
	}
	clear(h.queue[:n])
	h.queue = h.queue[n:]
	if len(h.queue) > 0 {
		h.kick()
	}
	return batch
}

// release ends a failed read: the topics are queued again.
func (h *Hub) release(batch []*topic) {
	h.mu.Lock()
	for _, t := range batch {
		t.fetching, t.again = false, false
		if h.topics[t.topicKey] == t {
			h.markDirty(t)
		}
	}
	h.mu.Unlock()
}

// fetch reads the new changes of a batch of topics in one statement and fans
// them out.
func (h *Hub) fetch(ctx context.Context, batch []*topic) error {
	if err := h.baselines(ctx, batch); err != nil {
		return err
	}
	pos := make([]c360.Change, len(batch))
	h.mu.Lock()
	for i, t := range batch {
		pos[i] = c360.Change{WorkspaceID: t.ws, CustomerID: t.customer, Version: t.last}
	}
	h.mu.Unlock()
	h.reads.Add(1)
	rows, err := h.feed.ChangesAfter(ctx, pos, h.opts.PageSize)
	if err != nil {
		return err
	}
	byTopic := make(map[topicKey][]c360.Change, len(batch))
	for _, r := range rows {
		k := topicKey{r.WorkspaceID, r.CustomerID}
		byTopic[k] = append(byTopic[k], r)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, t := range batch {
		t.fetching = false
		rs := byTopic[t.topicKey]
		cs := make([]*Change, 0, len(rs))
		for _, r := range rs {
			if r.Version > t.last {
				cs = append(cs, &Change{Change: r})
			}
		}
		h.adopt(t, cs)
		if h.topics[t.topicKey] == t && !h.workspaceRoom(t, cs) {
			// Its workspace's streams have no room for these changes now
			// (one commit changed more customers than a queue holds: a
			// /v1/batch of many people). They are read again, from the
			// same version, once the streams took what they have.
			h.postpone(t)
			continue
		}
		for _, c := range cs {
			h.fanout(t, c)
			t.last = c.Version
		}
		if h.topics[t.topicKey] != t {
			continue
		}
		switch full := len(rs) >= h.opts.PageSize; {
		case full && !h.hasRoom(t):
			// More follows (one commit of many changes: a backfill) than
			// its subscribers have room for now. It is read once they took
			// what they have, not dropped for being slow (see drainBacklog).
			h.postpone(t)
		case full || t.again:
			t.again = false
			h.markDirty(t)
		}
	}
	return nil
}

// adopt makes the workspace stream of t's workspace own t before t hands it
// changes cs, when it does not yet: a topic a customer stream made, read
// before any wake of its customer (Wake owns it then) by a WakeWorkspace or
// a Resync, which mark every topic. Left unowned, it would end with its
// customer streams, and the next wake would make a new topic from the
// workspace stream's start, which reads these changes again: the workspace
// stream would get them twice. Owned, it keeps its last version for the
// workspace stream. A topic its last customer stream left while it was
// being read is put back for the same reason (unless another took its
// place). A topic that hands nothing over stays unowned, so that a refused
// subscription leaves nothing behind. Called with h.mu held.
func (h *Hub) adopt(t *topic, cs []*Change) {
	if t.owned || len(cs) == 0 {
		return
	}
	w := h.workspaces[t.ws]
	if w == nil {
		return
	}
	switch h.topics[t.topicKey] {
	case t:
	case nil:
		h.topics[t.topicKey] = t
	default:
		return
	}
	h.own(w, t)
}

// postpone puts t in the backlog, to be read again once its subscribers
// made room, or CatchUp from now (see drainBacklog). Called with h.mu held.
func (h *Hub) postpone(t *topic) {
	t.again = false // the read to come covers it
	if _, ok := h.backlog[t]; !ok {
		h.backlog[t] = h.opts.Now().Add(h.opts.CatchUp)
		h.backlogged.Add(1)
	}
}

// workspaceRoom reports whether every workspace stream of t's workspace has
// room for the changes of cs it takes. One read covers up to BatchSize
// customers, and every customer's changes go to every workspace stream:
// fanned out whole, a batch of one commit that changed more customers than
// a queue holds would fill a stream's queue however fast it reads. So a
// customer whose changes do not fit waits (the caller postpones it). A
// stream that has been refused changes for CatchUp without once taking all
// it held is dropped instead, so that what waits for it stays bounded; the
// others go on. Called with h.mu held.
func (h *Hub) workspaceRoom(t *topic, cs []*Change) bool {
	w := h.workspaces[t.ws]
	if w == nil || len(cs) == 0 {
		return true
	}
	now := h.opts.Now()
	room := true
	for s := range w.subs {
		n := 0
		for _, c := range cs {
			if s.wants(&c.Change) {
				n++
			}
		}
		if n == 0 {
			continue
		}
		ok, again := s.q.fits(n, h.opts.QueueSize)
		if ok {
			continue
		}
		since, known := w.refused[s]
		if !again || !known {
			since = now
			if w.refused == nil {
				w.refused = map[*subscriber]time.Time{}
			}
			w.refused[s] = since
		}
		if now.Sub(since) >= h.opts.CatchUp {
			h.dropped.Add(1)
			h.drop(s, ErrSlow)
		} else {
			room = false
		}
	}
	return room
}

// hasRoom reports whether every subscriber a read of t fans out to has room
// for a whole page. Called with h.mu held.
func (h *Hub) hasRoom(t *topic) bool {
	limit := h.opts.QueueSize - h.opts.PageSize
	for _, s := range t.subs {
		if s.q.len() > limit {
			return false
		}
	}
	if w := h.workspaces[t.ws]; w != nil {
		for s := range w.subs {
			if s.q.len() > limit {
				return false
			}
		}
	}
	return true
}

// drainBacklog queues the backlogged topics whose subscribers made room,
// and those that waited CatchUp: a read then drops the subscribers still
// full. It reports whether topics remain backlogged.
func (h *Hub) drainBacklog() bool {
	if h.backlogged.Load() == 0 {
		return false
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	now := h.opts.Now()
	for t, deadline := range h.backlog {
		if h.topics[t.topicKey] != t {
			delete(h.backlog, t)
		} else if now.After(deadline) || h.hasRoom(t) {
			delete(h.backlog, t)
			h.markDirty(t)
		}
	}
	h.backlogged.Store(int32(len(h.backlog)))
	return len(h.backlog) > 0
}

// emptied is every queue's emptied: a subscriber that took all it had may
// be what a backlogged topic waits for.
func (h *Hub) emptied() {
	if h.backlogged.Load() > 0 {
		h.kick()
	}
}

// baselines sets the starting version of topics a workspace stream created:
// the last change made before the stream started.
func (h *Hub) baselines(ctx context.Context, batch []*topic) error {
	type group struct {
		since time.Time
		ids   []int64
	}
	var need map[int64]*group
	h.mu.Lock()
	for _, t := range batch {
		if t.last >= 0 {
			continue
		}
		if need == nil {
			need = map[int64]*group{}
		}
		g := need[t.ws]
		if g == nil {
			g = &group{since: t.since}
			need[t.ws] = g
		}
		g.ids = append(g.ids, t.customer)
	}
	h.mu.Unlock()
	for ws, g := range need {
		h.reads.Add(1)
		m, err := h.feed.VersionsBefore(ctx, ws, g.ids, g.since)
		if err != nil {
			return err
		}
		h.mu.Lock()
		for _, id := range g.ids {
			if t := h.topics[topicKey{ws, id}]; t != nil && t.last < 0 {
				t.last = m[id]
			}
		}
		h.mu.Unlock()
	}
	return nil
}

// fanout queues c to the topic's subscribers and to the workspace streams
// that want it. Called with h.mu held.
func (h *Hub) fanout(t *topic, c *Change) {
	// Backwards: a subscriber deliver drops leaves its place to the last
	// one, which was served already.
	for i := len(t.subs) - 1; i >= 0; i-- {
		h.deliver(t.subs[i], c)
	}
	if w := h.workspaces[t.ws]; w != nil {
		for s := range w.subs {
			if s.wants(&c.Change) {
				h.deliver(s, c)
			}
		}
	}
}

// deliver queues c for s without waiting; a full queue drops s.
func (h *Hub) deliver(s *subscriber, c *Change) {
	if s.q.push(c, h.opts.QueueSize) {
		h.delivered.Add(1)
		return
	}
	h.dropped.Add(1)
	h.drop(s, ErrSlow)
}

// drop unregisters s and closes its queue with err. Called with h.mu held.
func (h *Hub) drop(s *subscriber, err error) {
	if s.closed {
		return
	}
	s.closed = true
	s.q.close(err)
	h.subs.Add(-1)
	if t := s.topic; t != nil {
		t.subs.remove(s)
		if len(t.subs) == 0 && !t.owned && h.topics[t.topicKey] == t {
			delete(h.topics, t.topicKey)
		}
	}
	if w := s.ws; w != nil {
		delete(w.subs, s)
		delete(w.refused, s)
		if len(w.subs) == 0 && h.workspaces[w.id] == w {
			delete(h.workspaces, w.id)
			for id, t := range w.owned {
				t.owned = false
				if len(t.subs) == 0 && h.topics[t.topicKey] == t {
					delete(h.topics, topicKey{w.id, id})
				}
			}
		}
	}
}

// ownedTopic returns a new topic of the workspace stream w, with w's
// baseline, tracked by w. Called with h.mu held.
func (h *Hub) ownedTopic(w *workspace, k topicKey) *topic {
	t := &topic{topicKey: k, last: -1}
	h.own(w, t)
	t.since = w.since // after own: a reset moves it
	return t
}

// own makes w track t, keeping it once its customer streams end; w starts
// over at its limit. Called with h.mu held.
func (h *Hub) own(w *workspace, t *topic) {
	if len(w.owned) >= h.opts.MaxWorkspaceTopics {
		h.resetWorkspace(w)
	}
	t.owned = true
	w.owned[t.customer] = t
}

// resetWorkspace forgets the customers a workspace stream tracks, except
// those customer streams follow too, and restarts its baseline at now.
// Called with h.mu held.
func (h *Hub) resetWorkspace(w *workspace) {
	for id, t := range w.owned {
		t.owned = false
		if len(t.subs) == 0 && h.topics[t.topicKey] == t {
			delete(h.topics, t.topicKey)
		}
		delete(w.owned, id)
	}
	w.since = h.opts.Now()
	h.opts.Logger.Warn("hub: workspace stream tracking reset", "workspace", w.id, "limit", h.opts.MaxWorkspaceTopics)
}

// register adds a subscriber to the customer's topic, creating the topic.
func (h *Hub) register(ws, customer int64) (*subscriber, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return nil, c360.Errorf(c360.EUNAVAILABLE, "the server is shutting down; reconnect")
	}
	k := topicKey{ws, customer}
	t := h.topics[k]
	if t == nil {
		t = &topic{topicKey: k, last: -1}
		if w := h.workspaces[ws]; w != nil {
			// A workspace stream follows every customer of the workspace,
			// so the topic starts at its baseline (since). Based on this
			// stream's version instead, the topic would skip a change
			// committed just before it and not yet woken here (another
			// replica's NOTIFY on its way), which the workspace stream has
			// never had; this stream skips what it has seen by version
			// (setBaseline). The workspace stream does not own the topic
			// yet: the wake of a change (Wake), or a read that hands the
			// workspace stream a change (adopt), makes it own it. Until then it
			// lives as long as its subscribers, so that a subscription
			// refused (an unknown id) leaves nothing behind, and the
			// customers a workspace stream tracks are those that changed.
			t.since = w.since
		}
		h.topics[k] = t
	}
	s := &subscriber{q: newQueue(), topic: t}
	s.q.emptied = h.emptied
	t.subs.add(s)
	h.subs.Add(1)
	return s, nil
}

// setBaseline gives a new topic its starting version, read after the first
// subscriber registered, and reads it if it was woken meanwhile.
func (h *Hub) setBaseline(s *subscriber, version int64) {
	h.mu.Lock()
	t := s.topic
	// A topic a workspace stream owns, or one registered while a workspace
	// stream was open, starts where that stream started (since): the customer stream's version may
	// already include a change the workspace stream has yet to get. The
	// customer stream skips what it has seen by version.
	if t.last < 0 && !t.owned && t.since.IsZero() {
		t.last = version
		if t.waiting {
			t.waiting = false
			h.markDirty(t)
		}
	}
	h.mu.Unlock()
	h.kick()
}

// unregister drops s, if the hub has not already.
func (h *Hub) unregister(s *subscriber) {
	if s == nil {
		return
	}
	h.mu.Lock()
	h.drop(s, ErrClosed)
	h.mu.Unlock()
}
