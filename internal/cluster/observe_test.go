package cluster

import (
	"errors"
	"io"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

// recorder is an Observer that keeps what it was told.
type recorder struct {
	nopObserver
	snaps []error
}

func (r *recorder) Snapshotted(_ time.Duration, err error) { r.snaps = append(r.snaps, err) }

// failingSink is a snapshot sink whose writes fail.
type failingSink struct{ raft.SnapshotSink }

func (failingSink) Write([]byte) (int, error) { return 0, errors.New("disk full") }
func (failingSink) Cancel() error             { return nil }

// TestObservedSnapshot checks that every snapshot Raft captures is
// reported once: persisted (and the age's origin set), failed to
// persist, or released without being persisted (Raft could not create
// its file).
func TestObservedSnapshot(t *testing.T) {
	var last atomic.Int64
	sink := raft.NewInmemSnapshotStore()
	for _, c := range []struct {
		name     string
		persist  func(s raft.FSMSnapshot) error
		wantErr  bool
		wantLast bool
	}{
		{"persisted", func(s raft.FSMSnapshot) error {
			w, err := sink.Create(raft.SnapshotVersionMax, 1, 1, raft.Configuration{}, 1, nil)
			if err != nil {
				t.Fatal(err)
			}
			return s.Persist(w)
		}, false, true},
		{"persist failed", func(s raft.FSMSnapshot) error { return s.Persist(failingSink{}) }, true, false},
		{"never persisted", func(raft.FSMSnapshot) error { return nil }, true, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			last.Store(0)
			rec := &recorder{}
			s := &observedSnapshot{FSMSnapshot: snapBytes("state"), start: time.Now(), obs: rec, lastSnap: &last}
			c.persist(s)
			s.Release()
			if len(rec.snaps) != 1 || (rec.snaps[0] != nil) != c.wantErr {
				t.Fatalf("reported %v, want one report, failed: %v", rec.snaps, c.wantErr)
			}
			if (last.Load() != 0) != c.wantLast {
				t.Errorf("last snapshot time set: %v, want %v", last.Load() != 0, c.wantLast)
			}
		})
	}
}

// TestSnapshotTime reads the newest snapshot's time from its id.
func TestSnapshotTime(t *testing.T) {
	store, err := raft.NewFileSnapshotStore(t.TempDir(), 2, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if got := snapshotTime(store); !got.IsZero() {
		t.Errorf("no snapshot: %v, want zero", got)
	}
	before := time.Now().Truncate(time.Millisecond)
	w, err := store.Create(raft.SnapshotVersionMax, 5, 2, raft.Configuration{}, 1, nil)
	if err != nil {
		t.Fatal(err)
	}
	w.Write([]byte("x"))
	w.Close()
	if got := snapshotTime(store); got.Before(before) || got.After(time.Now()) {
		t.Errorf("snapshot time %v, want between %v and now", got, before)
	}
}
