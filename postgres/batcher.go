package postgres

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/c360dev/c360"
	"github.com/c360dev/c360/identity"
)

// Group commit. Concurrent Ingest calls of one workspace are queued and
// applied together: a few workers each take every request waiting for the
// same workspace (up to maxGroupEvents events) and apply them in one
// transaction with the group path. One commit then acknowledges them all,
// and the per-event cost of locks, lookups and writes is shared.
//
// The queue is bounded. When it is full, Ingest refuses at once with
// UNAVAILABLE, which the HTTP layer answers 503 with Retry-After: providers
// retry, so overload becomes delay rather than loss or unbounded memory.
//
// A group that fails is retried request by request, so one poison event
// fails only its own request and never the others queued with it.

// IngestConfig sizes group commit.
type IngestConfig struct {
	// Workers apply groups concurrently (C360_INGEST_WORKERS, default 2).
	// Fewer workers make larger groups; on 2 cores, 2 measured best.
	Workers int
	// Queue bounds the requests waiting (C360_INGEST_QUEUE, default 2048).
	Queue int
	// MaxGroupEvents bounds one group's events (default 512).
	MaxGroupEvents int
}

// ingestReq is one Ingest call waiting for its group.
type ingestReq struct {
	ctx      context.Context
	ws       int64
	rules    identity.Rules
	prepared []*preparedEvent
	results  []c360.IngestResult
	changed  []int64
	err      error
	done     chan struct{}
}

type batcher struct {
	queue chan *ingestReq
	quit  chan struct{}
	wg    sync.WaitGroup
	max   int
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
	b := &batcher{queue: make(chan *ingestReq, cfg.Queue), quit: make(chan struct{}), max: cfg.MaxGroupEvents}
	for i := 0; i < cfg.Workers; i++ {
		b.wg.Add(1)
		go func() {
			defer b.wg.Done()
			db.groupWorker(b)
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
	for {
		select {
		case r := <-b.queue:
			r.err = c360.Errorf(c360.EUNAVAILABLE, "the server is shutting down; retry")
			close(r.done)
		default:
			return
		}
	}
}

// submit applies the prepared events, in a group when group commit runs.
func (db *DB) submit(ctx context.Context, ws int64, rules identity.Rules, prepared []*preparedEvent) ([]c360.IngestResult, []int64, error) {
	r := &ingestReq{ctx: ctx, ws: ws, rules: rules, prepared: prepared, done: make(chan struct{})}
	b := db.batch
	if b == nil {
		db.runGroup([]*ingestReq{r})
		return r.results, r.changed, r.err
	}
	select {
	case b.queue <- r:
	case <-ctx.Done():
		return nil, nil, ctx.Err()
	default:
		return nil, nil, c360.Errorf(c360.EUNAVAILABLE, "ingest is overloaded; retry")
	}
	select {
	case <-r.done:
		return r.results, r.changed, r.err
	case <-ctx.Done():
		// The group may still commit; a retry then finds the events stored.
		return nil, nil, ctx.Err()
	}
}

func (db *DB) groupWorker(b *batcher) {
	var carry *ingestReq
	for {
		head := carry
		carry = nil
		if head == nil {
			select {
			case head = <-b.queue:
			case <-b.quit:
				return
			}
		}
		group := []*ingestReq{head}
		n := len(head.prepared)
	gather:
		for n < b.max {
			select {
			case r := <-b.queue:
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

// runGroup applies the requests in one transaction and signals each.
func (db *DB) runGroup(group []*ingestReq) {
	live := group[:0:0]
	for _, r := range group {
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
	ctx, cancel := context.WithTimeout(context.Background(), groupTimeout)
	defer cancel()
	results, changed, err := db.applyRequests(ctx, live)
	if err != nil && len(live) > 1 && c360.ErrorCode(err) != c360.EUNAVAILABLE {
		// Apply the requests one by one: a request that needs the per-event
		// path (a merge, say) or that fails then holds up only itself.
		for _, r := range live {
			r.results, r.changed, r.err = db.applyRequests(ctx, []*ingestReq{r})
			if r.err == nil {
				db.committed(r.ws, r.changed)
			}
			// Dead letters (deadletter.go): r failed on its own.
			db.keepDeadLetters(ctx, r)
			closeDone(r)
		}
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

func closeDone(r *ingestReq) {
	if r.done != nil {
		close(r.done)
	}
}

// applyRequests applies the requests' events in one transaction, with the
// group path when it can, else event by event.
func (db *DB) applyRequests(ctx context.Context, reqs []*ingestReq) ([]c360.IngestResult, []int64, error) {
	ws, rules := reqs[0].ws, reqs[0].rules
	var flat []*preparedEvent
	for _, r := range reqs {
		flat = append(flat, r.prepared...)
	}
	var (
		results []c360.IngestResult
		changed []int64
	)
	var err error
	for attempt := 0; attempt < 3; attempt++ {
		err = db.inTx(ctx, ws, func(tx pgx.Tx) error {
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
	err = db.inTx(ctx, ws, func(tx pgx.Tx) error {
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
