package postgres

import (
	"errors"
	"testing"
	"time"

	"github.com/c360dev/c360"
	"github.com/c360dev/c360/identity"
)

// apply never writes what the group did not read: an event that reaches a
// customer whose traits, or whose open conversations, readsFor did not
// read, or an unsettled event with an owner whose identities it did not
// read, sends the group to the per-event path (errSlowPath), and an event that
// finds no id reserved for it is an error. None is reachable while
// readsFor is right; these guard against it being wrong.
func TestApplyRefusesWhatTheGroupDidNotRead(t *testing.T) {
	now := time.Now()
	phone := identity.Identity{Type: "phone", Value: "+14155550100"}
	email := identity.Identity{Type: "email", Value: "ann@example.com"}
	state := func() *groupState {
		return &groupState{
			owners:   map[identity.Identity]int64{phone: 7},
			lastSeen: map[identity.Identity]time.Time{phone: now},
			existing: map[int64][]identity.Identity{7: {phone}},
			// Customer 7 is locked, its traits not read.
			cust:      map[int64]*customerRow{7: {id: 7, version: 3}},
			convs:     map[convKey]int64{},
			convsRead: map[int64]bool{},
			idsRead:   map[int64]bool{},
			freeEvent: []int64{100},
			freeConv:  []int64{200},
			freeMsg:   []int64{300},
		}
	}
	event := func(ev *c360.Event, ids []identity.Identity) *groupEvent {
		ev.Source, ev.DedupeKey, ev.OccurredAt = "test", "k", now
		if ids == nil {
			ids = []identity.Identity{phone}
		}
		return &groupEvent{p: &preparedEvent{ev: ev, identities: ids}, dupOf: -1}
	}
	rules := identity.DefaultRules()
	// What apply does with a case's event.
	const (
		applied  = "applied"
		slowPath = "the per-event path"
		failed   = "an error of its own"
	)
	for name, tc := range map[string]struct {
		ev   *c360.Event
		ids  []identity.Identity // the event's; just phone, which 7 owns, when nil
		st   func(*groupState)
		want string
	}{
		// An email no one owns with 7's phone: not settled, judged on 7's
		// identities.
		"identities not read": {ev: &c360.Event{Type: c360.EventTrack, Name: "Viewed"},
			ids: []identity.Identity{phone, email}, want: slowPath},
		"identities read": {ev: &c360.Event{Type: c360.EventTrack, Name: "Viewed"},
			ids: []identity.Identity{phone, email}, st: func(st *groupState) { st.idsRead[7] = true }, want: applied},
		"traits not read": {ev: &c360.Event{Type: c360.EventIdentify, Traits: map[string]any{"plan": "pro"}}, want: slowPath},
		"traits if absent not read": {ev: &c360.Event{Type: c360.EventMessage, TraitsIfAbsent: map[string]any{"name": "Ann"},
			Message: &c360.MessageInput{Channel: c360.ChannelSMS, Direction: c360.DirectionInbound}},
			st: func(st *groupState) { st.convsRead[7] = true }, want: slowPath},
		"conversations not read": {ev: &c360.Event{Type: c360.EventMessage,
			Message: &c360.MessageInput{Channel: c360.ChannelSMS, Direction: c360.DirectionInbound}}, want: slowPath},
		"no event id left": {ev: &c360.Event{Type: c360.EventTrack, Name: "Viewed"},
			st: func(st *groupState) { st.freeEvent = nil }, want: failed},
		"all read": {ev: &c360.Event{Type: c360.EventMessage,
			Message: &c360.MessageInput{Channel: c360.ChannelSMS, Direction: c360.DirectionInbound}},
			st: func(st *groupState) { st.convsRead[7] = true }, want: applied},
	} {
		st := state()
		if tc.st != nil {
			tc.st(st)
		}
		err := st.apply(rules, event(tc.ev, tc.ids), newGroupWrites(1, now), now)
		got := failed
		switch {
		case err == nil:
			got = applied
		case errors.Is(err, errSlowPath):
			got = slowPath
		}
		if got != tc.want {
			t.Errorf("%s: %s (%v), want %s", name, got, err, tc.want)
		}
	}
}
