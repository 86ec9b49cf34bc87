package postgres

import (
	"context"
	"errors"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/c360dev/c360"
	"github.com/c360dev/c360/identity"
)

// Group commit. Concurrent Ingest calls of one workspace are queued and
// applied together: a few workers each take every request waiting for the
// same workspace (up to maxGroupEvents events) and apply them in one
// transaction with the group path. One commit then acknowledges them all,
// and the per-event cost of locks, lookups and writes is shared.
//
// Each worker has its own queue, and an event goes to the worker its
// routing identity hashes to (see shardOf): the events of one person meet
// in one worker's groups, so two workers' transactions rarely want the
// same identity locks and run side by side instead of one after the other.
// A request whose events belong to several workers is split; it is
// answered when every part has committed (or one has failed: the parts
// that committed are then found stored by the caller's retry).
//
// The queue is bounded. When it is full, Ingest refuses at once with
// UNAVAILABLE, which the HTTP layer answers 503 with Retry-After: providers
// retry, so overload becomes delay rather than loss or unbounded memory.
//
// A group that fails is retried request by request, so one poison event
// fails only its own request and never the others queued with it. So is a
// group that waited too long for a lock (55P03): one customer's row held
// elsewhere (a merge of a large customer, another replica's group) must
// not fail the requests of customers that are free. The group's attempt
// waits for a lock at most groupLockWait, so such a customer holds up its
// queue (every workspace's) briefly; the request alone then waits the full
// lock_timeout, and only it fails if its customer stays locked, with the
// requests queued that share an identity with it. After that timeout the
// others are tried together once more, briefly, and all fail if that times
// out too: the queue is held up about one lock_timeout, not
// one wait per request. A group whose statement outlasted
// statement_timeout (57014) is answered UNAVAILABLE whole: the database is
// slow, and a retry per request would only send it more slow statements.

// IngestConfig sizes group commit.
type IngestConfig struct {
	// Workers apply groups concurrently (C360_INGEST_WORKERS, default 2).
	// Fewer workers make larger groups; on 2 cores, 2 measured best.
	Workers int
	// Queue bounds the requests (or parts of requests) waiting, over all
	// workers (C360_INGEST_QUEUE, default 2048).
	Queue int
	// MaxGroupEvents bounds one group's events (default 512).
	MaxGroupEvents int
}

// ingestReq is one Ingest call, or the part of one that a worker applies,
// waiting for its group.
type ingestReq struct {
	ctx      context.Context
	ws       int64
	rules    identity.Rules
	prepared []*preparedEvent
	index    []int // position of each prepared event in the call; nil: the same
	results  []c360.IngestResult
	changed  []int64
	err      error
	done     chan struct{}
}

type batcher struct {
	shards []chan *ingestReq // one queue per worker
	quit   chan struct{}
	wg     sync.WaitGroup
	max    int
}

// StartIngest starts group commit with cfg; Close stops it. Without it,
// each Ingest call runs its own transaction.
func (db *DB) StartIngest(cfg IngestConfig) {
	if cfg.Workers < 1 {
		cfg.Workers = 2
	}
	if cfg.Queue < 1 {
		cfg.Queue = 2048
	}
	if cfg.MaxGroupEvents < 1 {
		cfg.MaxGroupEvents = 512
	}
	b := &batcher{shards: make([]chan *ingestReq, cfg.Workers), quit: make(chan struct{}), max: cfg.MaxGroupEvents}
	for i := range b.shards {
		b.shards[i] = make(chan *ingestReq, max(1, cfg.Queue/cfg.Workers))
		b.wg.Add(1)
		go func() {
			defer b.wg.Done()
			db.groupWorker(b, b.shards[i])
		}()
	}
	db.batch = b
}

// stopIngest drains nothing: it stops taking new groups, lets the groups
// in flight commit, and fails what is still queued with UNAVAILABLE.
func (db *DB) stopIngest() {
	b := db.batch
	if b == nil {
		return
	}
	db.batch = nil
	close(b.quit)
	b.wg.Wait()
	for _, q := range b.shards {
	drain:
		for {
			select {
			case r := <-q:
				r.err = c360.Errorf(c360.EUNAVAILABLE, "the server is shutting down; retry")
				close(r.done)
			default:
				break drain
			}
		}
	}
}

// shardOf picks the worker of an event from its routing identity: the one
// of the highest-ranked type (user_id before email before anonymous_id,
// by default), so that a person's events go to one worker whichever of
// their identifiers each carries.
func shardOf(ws int64, rules identity.Rules, p *preparedEvent, shards int) int {
	if shards == 1 || len(p.identities) == 0 {
		return 0
	}
	best := p.identities[0]
	for _, id := range p.identities[1:] {
		if rules.Rank(id.Type) > rules.Rank(best.Type) {
			best = id
		}
	}
	return int(uint64(identity.Key(ws, best)) % uint64(shards))
}

// split divides a call's events among the workers' queues, keeping their
// order within each part. A call that stays on one worker is one part, with
// no index. Parts commit independently, in no set order, so a call whose
// events would share an identifier across parts stays whole on the worker
// of its first event: two users signing in on one device, say, must see
// the device's anonymous id attached in the order the calls came, and a
// chatbot request (its events all carry the session's identifiers) is
// stored whole or not at all.
func (b *batcher) split(ctx context.Context, ws int64, rules identity.Rules, prepared []*preparedEvent) ([]*ingestReq, []int) {
	shardOfEvent := make([]int, len(prepared))
	owner := map[identity.Identity]int{}
	whole := false
	for i, p := range prepared {
		k := shardOf(ws, rules, p, len(b.shards))
		shardOfEvent[i] = k
		for _, id := range p.identities {
			if o, ok := owner[id]; !ok {
				owner[id] = k
			} else if o != k {
				whole = true
			}
		}
	}
	if whole {
		for i := range shardOfEvent {
			shardOfEvent[i] = shardOfEvent[0]
		}
	}
	parts := map[int]*ingestReq{}
	var shards []int // in order of first appearance
	for i, p := range prepared {
		k := shardOfEvent[i]
		r := parts[k]
		if r == nil {
			r = &ingestReq{ctx: ctx, ws: ws, rules: rules, done: make(chan struct{})}
			parts[k], shards = r, append(shards, k)
		}
		r.prepared, r.index = append(r.prepared, p), append(r.index, i)
	}
	out := make([]*ingestReq, len(shards))
	for i, k := range shards {
		out[i] = parts[k]
	}
	if len(out) == 1 {
		out[0].index = nil
	}
	return out, shards
}

// submit applies the prepared events, in a group when group commit runs.
func (db *DB) submit(ctx context.Context, ws int64, rules identity.Rules, prepared []*preparedEvent) ([]c360.IngestResult, []int64, error) {
	b := db.batch
	if b == nil {
		r := &ingestReq{ctx: ctx, ws: ws, rules: rules, prepared: prepared}
		db.runGroup([]*ingestReq{r})
		return r.results, r.changed, r.err
	}
	parts, shards := b.split(ctx, ws, rules, prepared)
	for i, r := range parts {
		select {
		case b.shards[shards[i]] <- r:
		case <-ctx.Done():
			return nil, nil, ctx.Err()
		default:
			// Parts queued already may still commit; the retry finds them.
			return nil, nil, c360.Errorf(c360.EUNAVAILABLE, "ingest is overloaded; retry")
		}
	}
	results := make([]c360.IngestResult, len(prepared))
	var changed []int64
	var failed error
	var kept *c360.DeadLetteredError
	for _, r := range parts {
		select {
		case <-r.done:
		case <-ctx.Done():
			// The groups may still commit; a retry then finds the events stored.
			return nil, nil, ctx.Err()
		}
		var dl *c360.DeadLetteredError
		switch {
		case r.err == nil && r.index == nil:
			results = r.results
			changed = append(changed, r.changed...)
		case r.err == nil:
			for j, k := range r.index {
				results[k] = r.results[j]
			}
			changed = append(changed, r.changed...)
		case errors.As(r.err, &dl) && kept == nil:
			kept = &c360.DeadLetteredError{IDs: slices.Clone(dl.IDs), Err: dl.Err}
		case errors.As(r.err, &dl):
			kept.IDs = append(kept.IDs, dl.IDs...)
		case failed == nil:
			failed = r.err
		}
	}
	// A failure of the system's comes first: the caller answers it (503)
	// and the client's retry stores the rest exactly once. Dead letters
	// alone are the events' own failure, kept durably.
	if failed != nil {
		return nil, nil, failed
	}
	if kept != nil {
		return nil, nil, kept
	}
	return results, changed, nil
}

func (db *DB) groupWorker(b *batcher, queue chan *ingestReq) {
	var carry *ingestReq
	for {
		head := carry
		carry = nil
		if head == nil {
			select {
			case head = <-queue:
			case <-b.quit:
				return
			}
		}
		group := []*ingestReq{head}
		n := len(head.prepared)
	gather:
		for n < b.max {
			select {
			case r := <-queue:
				if r.ws != head.ws {
					carry = r
					break gather
				}
				group = append(group, r)
				n += len(r.prepared)
			default:
				break gather
			}
		}
		db.runGroup(group)
	}
}

// groupTimeout bounds one group's transaction, whoever is waiting for it.
// It stays under Twilio's 15 s webhook timeout: a provider is answered
// (503 when the database does not answer) before it gives up and retries.
const groupTimeout = 14 * time.Second

// runGroup applies the requests in one transaction and signals each. The
// group, with every retry of its requests, has groupTimeout from now: its
// callers are answered within it, whatever fails.
func (db *DB) runGroup(group []*ingestReq) {
	ctx, cancel := context.WithTimeout(context.Background(), groupTimeout)
	defer cancel()
	db.applyTogether(ctx, group, true)
}

// applyTogether applies reqs in one transaction within ctx and answers each,
// applying them one by one when the group fails in a way one request can
// cause for all (applyAlone). patient: a request alone may wait the full
// lock_timeout; it is false for the requests left once one alone has timed
// out, which are answered after at most one more short wait (applyAlone).
func (db *DB) applyTogether(ctx context.Context, reqs []*ingestReq, patient bool) {
	live := reqs[:0:0]
	for _, r := range reqs {
		if r.ctx.Err() != nil {
			r.err = r.ctx.Err() // gave up before its group started: nothing written
			closeDone(r)
			continue
		}
		live = append(live, r)
	}
	if len(live) == 0 {
		return
	}
	results, changed, err := db.applyRequests(ctx, live, len(live) > 1 || !patient)
	if err != nil && len(live) > 1 && (c360.ErrorCode(err) != c360.EUNAVAILABLE || patient && lockedOut(ctx, err)) {
		db.applyAlone(ctx, live, patient)
		return
	}
	if err == nil {
		db.committed(live[0].ws, changed)
	}
	off := 0
	for _, r := range live {
		r.err = err
		if err == nil {
			r.results = results[off : off+len(r.prepared)]
			r.changed = changed
		}
		off += len(r.prepared)
		if len(live) == 1 {
			// Dead letters (deadletter.go): r failed on its own.
			db.keepDeadLetters(ctx, r)
		}
		closeDone(r)
	}
}

// applyAlone applies the requests one by one, each in its own transaction
// within the group's ctx: a request that needs the per-event path (a
// merge, say), that fails, or whose customer is locked then holds up only
// itself. One whose caller gave up meanwhile is not tried (the group wrote
// nothing).
//
// Once one request alone has timed out on a lock or a statement, the lock
// may be wider than a customer (a migration's on a table) or the database
// slow, and a wait per request would hold the queue (every workspace's)
// one timeout per request, past a provider's patience. So the requests left
// are tried once more together, with the group's short lock wait
// (applyTogether, not patient), and answered UNAVAILABLE if that times out
// too: the queue is held up about one lock_timeout (or statement_timeout)
// and two group waits, whatever the group's size. The requests left that
// share an identity with the one that timed out are not in that attempt:
// likely of the same customer, they would wait for the same lock and fail
// the free customers' requests with them. They are answered UNAVAILABLE
// with it, at once.
func (db *DB) applyAlone(ctx context.Context, reqs []*ingestReq, patient bool) {
	for i, r := range reqs {
		switch {
		case r.ctx.Err() != nil:
			r.err = r.ctx.Err()
		case ctx.Err() != nil:
			// The group's time ran out: the callers are answered in it.
			r.err = c360.Errorf(c360.EUNAVAILABLE, "ingest timed out; retry")
		default:
			r.results, r.changed, r.err = db.applyRequests(ctx, []*ingestReq{r}, !patient)
			if r.err == nil {
				db.committed(r.ws, r.changed)
			}
			// Dead letters (deadletter.go): r failed on its own.
			db.keepDeadLetters(ctx, r)
		}
		closeDone(r)
		if rest := reqs[i+1:]; len(rest) > 0 && timedOut(ctx, r.err) {
			if patient {
				// The requests left that share an identity with r would
				// wait for the same lock, and fail the others' attempt
				// with them: they are answered as r was, at once.
				held := reqIdentities(r)
				var others []*ingestReq
				for _, r2 := range rest {
					if carriesAny(r2, held) {
						r2.err = r.err
						closeDone(r2)
						continue
					}
					others = append(others, r2)
				}
				rest = others
				if len(rest) > 0 {
					db.applyTogether(ctx, rest, false)
				}
				return
			}
			for _, r2 := range rest {
				r2.err = r.err
				closeDone(r2)
			}
			return
		}
	}
}

// reqIdentities is the set of identities of r's events. A request of the
// same customer reached through another of its identifiers is not in it.
func reqIdentities(r *ingestReq) map[identity.Identity]struct{} {
	set := map[identity.Identity]struct{}{}
	for _, p := range r.prepared {
		for _, id := range p.identities {
			set[id] = struct{}{}
		}
	}
	return set
}

// carriesAny reports whether an event of r carries one of the identities.
func carriesAny(r *ingestReq, ids map[identity.Identity]struct{}) bool {
	for _, p := range r.prepared {
		for _, id := range p.identities {
			if _, ok := ids[id]; ok {
				return true
			}
		}
	}
	return false
}

// lockedOut reports a failure of the group's transaction that one of its
// customers can cause for all: a lock wait past the group's lock timeout
// (55P03), while the group's own time (ctx) had not run out. A statement
// past statement_timeout (57014) is not: the group's lock waits are kept
// shorter (groupLockTimeoutSQL), so a statement that timed out was slow, the
// database with it, and retrying each request would only send it again.
func lockedOut(ctx context.Context, err error) bool {
	var pgErr *pgconn.PgError
	return ctx.Err() == nil && errors.As(err, &pgErr) && pgErr.Code == "55P03"
}

// timedOut reports a request's failure on a lock wait (55P03) or a
// statement (57014) past its timeout, while the group's own time (ctx),
// which cancels a statement with 57014 too, had not run out.
func timedOut(ctx context.Context, err error) bool {
	var pgErr *pgconn.PgError
	return ctx.Err() == nil && errors.As(err, &pgErr) && (pgErr.Code == "55P03" || pgErr.Code == "57014")
}

// groupLockWait bounds the lock waits of a group's transaction. A group
// takes a few milliseconds; one that waits longer for a lock is likely
// waiting for a customer held elsewhere, and is retried request by request
// (applyAlone), the first with the full lock_timeout.
const groupLockWait = 500 * time.Millisecond

// groupLockTimeoutSQL computes, in the transaction's own session, the
// lock_timeout of a group's attempt: groupLockWait, or less when the
// session's lock_timeout or statement_timeout (as PostgreSQL read them,
// whatever unit the URL wrote them in; 0 is none) are shorter. A group
// never waits for a lock longer than a request alone, and its lock wait
// ends, as 55P03, with a quarter of statement_timeout to spare, so a group
// held up by a lock is never taken for a slow statement (57014, lockedOut).
var groupLockTimeoutSQL = `(SELECT greatest(1, floor(least(` + strconv.FormatInt(groupLockWait.Milliseconds(), 10) + `,
	nullif(extract(epoch FROM current_setting('lock_timeout')::interval) * 1000, 0),
	nullif(extract(epoch FROM current_setting('statement_timeout')::interval) * 1000, 0) * 3 / 4)))::bigint || 'ms')`

// groupBeginSQL is beginSQL with the transaction's lock_timeout set to the
// group's (groupLockTimeoutSQL), in the same statement: no round trip more.
func groupBeginSQL(ws int64) string {
	return beginSQL(ws) + ", set_config('lock_timeout', " + groupLockTimeoutSQL + ", true)"
}

func closeDone(r *ingestReq) {
	if r.done != nil {
		close(r.done)
	}
}

// applyRequests applies the requests' events in one transaction, with the
// group path when it can, else event by event; with brief, its lock waits
// are bounded by the group's lock timeout instead of lock_timeout.
func (db *DB) applyRequests(ctx context.Context, reqs []*ingestReq, brief bool) ([]c360.IngestResult, []int64, error) {
	ws, rules := reqs[0].ws, reqs[0].rules
	var flat []*preparedEvent
	for _, r := range reqs {
		flat = append(flat, r.prepared...)
	}
	var (
		results []c360.IngestResult
		changed []int64
	)
	begin := beginSQL(ws)
	if brief {
		begin = groupBeginSQL(ws)
	}
	inTx := func(fn func(tx pgx.Tx) error) error {
		return db.retryTx(ctx, func() (pgx.Tx, error) {
			return db.app.BeginTx(ctx, pgx.TxOptions{BeginQuery: begin})
		}, fn)
	}
	var err error
	for attempt := 0; attempt < 3; attempt++ {
		err = inTx(func(tx pgx.Tx) error {
			var err error
			results, changed, err = db.ingestGroup(ctx, tx, ws, rules, flat)
			return err
		})
		if !errors.Is(err, errClaimRace) {
			break
		}
	}
	if errors.Is(err, errClaimRace) {
		err = c360.Errorf(c360.EUNAVAILABLE, "events were being stored concurrently; retry")
	}
	if !errors.Is(err, errSlowPath) {
		return results, changed, err
	}
	if len(reqs) > 1 {
		return nil, nil, err // runGroup applies each request alone
	}
	err = inTx(func(tx pgx.Tx) error {
		results, changed = results[:0], changed[:0]
		for _, p := range flat {
			r, touched, err := db.ingestOne(ctx, tx, ws, rules, p)
			if err != nil {
				return err
			}
			results = append(results, r)
			changed = append(changed, touched...)
		}
		return nil
	})
	return results, changed, err
}
