package postgres

import (
	"strconv"
	"time"

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
	for _, q := range append(find.QueuedQueries, reads.batch(ws).QueuedQueries...) {
		sql, args = append(sql, q.SQL), append(args, q.Arguments)
	}
	return append(sql, sqlW...), append(args, argsW...)
}
