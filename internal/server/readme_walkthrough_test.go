package server_test

import (
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"
)

// TestReadmeWalkthroughRunsVerbatim runs the README's curl walk-through, as
// printed, with sh against a real daemon (only the address line is
// changed) and checks what each step answers: a reader who pastes it must
// see every call succeed except the one try-lock that is meant to fail.
func TestReadmeWalkthroughRunsVerbatim(t *testing.T) {
	if _, err := exec.LookPath("curl"); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("the walk-through needs curl; .ci/setup.d/40-curl.sh installs it")
		}
		t.Skip("curl is not installed")
	}
	raw, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile("(?s)## A walk-through with curl\n.*?```sh\n(.*?)```").FindSubmatch(raw)
	if m == nil {
		t.Fatal("README has no sh block under 'A walk-through with curl'")
	}
	script := string(m[1])
	const addrLine = "B=http://127.0.0.1:7070\n"
	if !strings.HasPrefix(script, addrLine) {
		t.Fatalf("the walk-through must start with %q to be runnable as is", addrLine)
	}
	d := startDaemon(t, testConfig())
	script = "B=" + d.url + "\n" + strings.TrimPrefix(script, addrLine)

	cmd := exec.CommandContext(t.Context(), "sh", "-eu")
	cmd.Stdin = strings.NewReader(script)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("walk-through: %v\n%s", err, out)
	}
	// One line per curl that prints, in order.
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	want := []string{
		`^\{"key":"invoice:42","token":"[0-9a-f]{32}","fence":\d+,"owner":"worker-1","ttl_ms":30000,.*"previous":null,"limit":1\}$`, // acquire
		`^\{"key":"invoice:42","held":true,.*"owner":"worker-1"`,                                                                    // inspect
		`^\{"error":"timeout",.*"waiters":0\}$`,                                                                                     // try-lock
		`^\{"key":"invoice:42","fence":\d+,"ttl_ms":60000,`,                                                                         // renew
		`^\{"key":"invoice:42","fence":\d+,"released":true,"held_ms":\d+\}$`,                                                        // release
		`^\{"key":"invoice:42","token":"[0-9a-f]{32}",.*"ttl_ms":10000,`,                                                            // body acquire
		`^\{"locks":\[\{"key":"invoice:42","held":true,`,                                                                            // list
		`^\{"key":"invoice:42","fence":\d+,"released":true,"held_ms":\d+\}$`,                                                        // force-release
	}
	if len(lines) != len(want) {
		t.Fatalf("walk-through printed %d lines, want %d:\n%s", len(lines), len(want), out)
	}
	for i, w := range want {
		if !regexp.MustCompile(w).MatchString(lines[i]) {
			t.Errorf("step %d printed\n  %s\nwant it to match\n  %s", i+1, lines[i], w)
		}
	}
	for _, line := range strings.Split(script, "\n") {
		if !strings.HasPrefix(line, "#") && strings.Contains(line, "…") {
			t.Errorf("a command of the walk-through has a placeholder (…): %s", line)
		}
	}
}
