package config_test

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"

	"github.com/mutexd/mutexd/internal/config"
)

func load(t *testing.T, yaml string, args ...string) (config.Config, error) {
	t.Helper()
	fs := pflag.NewFlagSet("test", pflag.ContinueOnError)
	config.AddFlags(fs)
	if yaml != "" {
		path := filepath.Join(t.TempDir(), "mutexd.yaml")
		if err := os.WriteFile(path, []byte(yaml), 0o600); err != nil {
			t.Fatal(err)
		}
		args = append(args, "--config", path)
	}
	if err := fs.Parse(args); err != nil {
		t.Fatal(err)
	}
	return config.Load(fs)
}

func TestDefaultsAreValid(t *testing.T) {
	if err := config.Default().Validate(); err != nil {
		t.Fatal(err)
	}
	c, err := config.Load(nil)
	if err != nil || !reflect.DeepEqual(c, config.Default()) {
		t.Fatalf("Load(nil) = %+v, %v; want the defaults", c, err)
	}
}

func TestExampleFileIsExactlyTheDefaults(t *testing.T) {
	raw, err := os.ReadFile("../../config.example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	c, err := load(t, string(raw))
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(c, config.Default()) {
		t.Fatalf("config.example.yaml loads to %+v, want the defaults %+v", c, config.Default())
	}
	// Every key is listed in the example.
	for _, key := range config.Keys() {
		leaf := key[strings.LastIndex(key, ".")+1:]
		if !strings.Contains(string(raw), "\n"+strings.Repeat(" ", 2*strings.Count(key, "."))+leaf+":") {
			t.Errorf("config.example.yaml does not list %s", key)
		}
	}
}

func TestPrecedence(t *testing.T) {
	yaml := "listen: 127.0.0.1:9000\nlock:\n  default_ttl: 20s\n  default_wait: 5\nlog:\n  level: warn\n"
	t.Setenv("MUTEXD_LOCK_DEFAULT_TTL", "45s")
	t.Setenv("MUTEXD_LIMITS_MAX_KEYS", "1_000")
	t.Setenv("MUTEXD_LISTEN", "127.0.0.1:9001")
	c, err := load(t, yaml, "--log-level", "debug", "--listen", "127.0.0.1:9002")
	if err != nil {
		t.Fatal(err)
	}
	want := config.Default()
	want.Listen = "127.0.0.1:9002"          // flag beats env and file
	want.Lock.DefaultTTL = 45 * time.Second // env beats file
	want.Lock.DefaultWait = 5 * time.Second // file beats default; bare number = seconds
	want.Log.Level = "debug"
	want.Limits.MaxKeys = 1000
	if !reflect.DeepEqual(c, want) {
		t.Fatalf("got %+v\nwant %+v", c, want)
	}
}

func TestEnvOnlyValueIsRead(t *testing.T) {
	t.Setenv("MUTEXD_METRICS_NAMESPACE_SEPARATOR", "/")
	c, err := load(t, "")
	if err != nil || c.Metrics.NamespaceSeparator != "/" {
		t.Fatalf("got %q, %v; want /", c.Metrics.NamespaceSeparator, err)
	}
}

func TestInvalid(t *testing.T) {
	tests := []struct {
		name, yaml, env, wantKey string
	}{
		{"negative duration", "lock:\n  max_wait: -1s\n", "", "lock.max_wait"},
		{"default ttl over max", "lock:\n  default_ttl: 2h\n", "", "lock.default_ttl"},
		{"ttl below a second", "lock:\n  default_ttl: 10ms\n", "", "lock.default_ttl"},
		{"unknown log level", "log:\n  level: loud\n", "", "log.level"},
		{"unknown format", "log:\n  format: xml\n", "", "log.format"},
		{"typo'd key", "lock:\n  default_tll: 5s\n", "", "lock.default_tll"},
		{"unknown section", "lcok:\n  default_ttl: 5s\n", "", "lcok"},
		{"bad duration", "shutdown_timeout: soon\n", "", "shutdown_timeout"},
		{"bad number", "limits:\n  max_keys: many\n", "", "limits.max_keys"},
		{"zero limit", "limits:\n  max_waiters: 0\n", "", "limits.max_waiters"},
		{"bad listen", "listen: nowhere\n", "", "listen"},
		{"metrics path clash", "metrics:\n  path: /v1/locks\n", "", "metrics.path"},
		{"metrics path on pprof", "metrics:\n  path: /debug/pprof/x\n", "", "metrics.path"},
		{"bad env", "", "MUTEXD_LOCK_MAX_TTL=forever", "lock.max_ttl"},
		{"bad yaml", "lock: [\n", "", "mutexd.yaml"},
		{"negative grace", "lock:\n  restart_grace: -1s\n", "", "lock.restart_grace"},
		{"max hold below a second", "lock:\n  max_hold: 500ms\n", "", "lock.max_hold"},
		{"negative max hold", "lock:\n  max_hold: -1s\n", "", "lock.max_hold"},
		{"lock delay over a minute", "lock:\n  default_lock_delay: 2m\n", "", "lock.default_lock_delay"},
		{"negative remember", "", "MUTEXD_LOCK_REMEMBER_OUTCOME=-1s", "lock.remember_outcome"},
		{"zero remembered", "lock:\n  max_remembered: 0\n", "", "lock.max_remembered"},
		{"negative detach grace", "lock:\n  detach_grace: -5s\n", "", "lock.detach_grace"},
		{"zero connections", "limits:\n  max_connections: 0\n", "", "limits.max_connections"},
		{"zero header timeout", "limits:\n  read_header_timeout: 0s\n", "", "limits.read_header_timeout"},
		{"zero idle timeout", "limits:\n  idle_timeout: 0s\n", "", "limits.idle_timeout"},
		{"zero requests", "limits:\n  max_requests: 0\n", "", "limits.max_requests"},
		{"zero write timeout", "limits:\n  write_timeout: 0s\n", "", "limits.write_timeout"},
		{"bad write timeout env", "", "MUTEXD_LIMITS_WRITE_TIMEOUT=never", "limits.write_timeout"},
		{"cert without key", "tls:\n  cert_file: cert.pem\n", "", "tls.cert_file"},
		{"reserve over half", "limits:\n  admin_reserve: 60\n", "", "limits.admin_reserve"},
		{"negative reserve", "limits:\n  admin_reserve: -1\n", "", "limits.admin_reserve"},
		{"negative namespace idle", "metrics:\n  namespace_idle: -1m\n", "", "metrics.namespace_idle"},
		{"namespace with separator", "metrics:\n  namespaces: [\"a:b\"]\n", "", "metrics.namespaces"},
		{"namespace twice", "metrics:\n  namespaces: [a, a]\n", "", "metrics.namespaces"},
		{"reserved namespace", "", "MUTEXD_METRICS_NAMESPACES=orders,_other", "metrics.namespaces"},
		{"allowed host with port", "http:\n  allowed_hosts: [locks.example.com:7070]\n", "", "http.allowed_hosts"},
		{"allowed host as URL", "http:\n  allowed_hosts: [\"https://locks.example.com\"]\n", "", "http.allowed_hosts"},
		{"allowed host with a space, from env", "", "MUTEXD_HTTP_ALLOWED_HOSTS=a.example, b example", "http.allowed_hosts"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.env != "" {
				k, v, _ := strings.Cut(tt.env, "=")
				t.Setenv(k, v)
			}
			_, err := load(t, tt.yaml)
			if !errors.Is(err, config.ErrInvalid) {
				t.Fatalf("err = %v, want ErrInvalid", err)
			}
			if msg := err.Error(); !strings.Contains(msg, tt.wantKey) || strings.Contains(msg, "\n") {
				t.Fatalf("err = %q, want one line naming %s", msg, tt.wantKey)
			}
		})
	}
}

// TestSectionGivenAValue: a section written as a single value ("lock: 5")
// is named as the fault, not reported as a missing value of one of its keys.
func TestSectionGivenAValue(t *testing.T) {
	for _, yaml := range []string{"lock: 5\n", "limits: many\n", "tls: true\n"} {
		_, err := load(t, yaml)
		section, _, _ := strings.Cut(yaml, ":")
		if !errors.Is(err, config.ErrInvalid) {
			t.Fatalf("%q: err = %v, want ErrInvalid", yaml, err)
		}
		if msg := err.Error(); !strings.Contains(msg, ": "+section+": want a map of keys") || strings.Contains(msg, "<nil>") {
			t.Errorf("%q: err = %q, want it to name the section %s as needing a map", yaml, msg, section)
		}
	}
}

func TestMissingFile(t *testing.T) {
	fs := pflag.NewFlagSet("test", pflag.ContinueOnError)
	config.AddFlags(fs)
	_ = fs.Parse([]string{"--config", filepath.Join(t.TempDir(), "absent.yaml")})
	if _, err := config.Load(fs); !errors.Is(err, config.ErrInvalid) || !strings.Contains(err.Error(), "absent.yaml") {
		t.Fatalf("err = %v, want ErrInvalid naming the file", err)
	}
}

func TestAuthLists(t *testing.T) {
	const a, b = "token-aaaaaaaaaaaaaaaa", "token-bbbbbbbbbbbbbbbb"
	c, err := load(t, "auth:\n  tokens: ["+a+", "+b+"]\n  admin_tokens:\n    - "+b+"\nmetrics:\n  require_auth: true\n")
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(c.Auth.Tokens, []string{a, b}) || !reflect.DeepEqual(c.Auth.AdminTokens, []string{b}) || !c.Metrics.RequireAuth {
		t.Fatalf("got %+v, metrics %+v", c.Auth, c.Metrics)
	}
	t.Setenv("MUTEXD_AUTH_ADMIN_TOKENS", " "+a+" ,"+b+",")
	c, err = load(t, "")
	if err != nil || !reflect.DeepEqual(c.Auth.AdminTokens, []string{a, b}) {
		t.Fatalf("from env: got %q, %v", c.Auth.AdminTokens, err)
	}
}

func TestAllowedHosts(t *testing.T) {
	c, err := load(t, "http:\n  allowed_hosts: [locks.example.com, mutexd, \"*\", LOCKS.internal.]\n")
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"locks.example.com", "mutexd", "*", "LOCKS.internal."}; !reflect.DeepEqual(c.HTTP.AllowedHosts, want) {
		t.Fatalf("got %q, want %q", c.HTTP.AllowedHosts, want)
	}
	t.Setenv("MUTEXD_HTTP_ALLOWED_HOSTS", "a.example,b.example")
	c, err = load(t, "")
	if err != nil || !reflect.DeepEqual(c.HTTP.AllowedHosts, []string{"a.example", "b.example"}) {
		t.Fatalf("from env: got %q, %v", c.HTTP.AllowedHosts, err)
	}
}

func TestBadTokenIsNeverQuoted(t *testing.T) {
	for _, yaml := range []string{
		"auth:\n  tokens: [short-secret]\n",
		"auth:\n  admin_tokens: [\"with space 0123456789\"]\n",
		"auth:\n  tokens: {short-secret: 1}\n",
	} {
		_, err := load(t, yaml)
		if !errors.Is(err, config.ErrInvalid) || !strings.Contains(err.Error(), "auth.") {
			t.Fatalf("%q: err = %v, want ErrInvalid naming the auth key", yaml, err)
		}
		for _, secret := range []string{"short-secret", "with space"} {
			if strings.Contains(err.Error(), secret) {
				t.Fatalf("error %q quotes the token", err)
			}
		}
	}
}

// TestReadmeListsEveryKey keeps the configuration table (docs/configuration.md)
// complete.
func TestReadmeListsEveryKey(t *testing.T) {
	raw, err := os.ReadFile("../../docs/configuration.md")
	if err != nil {
		t.Fatal(err)
	}
	var rows []string
	for _, line := range strings.Split(string(raw), "\n") {
		if strings.HasPrefix(line, "| `") {
			rows = append(rows, line)
		}
	}
	table := strings.Join(rows, "\n")
	for _, key := range config.Keys() {
		if !strings.Contains(table, "`"+key+"`") {
			t.Errorf("docs/configuration.md has no table row for %s", key)
		}
	}
}

func TestNamespacesAndReserve(t *testing.T) {
	t.Setenv("MUTEXD_METRICS_NAMESPACES", "orders, billing")
	c, err := load(t, "limits:\n  admin_reserve: 5\nmetrics:\n  namespace_idle: 0\n")
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"orders", "billing"}; !reflect.DeepEqual(c.Metrics.Namespaces, want) {
		t.Errorf("metrics.namespaces = %q, want %q", c.Metrics.Namespaces, want)
	}
	if c.Metrics.NamespaceIdle != 0 || c.Limits.AdminReserve != 5 {
		t.Errorf("namespace_idle, admin_reserve = %s, %d; want 0s, 5", c.Metrics.NamespaceIdle, c.Limits.AdminReserve)
	}
	tests := []struct{ pct, max, want int }{
		{10, 100, 10},
		{10, 1_000_000, 100_000},
		{10, 5, 1}, // rounded up: a small limit still keeps one for admins
		{50, 3, 2},
		{10, 1, 0}, // never the whole limit
		{0, 100, 0},
	}
	for _, tt := range tests {
		if got := (config.Limits{AdminReserve: tt.pct}).Reserved(tt.max); got != tt.want {
			t.Errorf("Reserved(%d) at %d%% = %d, want %d", tt.max, tt.pct, got, tt.want)
		}
	}
}

func TestUnknownEnv(t *testing.T) {
	environ := []string{
		"MUTEXD_LOCK_DEFAULT_TLL=5s", // a typo
		"MUTEXD_LOCK_DEFAULT_TTL=5s",
		"MUTEXD_LIMITS_MAX_KEYS=10",
		"MUTEXD_TOKEN=x", "MUTEXD_ADDR=x", "MUTEXD_LEASE_TOKEN=x", // the client's
		"MUTEXD_LISTN=:7070",
		"HOME=/root",
		"MUTEXDX=1",
	}
	got := config.UnknownEnv(environ)
	want := []string{"MUTEXD_LISTN", "MUTEXD_LOCK_DEFAULT_TLL"}
	if !slices.Equal(got, want) {
		t.Fatalf("UnknownEnv = %v, want %v", got, want)
	}
}
