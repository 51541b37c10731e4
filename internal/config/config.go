// Package config loads mutexd's configuration into a typed Config: built-in
// defaults, then a YAML file, then MUTEXD_* environment variables, then
// command-line flags, each overriding the one before. viper stays inside
// this package.
//
// Decoding is viper's UnmarshalExact with decode hooks that read durations
// with the API's parser (whole seconds or a Go duration), whole numbers
// without base prefixes, strict booleans and comma-separated lists from
// the environment. Unknown keys in a file are rejected before that, by
// rejectUnknown, because it can say more than mapstructure's "invalid
// keys": that a section was given a single value, or a value a map, and it
// never quotes a value that may be a secret.
package config

import (
	"errors"
	"fmt"
	"net"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/mutexd/mutexd/internal/api"
	"github.com/mutexd/mutexd/internal/auth"
)

// Config is the daemon's whole configuration.
type Config struct {
	// Listen is the HTTP listen address, host:port.
	Listen string `mapstructure:"listen"`
	// ShutdownTimeout bounds the drain on SIGTERM.
	ShutdownTimeout time.Duration `mapstructure:"shutdown_timeout"`
	Log             Log           `mapstructure:"log"`
	Lock            Lock          `mapstructure:"lock"`
	Limits          Limits        `mapstructure:"limits"`
	Metrics         Metrics       `mapstructure:"metrics"`
	Auth            Auth          `mapstructure:"auth"`
	HTTP            HTTP          `mapstructure:"http"`
	Debug           Debug         `mapstructure:"debug"`
	TLS             TLS           `mapstructure:"tls"`
	UI              UI            `mapstructure:"ui"`
	Cluster         Cluster       `mapstructure:"cluster"`
}

// UI configures the live console.
type UI struct {
	// Enabled serves the console at /ui/.
	Enabled bool `mapstructure:"enabled"`
}

// Debug holds switches for diagnosing the daemon.
type Debug struct {
	// Pprof serves net/http/pprof under /debug/pprof/ on the API listener
	// (admin token needed when auth is on). Off by default: profiles
	// reveal keys and owners, and a CPU profile costs CPU.
	Pprof bool `mapstructure:"pprof"`
}

// TLS configures HTTPS. Both files or neither.
type TLS struct {
	// CertFile is a PEM certificate chain; re-read on SIGHUP.
	CertFile string `mapstructure:"cert_file"`
	// KeyFile is the PEM private key of CertFile; re-read on SIGHUP.
	KeyFile string `mapstructure:"key_file"`
}

// Enabled reports whether TLS is configured.
func (t TLS) Enabled() bool { return t.CertFile != "" || t.KeyFile != "" }

// Log configures logging.
type Log struct {
	// Level is debug, info, warn or error.
	Level string `mapstructure:"level"`
	// Format is json or text.
	Format string `mapstructure:"format"`
}

// Lock bounds lease and wait durations of acquires.
type Lock struct {
	DefaultTTL  time.Duration `mapstructure:"default_ttl"`
	MaxTTL      time.Duration `mapstructure:"max_ttl"`
	DefaultWait time.Duration `mapstructure:"default_wait"`
	MaxWait     time.Duration `mapstructure:"max_wait"`
	// RestartGrace refuses acquires for this long after start, so every
	// lease granted before a restart has expired before a new one is
	// granted. Set it to at least the longest TTL clients use.
	RestartGrace time.Duration `mapstructure:"restart_grace"`
	// MaxHold bounds an acquire's max_hold (0: no bound, and an acquire
	// may still ask for one). It does not cap leases that ask for none.
	MaxHold time.Duration `mapstructure:"max_hold"`
	// DefaultLockDelay is the lock_delay of an acquire that names none:
	// how long nobody is granted a key after its lease ended by expiry
	// or force-release.
	DefaultLockDelay time.Duration `mapstructure:"default_lock_delay"`
	// RememberOutcome is how long a key's last outcome and a request id's
	// lease are remembered after the lease ended (previous on the next
	// grant, last in inspection, lease_ended for a re-sent request_id);
	// 0 remembers nothing.
	RememberOutcome time.Duration `mapstructure:"remember_outcome"`
	// MaxRemembered caps those records, oldest forgotten first.
	MaxRemembered int `mapstructure:"max_remembered"`
	// DetachGrace is how long an acquire with a request_id whose client
	// went away keeps its place in the queue, or the lease it was granted,
	// for the client's re-sent acquire; 0 turns it off.
	DetachGrace time.Duration `mapstructure:"detach_grace"`
}

// MaxLockDelay is the longest lock_delay an acquire or
// lock.default_lock_delay may ask for.
const MaxLockDelay = api.MaxLockDelay

// Limits bound the engine's memory.
type Limits struct {
	MaxKeys          int `mapstructure:"max_keys"`
	MaxWaitersPerKey int `mapstructure:"max_waiters_per_key"`
	MaxWaiters       int `mapstructure:"max_waiters"`
	// MaxConnections caps open client connections; more are refused.
	MaxConnections int `mapstructure:"max_connections"`
	// ReadHeaderTimeout cuts off a client that sends its headers too slowly.
	ReadHeaderTimeout time.Duration `mapstructure:"read_header_timeout"`
	// IdleTimeout closes a keep-alive connection idle this long.
	IdleTimeout time.Duration `mapstructure:"idle_timeout"`
	// MaxRequests caps the requests being served at once over all
	// connections, each HTTP/2 stream counting as one: a connection's
	// streams multiply what max_connections alone would allow. It must
	// leave room for every waiter (max_waiters) and event stream.
	MaxRequests int `mapstructure:"max_requests"`
	// WriteTimeout closes a connection when a write of a response (or of
	// an event on a stream) makes no progress for this long: a client that
	// stops reading, or grants an HTTP/2 window of zero, cannot pin the
	// handler. It is not a whole-response limit, so long polls and event
	// streams are unaffected.
	WriteTimeout time.Duration `mapstructure:"write_timeout"`
	// MaxSubscribers caps open /v1/events streams (the console holds one
	// per tab).
	MaxSubscribers int `mapstructure:"max_subscribers"`
	// AdminReserve is the percentage of MaxKeys, MaxWaiters and
	// MaxSubscribers that only admin-token requests may use, so that a
	// client token that takes all it can does not lock operators out.
	AdminReserve int `mapstructure:"admin_reserve"`
}

// Reserved is the part of max that AdminReserve keeps for admin tokens:
// AdminReserve percent of it, rounded up, but never all of it.
func (l Limits) Reserved(max int) int {
	r := (max*l.AdminReserve + 99) / 100
	return min(r, max-1)
}

// Metrics configures the Prometheus endpoint.
type Metrics struct {
	Path string `mapstructure:"path"`
	// NamespaceSeparator splits a key's namespace (its lock_namespace label) from
	// the rest of the key.
	NamespaceSeparator string `mapstructure:"namespace_separator"`
	// MaxNamespaces caps the lock_namespace label's distinct values; further
	// namespaces are counted as "_other".
	MaxNamespaces int `mapstructure:"max_namespaces"`
	// Namespaces, when set, are the only namespaces with a label of their
	// own ("_none" aside); the rest are "_other", and MaxNamespaces and
	// NamespaceIdle do not apply.
	Namespaces []string `mapstructure:"namespaces"`
	// NamespaceIdle gives a namespace's label slot back once it has had
	// nothing held, nothing queued and no transition for this long; 0
	// keeps slots until restart.
	NamespaceIdle time.Duration `mapstructure:"namespace_idle"`
	// RequireAuth makes Path need a bearer token like the /v1 calls.
	RequireAuth bool `mapstructure:"require_auth"`
}

// Auth configures bearer-token authentication. With no tokens at all every
// call is allowed (the default, bound to loopback).
type Auth struct {
	// Tokens may call every /v1 route except force-release and listing.
	Tokens []string `mapstructure:"tokens"`
	// TokensFile holds more client tokens, one a line; it is re-read on
	// SIGHUP.
	TokensFile string `mapstructure:"tokens_file"`
	// AdminTokens may call everything, force-release and listing included.
	AdminTokens []string `mapstructure:"admin_tokens"`
}

// Enabled reports whether any token source is configured.
func (a Auth) Enabled() bool {
	return len(a.Tokens) > 0 || len(a.AdminTokens) > 0 || a.TokensFile != ""
}

// HTTP configures what the API answers beyond tokens.
type HTTP struct {
	// AllowedHosts are host names (no port) requests may address the
	// server by when it has no auth tokens, besides IP addresses,
	// localhost and the listen address's name; "*" allows any. A request
	// for another name is refused 403 forbidden_host: that is what a
	// DNS-rebinding page sends. Unused with tokens.
	AllowedHosts []string `mapstructure:"allowed_hosts"`
}

// MinTTL is the shortest lease the API grants.
const MinTTL = time.Second

// Default returns the built-in configuration: safe to run as is.
func Default() Config {
	return Config{
		Listen:          "127.0.0.1:7070",
		ShutdownTimeout: 15 * time.Second,
		Log:             Log{Level: "info", Format: "json"},
		Lock: Lock{
			DefaultTTL:  30 * time.Second,
			MaxTTL:      time.Hour,
			DefaultWait: 30 * time.Second,
			MaxWait:     10 * time.Minute,
			// Ten minutes covers a cron job's next run asking how the
			// last one ended; the cap bounds the memory (about 200 bytes
			// and the key's a record).
			RememberOutcome: 10 * time.Minute,
			MaxRemembered:   100_000,
			DetachGrace:     10 * time.Second,
		},
		Limits: Limits{MaxKeys: 1_000_000, MaxWaitersPerKey: 10_000, MaxWaiters: 100_000,
			MaxConnections: 10_000, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute,
			MaxRequests: 110_000, WriteTimeout: 10 * time.Second, MaxSubscribers: 100, AdminReserve: 10},
		Metrics: Metrics{Path: "/metrics", NamespaceSeparator: ":", MaxNamespaces: 50, NamespaceIdle: 15 * time.Minute},
		UI:      UI{Enabled: true},
	}
}

// Validate reports the first invalid value, naming its key.
func (c Config) Validate() error {
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", key, fmt.Sprintf(format, args...)))
	}
	if _, port, err := net.SplitHostPort(c.Listen); err != nil || port == "" {
		bad("listen", "%q is not a host:port address", c.Listen)
	}
	if c.ShutdownTimeout <= 0 {
		bad("shutdown_timeout", "must be positive, got %s", c.ShutdownTimeout)
	}
	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		bad("log.level", "must be debug, info, warn or error, got %q", c.Log.Level)
	}
	if c.Log.Format != "json" && c.Log.Format != "text" {
		bad("log.format", "must be json or text, got %q", c.Log.Format)
	}
	l := c.Lock
	if l.MaxTTL < MinTTL {
		bad("lock.max_ttl", "must be at least %s, got %s", MinTTL, l.MaxTTL)
	}
	if l.DefaultTTL < MinTTL || l.DefaultTTL > l.MaxTTL {
		bad("lock.default_ttl", "must be between %s and lock.max_ttl (%s), got %s", MinTTL, l.MaxTTL, l.DefaultTTL)
	}
	if l.MaxWait < 0 {
		bad("lock.max_wait", "must not be negative, got %s", l.MaxWait)
	}
	if l.DefaultWait < 0 || l.DefaultWait > l.MaxWait {
		bad("lock.default_wait", "must be between 0 and lock.max_wait (%s), got %s", l.MaxWait, l.DefaultWait)
	}
	for _, lim := range []struct {
		key string
		v   int
	}{
		{"limits.max_keys", c.Limits.MaxKeys},
		{"limits.max_waiters_per_key", c.Limits.MaxWaitersPerKey},
		{"limits.max_waiters", c.Limits.MaxWaiters},
		{"limits.max_connections", c.Limits.MaxConnections},
		{"limits.max_requests", c.Limits.MaxRequests},
		{"limits.max_subscribers", c.Limits.MaxSubscribers},
		{"metrics.max_namespaces", c.Metrics.MaxNamespaces},
	} {
		if lim.v < 1 {
			bad(lim.key, "must be at least 1, got %d", lim.v)
		}
	}
	p := c.Metrics.Path
	if !strings.HasPrefix(p, "/") || api.ReservedPath(p) {
		bad("metrics.path", "must be a path such as /metrics that no API route uses, got %q", p)
	}
	if l.RestartGrace < 0 {
		bad("lock.restart_grace", "must not be negative, got %s", l.RestartGrace)
	}
	if l.MaxHold < 0 || (l.MaxHold > 0 && l.MaxHold < MinTTL) {
		bad("lock.max_hold", "must be 0 (no bound) or at least %s, got %s", MinTTL, l.MaxHold)
	}
	if l.DefaultLockDelay < 0 || l.DefaultLockDelay > MaxLockDelay {
		bad("lock.default_lock_delay", "must be between 0 and %s, got %s", MaxLockDelay, l.DefaultLockDelay)
	}
	if l.RememberOutcome < 0 {
		bad("lock.remember_outcome", "must not be negative (0 remembers nothing), got %s", l.RememberOutcome)
	}
	if l.MaxRemembered < 1 {
		bad("lock.max_remembered", "must be at least 1, got %d", l.MaxRemembered)
	}
	if l.DetachGrace < 0 {
		bad("lock.detach_grace", "must not be negative (0 turns it off), got %s", l.DetachGrace)
	}
	if c.Limits.ReadHeaderTimeout <= 0 {
		bad("limits.read_header_timeout", "must be positive, got %s", c.Limits.ReadHeaderTimeout)
	}
	if c.Limits.IdleTimeout <= 0 {
		bad("limits.idle_timeout", "must be positive, got %s", c.Limits.IdleTimeout)
	}
	if c.Limits.WriteTimeout <= 0 {
		bad("limits.write_timeout", "must be positive, got %s", c.Limits.WriteTimeout)
	}
	if (c.TLS.CertFile == "") != (c.TLS.KeyFile == "") {
		bad("tls.cert_file", "tls.cert_file and tls.key_file must be set together")
	}
	for _, l := range []struct {
		key  string
		toks []string
	}{{"auth.tokens", c.Auth.Tokens}, {"auth.admin_tokens", c.Auth.AdminTokens}} {
		list := l.key
		for i, tok := range l.toks {
			if err := auth.CheckToken(tok); err != nil {
				// Never quote a token back.
				bad(list, "entry %d: %s", i+1, err)
			}
		}
	}
	for i, h := range c.HTTP.AllowedHosts {
		if !hostName(h) {
			bad("http.allowed_hosts", "entry %d: %q is not a host name such as locks.example.com (no scheme or port), nor *", i+1, h)
		}
	}
	if n := len(c.Metrics.NamespaceSeparator); n < 1 || n > 8 {
		bad("metrics.namespace_separator", "must be 1 to 8 bytes, got %q", c.Metrics.NamespaceSeparator)
	}
	seen := map[string]bool{}
	for i, ns := range c.Metrics.Namespaces {
		switch {
		case ns == "" || len(ns) > 128 || !utf8.ValidString(ns) || strings.ContainsFunc(ns, unicode.IsControl):
			bad("metrics.namespaces", "entry %d: must be 1 to 128 bytes of UTF-8 without control characters", i+1)
		case c.Metrics.NamespaceSeparator != "" && strings.Contains(ns, c.Metrics.NamespaceSeparator):
			bad("metrics.namespaces", "entry %d: %q contains metrics.namespace_separator %q, so no key has it as its namespace", i+1, ns, c.Metrics.NamespaceSeparator)
		case ns == "_none" || ns == "_other":
			bad("metrics.namespaces", "entry %d: %q is a label of its own already", i+1, ns)
		case seen[ns]:
			bad("metrics.namespaces", "entry %d: %q is listed twice", i+1, ns)
		}
		seen[ns] = true
	}
	if c.Metrics.NamespaceIdle < 0 {
		bad("metrics.namespace_idle", "must not be negative, got %s", c.Metrics.NamespaceIdle)
	}
	if r := c.Limits.AdminReserve; r < 0 || r > 50 {
		bad("limits.admin_reserve", "must be a percentage from 0 to 50, got %d", r)
	}
	c.Cluster.validate(c.Auth, bad)
	if len(errs) == 0 {
		return nil
	}
	// The checks run in a fixed order, so the first is stable; one line,
	// since the command line prints it as its one error line.
	return fmt.Errorf("%w: %w", ErrInvalid, errs[0])
}

// hostName reports whether s is "*" or a DNS name: 1 to 253 bytes of
// letters, digits, '-', '_' and '.', with a trailing dot allowed.
func hostName(s string) bool {
	if s == "*" {
		return true
	}
	if s == "" || s == "." || len(s) > 253 {
		return false
	}
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9', c == '-', c == '_', c == '.':
		default:
			return false
		}
	}
	return true
}

// ErrInvalid wraps every configuration error: a bad value, an unknown key,
// an unreadable file.
var ErrInvalid = errors.New("invalid configuration")
