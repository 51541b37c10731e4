package cluster

import (
	"errors"
	"reflect"
	"testing"
	"time"

	"github.com/mutexd/mutexd/internal/engine"
)

// TestResultRoundTrip: a leader's result reaches the follower that
// forwarded the entry with every field and the same error, so the API
// answers what the leader's replica would have.
func TestResultRoundTrip(t *testing.T) {
	at := time.Unix(1_800_000_000, 123).UTC()
	grant := engine.Grant{Key: "k", Token: engine.Token{1, 2}, Fence: 7, Owner: "o", TTL: time.Second, ExpiresAt: at,
		Waited: time.Millisecond, Previous: engine.Previous{Fence: 6, Outcome: engine.OutcomeExpired, EndedAt: at}}
	for _, r := range []*result{
		{grant: grant},
		{ended: engine.Ended{Fence: 7, Held: time.Second}},
		{renewal: engine.Renewal{Fence: 7, TTL: time.Second, ExpiresAt: at}, err: &engine.MaxHoldError{ExpiresAt: at}},
		{n: 3}, {ok: true},
		{err: &engine.TimeoutError{Waiters: 4}},
		{err: &engine.LeaseEndedError{Fence: 7, Outcome: engine.OutcomeReleased, EndedAt: at}},
		{err: &engine.LimitMismatchError{Limit: 3}},
		{err: &engine.DrainedError{Reason: "maintenance"}},
		{err: engine.ErrNotHolder}, {err: engine.ErrNotHeld}, {err: engine.ErrTooManyKeys}, {err: engine.ErrTooManyWaiters},
		{err: engine.ErrAborted}, {err: engine.ErrSuperseded}, {err: engine.ErrFencesExhausted}, {err: engine.ErrUnavailable},
		{err: errUnpromoted},
	} {
		b, err := encodeResult(r)
		if err != nil {
			t.Fatal(err)
		}
		got, queued, err := decodeResult(b)
		if err != nil || queued {
			t.Fatalf("decode %s: %v, queued %v", b, err, queued)
		}
		if !reflect.DeepEqual(got.grant, r.grant) || got.ended != r.ended || got.renewal != r.renewal || got.n != r.n || got.ok != r.ok {
			t.Errorf("%s: got %+v, want %+v", b, got, r)
		}
		if (r.err == nil) != (got.err == nil) || r.err != nil && (got.err.Error() != r.err.Error() || !errors.Is(got.err, errors.Unwrap(r.err)) && !errors.Is(got.err, r.err)) {
			t.Errorf("%s: error %v, want %v", b, got.err, r.err)
		}
	}
	b, _ := encodeResult(&result{waiting: &engine.Waiting{}})
	if _, queued, _ := decodeResult(b); !queued {
		t.Errorf("a queued acquire's result %s does not say so", b)
	}
}
