package api

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/mutexd/mutexd/internal/engine"
)

// FuzzAppendEvent checks the event encoder with any key, owner and
// numbers: the data is one line (an SSE data field ends at a newline) of
// valid JSON whose type is the event's name and whose key and owner
// decode back to the input. Keys and owners reach the console this way.
func FuzzAppendEvent(f *testing.F) {
	f.Add(uint8(engine.EventGranted), "user:42", "w1", uint64(1795687745297011), int64(2500), 3)
	f.Add(uint8(engine.EventEnded), "<img src=x onerror=alert(1)>", "o\n\"", uint64(1), int64(0), 0)
	f.Add(uint8(engine.EventQueued), "a\u2028b", "\xff", uint64(0), int64(-1), -5)
	f.Fuzz(func(t *testing.T, typ uint8, key, owner string, fence uint64, ms int64, pos int) {
		ev := engine.Event{
			Type: engine.EventType(typ%uint8(engine.EventDelayed) + 1), Key: key, Owner: owner, Fence: fence,
			Time: time.Date(2026, 11, 26, 10, 0, 0, 0, time.UTC), ExpiresAt: time.Date(2026, 11, 26, 10, 1, 0, 0, time.UTC),
			Waited: time.Duration(ms) * time.Millisecond, Held: time.Duration(ms) * time.Millisecond,
			Outcome: engine.Outcome(typ % 5), Position: pos, FromQueue: ms%2 == 0,
			Previous: engine.Previous{Fence: fence / 2, Outcome: engine.Outcome(typ % 5)},
			Reason:   owner,
		}
		b := appendEvent(nil, 42, &ev)
		if strings.ContainsAny(string(b), "\r\n") {
			t.Fatalf("event data spans lines: %q", b)
		}
		var got map[string]any
		if err := json.Unmarshal(b, &got); err != nil {
			t.Fatalf("appendEvent = %s: invalid JSON: %v", b, err)
		}
		if got["type"] != eventName(&ev) || got["id"] != 42.0 {
			t.Fatalf("appendEvent = %s: type %v id %v, want %s 42", b, got["type"], got["id"], eventName(&ev))
		}
		if utf8.ValidString(key) && got["key"] != key || utf8.ValidString(owner) && got["owner"] != owner {
			t.Fatalf("appendEvent = %s: key/owner do not round-trip %q %q", b, key, owner)
		}
		if _, ok := got["token"]; ok {
			t.Fatalf("appendEvent = %s carries a token", b)
		}
	})
}

func TestEventNames(t *testing.T) {
	tests := []struct {
		ev   engine.Event
		want string
	}{
		{engine.Event{Type: engine.EventQueued}, "queued"},
		{engine.Event{Type: engine.EventGranted}, "granted"},
		{engine.Event{Type: engine.EventRenewed}, "renewed"},
		{engine.Event{Type: engine.EventEnded, Outcome: engine.OutcomeReleased}, "released"},
		{engine.Event{Type: engine.EventEnded, Outcome: engine.OutcomeFailed}, "released"},
		{engine.Event{Type: engine.EventEnded, Outcome: engine.OutcomeExpired}, "expired"},
		{engine.Event{Type: engine.EventEnded, Outcome: engine.OutcomeForced}, "forced"},
		{engine.Event{Type: engine.EventTimeout}, "timeout"},
		{engine.Event{Type: engine.EventAborted}, "aborted"},
		{engine.Event{Type: engine.EventCancelled}, "cancelled"},
		{engine.Event{Type: engine.EventSuperseded}, "superseded"},
		{engine.Event{Type: engine.EventDrained}, "drained"},
		{engine.Event{Type: engine.EventPaused}, "paused"},
		{engine.Event{Type: engine.EventResumed}, "resumed"},
		{engine.Event{Type: engine.EventDelayed}, "delayed"},
	}
	for _, tt := range tests {
		if got := eventName(&tt.ev); got != tt.want {
			t.Errorf("eventName(%v/%v) = %s, want %s", tt.ev.Type, tt.ev.Outcome, got, tt.want)
		}
	}
}

// TestNewEventFields: the newer events carry their own fields.
func TestNewEventFields(t *testing.T) {
	at := time.Date(2026, 11, 26, 10, 0, 0, 0, time.UTC)
	tests := []struct {
		ev   engine.Event
		want string
	}{
		{engine.Event{Type: engine.EventSuperseded, Key: "k", Owner: "w", Time: at, Waited: 2 * time.Second, Position: 3},
			`{"id":1,"type":"superseded","time":"2026-11-26T10:00:00.000Z","key":"k","owner":"w","waited_ms":2000,"waiting_since":"2026-11-26T09:59:58.000Z","position":3}`},
		{engine.Event{Type: engine.EventDrained, Key: "k", Owner: "w", Time: at, Waited: time.Second, Reason: "deploy"},
			`{"id":1,"type":"drained","time":"2026-11-26T10:00:00.000Z","key":"k","owner":"w","waited_ms":1000,"waiting_since":"2026-11-26T09:59:59.000Z","reason":"deploy"}`},
		{engine.Event{Type: engine.EventPaused, Key: "k", Time: at}, `{"id":1,"type":"paused","time":"2026-11-26T10:00:00.000Z","key":"k","owner":""}`},
		{engine.Event{Type: engine.EventResumed, Key: "k", Time: at}, `{"id":1,"type":"resumed","time":"2026-11-26T10:00:00.000Z","key":"k","owner":""}`},
		{engine.Event{Type: engine.EventDelayed, Key: "k", Time: at, ExpiresAt: at.Add(5 * time.Second)},
			`{"id":1,"type":"delayed","time":"2026-11-26T10:00:00.000Z","key":"k","owner":"","until":"2026-11-26T10:00:05.000Z"}`},
		{engine.Event{Type: engine.EventGranted, Key: "k", Owner: "w", Fence: 9, Time: at, ExpiresAt: at, Previous: engine.Previous{Fence: 8, Outcome: engine.OutcomeExpired, EndedAt: at}},
			`{"id":1,"type":"granted","time":"2026-11-26T10:00:00.000Z","key":"k","owner":"w","fence":9,"expires_at":"2026-11-26T10:00:00.000Z","waited_ms":0,"waiting_since":"2026-11-26T10:00:00.000Z","from_queue":false,"on_error":"continue","previous":{"fence":8,"outcome":"expired","ended_at":"2026-11-26T10:00:00.000Z"}}`},
	}
	for _, tt := range tests {
		if got := string(appendEvent(nil, 1, &tt.ev)); got != tt.want {
			t.Errorf("appendEvent(%s):\n got %s\nwant %s", tt.ev.Type, got, tt.want)
		}
	}
}
