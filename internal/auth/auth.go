// Package auth decides who may call the API: bearer tokens, checked in
// constant time, in two tiers (clients and admins). It knows nothing of
// HTTP routing; internal/api says which tier each route needs and maps
// this package's errors to status codes.
package auth

import (
	"bufio"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"sync/atomic"
)

// Errors of Check. Neither ever carries a token.
var (
	// ErrUnauthorized means the request carries no bearer token, or one
	// that is not configured.
	ErrUnauthorized = errors.New("missing or unknown bearer token")
	// ErrForbidden means the token is valid but the call needs an admin
	// token.
	ErrForbidden = errors.New("this call needs an admin token")
	// ErrBadToken means a configured token is unusable (too short, or has
	// characters that cannot travel in an Authorization header). Its
	// message names the entry's position, never its text.
	ErrBadToken = errors.New("unusable token")
)

// MinTokenBytes is the shortest token accepted in configuration: shorter
// ones are guessable.
const MinTokenBytes = 16

// MaxTokenBytes is the longest token accepted; a longer bearer token can
// match none, and Check hashes a copy of the token in a buffer this size.
const MaxTokenBytes = 512

// Level is what a route requires.
type Level uint8

const (
	// Public routes need no token (health, readiness).
	Public Level = iota
	// Client routes need any configured token.
	Client
	// Admin routes need an admin token (force-release, listing keys).
	Admin
)

// digest is a token's SHA-256. Comparing digests rather than tokens makes
// the comparison's time independent of the tokens' lengths too.
type digest [sha256.Size]byte

// Tokens is an immutable set of client and admin tokens. An admin token is
// also a client token. The zero value and nil have no tokens: everything is
// allowed.
type Tokens struct {
	client []digest // includes the admin tokens
	admin  []digest
}

// NewTokens builds a set from client and admin tokens. Every token must be
// at least MinTokenBytes of visible ASCII (no spaces). Errors wrap
// ErrBadToken and name the list and position, never the token.
func NewTokens(client, admin []string) (*Tokens, error) {
	t := &Tokens{}
	for i, s := range client {
		if err := CheckToken(s); err != nil {
			return nil, fmt.Errorf("client token %d: %w", i+1, err)
		}
		t.client = append(t.client, sha256.Sum256([]byte(s)))
	}
	for i, s := range admin {
		if err := CheckToken(s); err != nil {
			return nil, fmt.Errorf("admin token %d: %w", i+1, err)
		}
		d := sha256.Sum256([]byte(s))
		t.admin = append(t.admin, d)
		t.client = append(t.client, d)
	}
	return t, nil
}

// CheckToken reports whether s is usable as a token: at least
// MinTokenBytes of visible ASCII. The error wraps ErrBadToken and never
// contains s.
func CheckToken(s string) error {
	if len(s) < MinTokenBytes {
		return fmt.Errorf("%w: shorter than %d bytes", ErrBadToken, MinTokenBytes)
	}
	if len(s) > MaxTokenBytes {
		return fmt.Errorf("%w: longer than %d bytes", ErrBadToken, MaxTokenBytes)
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; c <= ' ' || c > '~' {
			return fmt.Errorf("%w: only visible ASCII characters, no spaces", ErrBadToken)
		}
	}
	return nil
}

// Enabled reports whether any token is configured.
func (t *Tokens) Enabled() bool { return t != nil && len(t.client) > 0 }

// Count returns the number of client tokens (admin tokens included) and
// admin tokens, for logs.
func (t *Tokens) Count() (client, admin int) {
	if t == nil {
		return 0, 0
	}
	return len(t.client), len(t.admin)
}

// Check decides a request that needs level and carries the Authorization
// header value authorization. It returns nil, ErrUnauthorized or
// ErrForbidden. Its running time depends on the number of configured
// tokens, never on their contents or on how much of one a caller guessed.
func (t *Tokens) Check(authorization string, level Level) error {
	if level == Public || !t.Enabled() {
		return nil
	}
	tok, ok := bearer(authorization)
	if !ok {
		return ErrUnauthorized
	}
	if len(tok) > MaxTokenBytes {
		return ErrUnauthorized // no configured token is this long
	}
	// A copy in a buffer on the stack: the hash needs bytes, and a
	// conversion would allocate for tokens over 32 bytes.
	var buf [MaxTokenBytes]byte
	d := digest(sha256.Sum256(buf[:copy(buf[:], tok)]))
	if !member(&d, t.client) {
		return ErrUnauthorized
	}
	if level == Admin && !member(&d, t.admin) {
		return ErrForbidden
	}
	return nil
}

// member compares d with every digest in set, without stopping early.
func member(d *digest, set []digest) bool {
	found := 0
	for i := range set {
		found |= subtle.ConstantTimeCompare(d[:], set[i][:])
	}
	return found == 1
}

// bearer extracts the token of an "Authorization: Bearer <token>" value.
// The scheme is case-insensitive (RFC 7235).
func bearer(h string) (string, bool) {
	const scheme = "bearer "
	if len(h) <= len(scheme) || !strings.EqualFold(h[:len(scheme)], scheme) {
		return "", false
	}
	tok := strings.TrimSpace(h[len(scheme):])
	return tok, tok != ""
}

// ReadFile reads tokens from path: one a line; blank lines and lines
// starting with # are skipped, surrounding spaces trimmed. Every token must
// pass CheckToken; an error names the line, never the token.
func ReadFile(path string) ([]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return parseLines(f)
}

func parseLines(r io.Reader) ([]string, error) {
	var out []string
	sc := bufio.NewScanner(r)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if err := CheckToken(line); err != nil {
			return nil, fmt.Errorf("line %d: %w", n, err)
		}
		out = append(out, line)
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	return out, nil
}

// Guard holds the current Tokens; a reload swaps them atomically while
// requests are being checked. The zero value allows everything.
type Guard struct {
	cur atomic.Pointer[Tokens]

	mu         sync.Mutex         // guards the following
	next       context.Context    // done at the next Set; nil until Changed asks for it
	cancelNext context.CancelFunc // ends next
}

// Set makes t the tokens in force, and then ends the context Changed
// returned, so that long-lived requests re-check their tokens.
func (g *Guard) Set(t *Tokens) {
	g.cur.Store(t)
	g.mu.Lock()
	cancel := g.cancelNext
	g.next, g.cancelNext = nil, nil
	g.mu.Unlock()
	if cancel != nil {
		cancel()
	}
}

// Changed returns a context that is done once the tokens in force are next
// replaced by Set. A request that outlives its own check (an event stream,
// a long poll) calls Changed, then checks its token, and checks it again
// when the context is done: a token revoked by a reload then ends it.
// Calling Changed before checking is what makes a reload between the two
// impossible to miss: the check already sees the new tokens.
func (g *Guard) Changed() context.Context {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.next == nil {
		g.next, g.cancelNext = context.WithCancel(context.Background())
	}
	return g.next
}

// Tokens returns the tokens in force (nil when none were set).
func (g *Guard) Tokens() *Tokens { return g.cur.Load() }

// Check decides a request with the tokens in force; see Tokens.Check.
func (g *Guard) Check(authorization string, level Level) error {
	return g.cur.Load().Check(authorization, level)
}
