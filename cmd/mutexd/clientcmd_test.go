package main

import (
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mutexd/mutexd/client"
	"github.com/mutexd/mutexd/internal/config"

	"github.com/mutexd/mutexd/internal/servertest"
)

// cli runs mutexd in-process with args against s and returns stdout,
// stderr and the exit code.
func cli(t *testing.T, s *servertest.Server, args ...string) (string, string, int) {
	t.Helper()
	var stdout, stderr strings.Builder
	args = append([]string{args[0], "--addr", s.URL}, args[1:]...) // before any "--"
	err := run(t.Context(), args, &stdout, &stderr)
	code := exitCode(err, &stderr)
	return stdout.String(), stderr.String(), code
}

func TestClientCommands(t *testing.T) {
	s := servertest.Start(t)
	t.Setenv("MUTEXD_TOKEN", "")
	t.Setenv("MUTEXD_LEASE_TOKEN", "")

	out, errOut, code := cli(t, s, "acquire", "--ttl", "1m", "--owner", "me", "-o", "token", "jobs:a")
	token := strings.TrimSpace(out)
	if code != 0 || len(token) != 32 {
		t.Fatalf("acquire -o token = %q, %q, %d", out, errOut, code)
	}
	steps := []struct {
		name  string
		args  []string
		code  int
		check func(t *testing.T, stdout, stderr string)
	}{
		{"try a held key", []string{"acquire", "--wait", "0", "jobs:a"}, 75, wantLine("423 timeout")},
		{"status", []string{"status", "jobs:a"}, 0, wantOut("held      yes", "owner     me", "on_error  continue", "waiters   0")},
		{"status json", []string{"status", "-o", "json", "jobs:a"}, 0, func(t *testing.T, stdout, _ string) {
			var st struct {
				Held   bool `json:"held"`
				Holder struct {
					Owner string `json:"owner"`
				} `json:"holder"`
			}
			if err := json.Unmarshal([]byte(stdout), &st); err != nil || !st.Held || st.Holder.Owner != "me" || strings.Contains(stdout, token) {
				t.Errorf("status -o json = %s (%v)", stdout, err)
			}
			// Times as the API writes them: UTC with exactly milliseconds.
			apiTime := regexp.MustCompile(`"expires_at": "\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z"`)
			if !apiTime.MatchString(stdout) || !strings.HasSuffix(stdout, "}\n") || strings.HasSuffix(stdout, "\n\n") {
				t.Errorf("status -o json = %q, want the API's time format and one trailing newline", stdout)
			}
		}},
		{"status of a free key", []string{"status", "free"}, 0, wantOut("held     no\nwaiters  0\n")},
		{"renew", []string{"renew", "--ttl", "2m", "jobs:a", token}, 0, wantOut("renewed jobs:a until ", "(ttl 2m0s)")},
		{"acquire another as env", []string{"acquire", "-o", "env", "jobs:b c"}, 0, wantOut("export MUTEXD_KEY='jobs:b c'\nexport MUTEXD_FENCE=", "export MUTEXD_LEASE_TOKEN=")},
		{"acquire another as json", []string{"acquire", "--owner", "x", "other"}, 0, wantOut(`"key": "other"`, `"owner": "x"`, `"ttl_ms": 30000`, `"previous": null`)},
		{"ls", []string{"ls"}, 0, wantOut("KEY       HELD  OWNER  WAITERS\njobs:a    yes   me     0\njobs:b c  yes")},
		{"ls prefix json", []string{"ls", "-o", "json", "jobs:"}, 0, func(t *testing.T, stdout, _ string) {
			var l struct {
				Locks []struct{ Key string } `json:"locks"`
			}
			if err := json.Unmarshal([]byte(stdout), &l); err != nil || len(l.Locks) != 2 || l.Locks[0].Key != "jobs:a" || l.Locks[1].Key != "jobs:b c" {
				t.Errorf("ls -o json jobs: = %s (%v)", stdout, err)
			}
		}},
		{"ls limit", []string{"ls", "--limit", "1"}, 0, func(t *testing.T, stdout, _ string) {
			if strings.Count(stdout, "\n") != 2 {
				t.Errorf("ls --limit 1 printed %q, want a header and one row", stdout)
			}
		}},
		{"release", []string{"release", "jobs:a", token}, 0, wantOut("released jobs:a\n")},
		{"release again", []string{"release", "jobs:a", token}, 3, wantLine("409 not_holder")},
		{"renew a released lease", []string{"renew", "jobs:a", token}, 3, wantLine("not_holder")},
		{"release without a token", []string{"release", "jobs:a"}, 2, wantLine("release: no TOKEN")},
		{"key too long", []string{"status", strings.Repeat("k", 300)}, 2, wantLine("invalid_key")},
		{"ttl too short", []string{"acquire", "--ttl", "10ms", "k"}, 2, wantLine("--ttl must be at least 1s, got 10ms")},
		{"ttl in bare seconds", []string{"acquire", "--ttl", "45", "--wait", "0", "secs"}, 0, wantOut(`"ttl_ms": 45000`)},
		{"ttl not a duration", []string{"acquire", "--ttl", "30x", "k"}, 2, wantLine(`invalid argument "30x" for "--ttl" flag: not a duration`)},
		{"wait error quotes the input", []string{"acquire", "--wait", "-90", "k"}, 2, wantLine("--wait must not be negative, got -90")},
		{"bad on-error", []string{"acquire", "--on-error", "explode", "k"}, 2, wantLine("--on-error must be continue or stop")},
		{"bad output", []string{"acquire", "-o", "yaml", "k"}, 2, wantLine("acquire: -o must be json, env or token")},
		{"bad ls output", []string{"ls", "-o", "yaml"}, 2, wantLine("ls: -o must be table or json")},
		{"too many args", []string{"status", "a", "b"}, 2, wantLine("accepts 1 arg")},
		{"lock without --", []string{"lock", "k", "true"}, 2, wantLine("usage: mutexd lock")},
		{"lock command without --", []string{"lock", "k", "echo", "hi there"}, 2, wantLine("did you mean mutexd lock k -- echo 'hi there'?")},
		{"lock without a command", []string{"lock", "k", "--"}, 2, wantLine("usage: mutexd lock")},
		{"lock bad on-lost", []string{"lock", "--on-lost", "shrug", "k", "--", "true"}, 2, wantLine("--on-lost must be kill or warn")},
		{"zero timeout", []string{"status", "--timeout", "0", "k"}, 2, wantLine("status: --timeout must be positive, got 0")},
		{"negative timeout", []string{"acquire", "--timeout", "-1m", "k"}, 2, wantLine("acquire: --timeout must be positive")},
		{"release zero timeout", []string{"release", "--timeout", "0", "k", "t"}, 2, wantLine("--timeout must be positive")},
		{"renew zero timeout", []string{"renew", "--timeout", "0", "k", "t"}, 2, wantLine("--timeout must be positive")},
		{"ls zero timeout", []string{"ls", "--timeout", "0"}, 2, wantLine("--timeout must be positive")},
		{"healthcheck bad scheme", []string{"healthcheck", "--addr", "ftp://x"}, 2, wantLine("must be http:// or https://")},
		{"healthcheck zero timeout", []string{"healthcheck", "--timeout", "0"}, 2, wantLine("--timeout must be positive")},
		{"lock zero timeout", []string{"lock", "--timeout", "0", "k", "--", "true"}, 2, wantLine("lock: --timeout must be positive")},
		{"lock bad conflict code", []string{"lock", "--conflict-exit-code", "300", "k", "--", "true"}, 2, wantLine("--conflict-exit-code must be 0 to 255")},
	}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			stdout, stderr, code := cli(t, s, st.args...)
			if code != st.code {
				t.Fatalf("%v: exit code %d, want %d (stdout %q, stderr %q)", st.args, code, st.code, stdout, stderr)
			}
			if st.check != nil {
				st.check(t, stdout, stderr)
			}
		})
	}

	// A token from the environment, as "mutexd lock" and "acquire -o env"
	// provide it, releases with outcome failed.
	out, _, _ = cli(t, s, "acquire", "-o", "token", "env-key")
	t.Setenv("MUTEXD_LEASE_TOKEN", strings.TrimSpace(out))
	if stdout, stderr, code := cli(t, s, "release", "--failed", "env-key"); code != 0 || stdout != "released env-key\n" {
		t.Errorf("release with $MUTEXD_LEASE_TOKEN: %q %q %d", stdout, stderr, code)
	}
	if s.Held("env-key") {
		t.Error("env-key still held")
	}
}

func TestClientCommandsWithoutAServer(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{
		{"acquire", "--wait", "0", "k"},
		{"lock", "--wait", "0", "k", "--", "true"},
		{"status", "k"},
	} {
		var stdout, stderr strings.Builder
		args = append([]string{args[0], "--addr", "127.0.0.1:1", "--timeout", "500ms"}, args[1:]...)
		err := run(t.Context(), args, &stdout, &stderr)
		if code := exitCode(err, &stderr); code != 1 {
			t.Errorf("%v: exit code = %d, want 1", args, code)
		}
		if got := stderr.String(); strings.Count(got, "\n") != 1 || !strings.Contains(got, "mutexd unreachable") {
			t.Errorf("%v: stderr = %q, want one line saying unreachable", args, got)
		}
	}
}

// wantLine checks that stderr is one line containing want.
func wantLine(want string) func(*testing.T, string, string) {
	return func(t *testing.T, _, stderr string) { oneLine(t, stderr, want) }
}

// wantOut checks that stdout contains every one of wants.
func wantOut(wants ...string) func(*testing.T, string, string) {
	return func(t *testing.T, stdout, _ string) {
		for _, w := range wants {
			if !strings.Contains(stdout, w) {
				t.Errorf("stdout lacks %q:\n%s", w, stdout)
			}
		}
	}
}

func TestPrintStatus(t *testing.T) {
	now := time.Date(2026, 11, 26, 10, 0, 0, 0, time.UTC)
	st := &client.KeyStatus{
		Key: "invoice:42", Held: true, Waiters: 102,
		Holder: &client.Holder{Owner: "worker-1", Fence: 17, AcquiredAt: now.Add(-12 * time.Second), ExpiresAt: now.Add(18 * time.Second), OnError: "stop"},
		Queue: []client.Waiter{
			{Owner: "worker-2", WaitingSince: now.Add(-5 * time.Second)},
			{Owner: "worker-3", WaitingSince: now.Add(-1500 * time.Millisecond)},
		},
	}
	var b strings.Builder
	if err := printStatus(&b, st, now); err != nil {
		t.Fatal(err)
	}
	want := `key       invoice:42
held      yes
owner     worker-1
fence     17
acquired  2026-11-26T09:59:48.000Z (12s ago)
expires   2026-11-26T10:00:18.000Z (in 18s)
on_error  stop
waiters   102

#  OWNER     WAITING SINCE
1  worker-2  2026-11-26T09:59:55.000Z (5s)
2  worker-3  2026-11-26T09:59:58.500Z (1.5s)
…  100 more
`
	if got := b.String(); got != want {
		t.Errorf("printStatus =\n%s\nwant\n%s", got, want)
	}

	// A semaphore, paused, in a lock-delay, with a remembered outcome.
	delay := now.Add(3 * time.Second)
	h2 := client.Holder{Owner: "worker-9", Fence: 21, AcquiredAt: now.Add(-2 * time.Second), ExpiresAt: now.Add(28 * time.Second), OnError: "continue"}
	st = &client.KeyStatus{
		Key: "pool", Held: true, Limit: 3, Holder: st.Holder, Holders: []client.Holder{*st.Holder, h2},
		Paused: true, DelayUntil: &delay, Last: &client.Previous{Fence: 16, Outcome: "expired", EndedAt: now.Add(-time.Minute)},
	}
	b.Reset()
	if err := printStatus(&b, st, now); err != nil {
		t.Fatal(err)
	}
	want = `key       pool
held      yes
owner     worker-1
fence     17
acquired  2026-11-26T09:59:48.000Z (12s ago)
expires   2026-11-26T10:00:18.000Z (in 18s)
on_error  stop
slots     2 of 3 held
paused    yes: nothing is granted until mutexd resume
delayed   until 2026-11-26T10:00:03.000Z (in 3s)
last      expired, fence 16, 2026-11-26T09:59:00.000Z (1m0s ago)
waiters   0

HOLDER    FENCE  ACQUIRED                            EXPIRES
worker-1  17     2026-11-26T09:59:48.000Z (12s ago)  2026-11-26T10:00:18.000Z (in 18s)
worker-9  21     2026-11-26T09:59:58.000Z (2s ago)   2026-11-26T10:00:28.000Z (in 28s)
`
	if got := b.String(); got != want {
		t.Errorf("printStatus of a semaphore =\n%s\nwant\n%s", got, want)
	}
}

// TestClientCommandsOverTLS checks that the commands reach an https
// server whose private CA is named by SSL_CERT_FILE (read by Go's TLS
// stack at start, hence a separate process).
func TestClientCommandsOverTLS(t *testing.T) {
	t.Parallel()
	certFile, keyFile, _ := servertest.WriteCert(t, t.TempDir())
	s := servertest.Start(t, func(c *config.Config) { c.TLS.CertFile, c.TLS.KeyFile = certFile, keyFile })
	p := startMutexdEnv(t, s, []string{"SSL_CERT_FILE=" + certFile}, "lock", "k", "--", "true")
	if code := p.wait(t); code != 0 {
		t.Errorf("lock over https with SSL_CERT_FILE: exit %d, stderr %q", code, p.stderr.String())
	}
	p = startMutexdEnv(t, s, []string{"SSL_CERT_FILE=/nonexistent"}, "status", "k")
	if code := p.wait(t); code != 1 {
		t.Errorf("status over https without trusting the certificate: exit %d, want 1", code)
	}
	oneLine(t, p.stderr.String(), "certificate")
}

// TestShellQuoteSurvivesSh evaluates acquire -o env's quoting in a real
// shell: the key must come back byte for byte, and nothing in it may run.
func TestShellQuoteSurvivesSh(t *testing.T) {
	dir := t.TempDir()
	for _, key := range []string{"plain:key", "a b", "it's", `$(touch pwned)`, "`touch pwned`", `back\slash`, `"dq"`, "ü:ñ", "semi;colon", "*", "-n", "a'b'c", "~user"} {
		script := "export MUTEXD_KEY=" + shellQuote(key) + "\nprintf %s \"$MUTEXD_KEY\""
		cmd := exec.Command("sh", "-c", script)
		cmd.Dir = dir
		out, err := cmd.Output()
		if err != nil || string(out) != key {
			t.Errorf("sh read %q back as %q (%v)", key, out, err)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "pwned")); err == nil {
		t.Error("a key ran a command")
	}
}

// TestClientCommandsSendTheToken runs the commands against a server that
// requires bearer tokens, with MUTEXD_TOKEN unset, a client token and an
// admin token.
func TestClientCommandsSendTheToken(t *testing.T) {
	s := servertest.Start(t, func(c *config.Config) {
		c.Auth.Tokens = []string{"client-token-0123456789"}
		c.Auth.AdminTokens = []string{"admin-token-0123456789"}
	})
	t.Setenv("MUTEXD_LEASE_TOKEN", "")
	tests := []struct {
		token string
		args  []string
		code  int
		want  string // in stderr
	}{
		{"", []string{"status", "k"}, 1, "401 unauthorized"},
		{"", []string{"status", "k"}, 1, "(set MUTEXD_TOKEN to a client token)"},
		{"wrong-token-0123456789", []string{"acquire", "k"}, 1, "401 unauthorized"},
		{"wrong-token-0123456789", []string{"acquire", "k"}, 1, "(MUTEXD_TOKEN is not a token this server accepts)"},
		{"client-token-0123456789", []string{"status", "k"}, 0, ""},
		{"client-token-0123456789", []string{"lock", "k", "--", "true"}, 0, ""},
		{"client-token-0123456789", []string{"ls"}, 1, "403 forbidden"},
		{"client-token-0123456789", []string{"ls"}, 1, "needs an admin token in MUTEXD_TOKEN"},
		{"admin-token-0123456789", []string{"ls"}, 0, ""},
	}
	for _, tt := range tests {
		t.Setenv("MUTEXD_TOKEN", tt.token)
		_, stderr, code := cli(t, s, tt.args...)
		if code != tt.code || !strings.Contains(stderr, tt.want) || strings.Contains(stderr, "token-0123456789") {
			t.Errorf("MUTEXD_TOKEN=%q %v: exit %d, stderr %q; want exit %d mentioning %q, never the token", tt.token, tt.args, code, stderr, tt.code, tt.want)
		}
	}
}

// failingWriter is a stdout that is gone (a closed pipe).
type failingWriter struct{}

func (failingWriter) Write([]byte) (int, error) { return 0, errors.New("broken pipe") }

// TestAcquireReleasesALeaseItCannotPrint: a token nobody saw could never be
// released; acquire gives the lease back instead of leaving the key held
// for its TTL.
func TestAcquireReleasesALeaseItCannotPrint(t *testing.T) {
	s := servertest.Start(t)
	t.Setenv("MUTEXD_TOKEN", "")
	var stderr strings.Builder
	err := run(t.Context(), []string{"acquire", "--addr", s.URL, "--ttl", "1m", "k"}, failingWriter{}, &stderr)
	if code := exitCode(err, &stderr); code != 1 {
		t.Errorf("exit code %d, want 1", code)
	}
	oneLine(t, stderr.String(), "cannot print the lease, released it")
	if s.Held("k") {
		t.Error("k still held by a lease whose token nobody saw")
	}
}

func TestUnknownCommandSuggests(t *testing.T) {
	tests := []struct{ arg, want string }{
		{"lok", `unknown command "lok"; did you mean lock or ls?`},
		{"stauts", `unknown command "stauts"; did you mean status?`},
		{"frobnicate", `unknown command "frobnicate"; run 'mutexd --help' for the list`},
	}
	for _, tt := range tests {
		var stdout, stderr strings.Builder
		code := exitCode(run(t.Context(), []string{tt.arg}, &stdout, &stderr), &stderr)
		if code != 2 || strings.TrimSpace(stderr.String()) != "mutexd: "+tt.want {
			t.Errorf("mutexd %s: exit %d, stderr %q; want exit 2 and %q", tt.arg, code, stderr.String(), tt.want)
		}
	}
}

func TestVersionNamesTheBuild(t *testing.T) {
	var stdout strings.Builder
	if err := run(t.Context(), []string{"version"}, &stdout, &stdout); err != nil {
		t.Fatal(err)
	}
	// A test binary has no module version or VCS stamp, so it says dev;
	// the form is what matters here, buildVersion's sources are Go's.
	if got := stdout.String(); !strings.HasPrefix(got, "mutexd dev") || !strings.Contains(got, "(go1.") {
		t.Errorf("version = %q, want mutexd <version> (go1.x)", got)
	}
}

// TestClientCommandsWithSeveralServers: --addr and MUTEXD_ADDR take a
// comma-separated list; with the first server dead, every client command
// reaches the second, and lock hands the whole list to its command. A bad
// entry is one line and exit 2.
func TestClientCommandsWithSeveralServers(t *testing.T) {
	s := servertest.Start(t)
	t.Setenv("MUTEXD_TOKEN", "")
	t.Setenv("MUTEXD_LEASE_TOKEN", "")
	dead := deadAddr(t) // without a scheme, as --addr allows
	addrs := dead + ", " + s.URL
	run3 := func(args ...string) (string, string, int) {
		var stdout, stderr strings.Builder
		args = append([]string{args[0], "--addr", addrs, "--timeout", "10s"}, args[1:]...)
		code := exitCode(run(t.Context(), args, &stdout, &stderr), &stderr)
		return stdout.String(), stderr.String(), code
	}
	out, errOut, code := run3("acquire", "--ttl", "1m", "multi")
	var g struct {
		Token string `json:"token"`
		Fence uint64 `json:"fence"`
	}
	if err := json.Unmarshal([]byte(out), &g); code != 0 || err != nil || len(g.Token) != 32 {
		t.Fatalf("acquire --addr %q = %q, %q, %d; want a lease from the second server", addrs, out, errOut, code)
	}
	token, fence := g.Token, strconv.FormatUint(g.Fence, 10)
	for _, args := range [][]string{
		{"status", "multi"},
		{"ls"},
		{"renew", "multi", token},
		{"check", "multi", fence},
		{"pause", "multi"},
		{"resume", "multi"},
		{"drain", "multi"},
		{"release", "multi", token},
	} {
		if out, errOut, code := run3(args...); code != 0 {
			t.Errorf("%v with the first server dead: exit %d, %q %q", args, code, out, errOut)
		}
	}
	if s.Held("multi") {
		t.Error("multi is still held after release")
	}

	// MUTEXD_ADDR takes a list too, and lock passes it on.
	p := startMutexdEnv(t, s, []string{"MUTEXD_ADDR=" + addrs}, "lock", "--wait", "5s", "multi", "--", "sh", "-c", `echo "$MUTEXD_ADDR"`)
	if code := p.wait(t); code != 0 {
		t.Fatalf("lock with MUTEXD_ADDR=%s exited %d: %s", addrs, code, p.stderr.String())
	}
	if got, want := strings.TrimSpace(p.stdout.String()), "http://"+dead+","+s.URL; got != want {
		t.Errorf("the command saw MUTEXD_ADDR=%q, want %q", got, want)
	}

	for _, tc := range []struct{ addr, want string }{
		{s.URL + ",,", "empty server URL"},
		{s.URL + ",ftp://x", `"ftp://x"`},
		{s.URL + "," + s.URL, "listed twice"},
	} {
		for _, args := range [][]string{{"acquire", "k"}, {"status", "k"}, {"release", "k", "tok"}} {
			var stdout, stderr strings.Builder
			cmd := args[0]
			err := run(t.Context(), append([]string{cmd, "--addr", tc.addr}, args[1:]...), &stdout, &stderr)
			if code := exitCode(err, &stderr); code != 2 {
				t.Errorf("%s --addr %q: exit %d, want 2", cmd, tc.addr, code)
			}
			oneLine(t, stderr.String(), tc.want)
		}
	}
	var stdout, stderr strings.Builder
	err := run(t.Context(), []string{"healthcheck", "--addr", addrs}, &stdout, &stderr)
	if code := exitCode(err, &stderr); code != 2 {
		t.Errorf("healthcheck --addr %q: exit %d, want 2", addrs, code)
	}
	oneLine(t, stderr.String(), "must name one server")
}
