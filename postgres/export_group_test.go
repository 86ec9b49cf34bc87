package postgres

import (
	"context"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/c360dev/c360"
	"github.com/c360dev/c360/identity"
)

// GroupStatements returns every statement a group of n inbound messages
// sends, one from each of the customers (given by id, each with a phone),
// in the order sent: its reads, then its writes. Each comes with its
// arguments.
func GroupStatements(ws int64, customers []int64) (sql []string, args [][]any) {
	now := time.Now()
	evs := make([]*groupEvent, len(customers))
	for i := range customers {
		phone := identity.Identity{Type: "phone", Value: "+1415555" + strconv.Itoa(1000+i)}
		ev := &c360.Event{Type: c360.EventMessage, Source: "twilio", DedupeKey: "SM" + strconv.Itoa(i), OccurredAt: now,
			Message: &c360.MessageInput{Channel: "sms", Direction: c360.DirectionInbound, Body: "hi"}}
		evs[i] = &groupEvent{p: &preparedEvent{ev: ev, identities: []identity.Identity{phone}}, dupOf: -1}
	}
	find, _ := findBatch(ws, evs)
	reads := groupReads{lock: customers, identities: customers, traits: customers, conversations: customers,
		events: len(customers), customers: len(customers), messages: len(customers)}
	sqlW, argsW := GroupWriteStatements(ws, len(customers))
	sql, args = statementsOf(append(find.QueuedQueries, reads.batch(ws).QueuedQueries...))
	return append(sql, sqlW...), append(args, argsW...)
}

// PerEventReadStatements returns the per-event path's reads of the owners
// of the customers' phones (as GroupStatements names them), of the
// customers to lock and of their identities, with their arguments.
func PerEventReadStatements(ws int64, customers []int64) (sql []string, args [][]any) {
	types, values := make([]string, len(customers)), make([]string, len(customers))
	for i := range customers {
		types[i], values[i] = "phone", "+1415555"+strconv.Itoa(1000+i)
	}
	return []string{ownersSQL, lockCustomersSQL, identitiesOfSQL},
		[][]any{{ws, types, values}, {ws, customers}, {ws, customers}}
}

// IngestByGroupOnly applies events with the group path alone, in one
// transaction: it fails (errSlowPath) where Ingest would have fallen back
// to the per-event path.
func (db *DB) IngestByGroupOnly(ctx context.Context, ws int64, events []*c360.Event) ([]c360.IngestResult, error) {
	rules, prepared, err := db.prepareAll(ctx, ws, events)
	if err != nil {
		return nil, err
	}
	var results []c360.IngestResult
	err = db.inTx(ctx, ws, func(tx pgx.Tx) error {
		var err error
		results, _, err = db.ingestGroup(ctx, tx, ws, rules, prepared)
		return err
	})
	return results, err
}
