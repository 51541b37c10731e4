package main

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mutexd/mutexd/client"
	"github.com/mutexd/mutexd/internal/servertest"
)

// TestLockTellsTheCommandHowTheLastRunEnded: a cron-style lock --wait 0
// learns, on an idle key, that the previous run failed.
func TestLockTellsTheCommandHowTheLastRunEnded(t *testing.T) {
	t.Parallel()
	s := servertest.Start(t)
	out := filepath.Join(t.TempDir(), "env")
	script := `echo "[$MUTEXD_PREVIOUS_OUTCOME] [$MUTEXD_PREVIOUS_FENCE] $MUTEXD_FENCE" >> "$1"; exit "$2"`
	run := func(status int) {
		t.Helper()
		p := startMutexd(t, s, "lock", "--wait", "0", "cron:x", "--", "sh", "-c", script, "sh", out, fmt.Sprint(status))
		if code := p.wait(t); code != status {
			t.Fatalf("lock exited %d, want %d: %s", code, status, p.stderr.String())
		}
	}
	run(3) // the first run fails
	run(0)
	lines := strings.Split(strings.TrimSpace(readFile(t, out)), "\n")
	if len(lines) != 2 {
		t.Fatalf("the command ran %d times, want 2: %q", len(lines), lines)
	}
	first := strings.Fields(lines[0])
	if first[0] != "[]" || first[1] != "[]" {
		t.Errorf("first run saw %q, want empty MUTEXD_PREVIOUS_*", lines[0])
	}
	if want := fmt.Sprintf("[failed] [%s] ", first[2]); !strings.HasPrefix(lines[1], want) {
		t.Errorf("second run saw %q, want it to start with %q", lines[1], want)
	}
}

func TestCheckPauseResumeDrainCommands(t *testing.T) {
	s := servertest.Start(t)
	t.Setenv("MUTEXD_TOKEN", "")
	l := holdKey(t, s, "db:main")
	c, err := client.New(s.URL)
	if err != nil {
		t.Fatal(err)
	}
	waiter := make(chan error, 1)
	go func() { _, err := c.Acquire(t.Context(), "db:main", client.Owner("w")); waiter <- err }()
	servertest.Eventually(t, "the waiter is queued", func() bool { return s.Waiters("db:main") == 1 })
	live := fmt.Sprint(l.Fence)
	steps := []struct {
		name string
		args []string
		code int
		out  string
	}{
		{"check live", []string{"check", "db:main", live}, 0, "live: fence " + live + " of db:main, expires "},
		{"check stale", []string{"check", "db:main", "5"}, 1, "stale: fence 5 is not a live lease of db:main; live fences: " + live},
		{"check free", []string{"check", "free", "5"}, 1, "live fences: none"},
		{"check bad fence", []string{"check", "db:main", "0"}, 2, ""},
		{"check huge fence", []string{"check", "db:main", "9007199254740992"}, 2, ""},
		{"check no fence", []string{"check", "db:main"}, 2, ""},
		{"pause", []string{"pause", "db:main"}, 0, "db:main paused"},
		{"pause again", []string{"pause", "db:main"}, 0, "db:main already paused"},
		{"status shows it", []string{"status", "db:main"}, 0, "paused    yes"},
		{"resume", []string{"resume", "db:main"}, 0, "db:main not paused"},
		{"pause prefix", []string{"pause", "--prefix", "db:"}, 0, "paused 1 keys under db:"},
		{"resume prefix", []string{"resume", "--prefix", "db:"}, 0, "resumed 1 keys under db:"},
		{"pause nothing", []string{"pause"}, 2, ""},
		{"pause both", []string{"pause", "--prefix", "db:", "db:main"}, 2, ""},
		{"pause empty prefix", []string{"pause", "--prefix", ""}, 2, ""},
		{"drain", []string{"drain", "--reason", "restore", "db:main"}, 0, "drained 1 waiters of db:main"},
		{"drain prefix", []string{"drain", "--prefix", "db:"}, 0, "drained 0 waiters of keys under db:"},
		{"limit mismatch", []string{"acquire", "--limit", "2", "--wait", "0", "db:main"}, 2, ""},
		{"bad limit", []string{"acquire", "--limit", "0", "db:main"}, 2, ""},
		{"bad lock delay", []string{"acquire", "--lock-delay", "2m", "db:main"}, 2, ""},
		{"max hold below ttl", []string{"acquire", "--ttl", "30s", "--max-hold", "10s", "db:main"}, 2, ""},
		{"bad request id", []string{"acquire", "--request-id", "a b", "db:main"}, 2, ""},
		{"semaphore", []string{"acquire", "--limit", "3", "--max-hold", "1m", "--lock-delay", "1s", "--request-id", "r-1", "pool"}, 0, `"limit": 3,
  "request_id": "r-1"`},
		{"same request id", []string{"acquire", "--limit", "3", "--request-id", "r-1", "-o", "env", "pool"}, 0, "export MUTEXD_PREVIOUS_OUTCOME=''\nexport MUTEXD_PREVIOUS_FENCE=\n"},
	}
	for _, st := range steps {
		stdout, stderr, code := cli(t, s, st.args...)
		if code != st.code || !strings.Contains(stdout, st.out) {
			t.Errorf("%s: mutexd %s = %d, %q, %q; want %d and %q", st.name, strings.Join(st.args, " "), code, stdout, stderr, st.code, st.out)
		}
		if code == 2 {
			oneLine(t, stderr, "mutexd: ")
		}
	}
	if err := <-waiter; err == nil || !strings.Contains(err.Error(), "restore") {
		t.Errorf("the drained waiter got %v, want ErrDrained saying restore", err)
	}
}
