package auth

import (
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

const (
	clientTok = "client-token-0123456789"
	adminTok  = "admin-token-0123456789ab"
)

func TestCheck(t *testing.T) {
	toks, err := NewTokens([]string{clientTok}, []string{adminTok})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		header string
		level  Level
		want   error
	}{
		{"public needs nothing", "", Public, nil},
		{"public ignores a bad token", "Bearer nope", Public, nil},
		{"no header", "", Client, ErrUnauthorized},
		{"client token", "Bearer " + clientTok, Client, nil},
		{"scheme is case-insensitive", "bEaReR " + clientTok, Client, nil},
		{"spaces around the token", "Bearer   " + clientTok + "  ", Client, nil},
		{"admin token is also a client token", "Bearer " + adminTok, Client, nil},
		{"admin token on admin route", "Bearer " + adminTok, Admin, nil},
		{"client token on admin route", "Bearer " + clientTok, Admin, ErrForbidden},
		{"unknown token on admin route", "Bearer " + clientTok + "x", Admin, ErrUnauthorized},
		{"wrong token", "Bearer " + strings.ToUpper(clientTok), Client, ErrUnauthorized},
		{"prefix of a token", "Bearer " + clientTok[:len(clientTok)-1], Client, ErrUnauthorized},
		{"basic scheme", "Basic " + clientTok, Client, ErrUnauthorized},
		{"scheme only", "Bearer", Client, ErrUnauthorized},
		{"scheme and spaces", "Bearer    ", Client, ErrUnauthorized},
		{"token without scheme", clientTok, Client, ErrUnauthorized},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := toks.Check(tt.header, tt.level); got != tt.want {
				t.Fatalf("Check(%q, %d) = %v, want %v", tt.header, tt.level, got, tt.want)
			}
		})
	}
}

func TestNoTokensAllowsEverything(t *testing.T) {
	empty, err := NewTokens(nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	var g Guard
	for _, c := range []interface{ Check(string, Level) error }{(*Tokens)(nil), empty, &g} {
		for _, l := range []Level{Public, Client, Admin} {
			if err := c.Check("", l); err != nil {
				t.Fatalf("%T: Check(no header, %d) = %v, want nil", c, l, err)
			}
		}
	}
}

func TestOnlyAdminTokens(t *testing.T) {
	toks, err := NewTokens(nil, []string{adminTok})
	if err != nil {
		t.Fatal(err)
	}
	if !toks.Enabled() {
		t.Fatal("admin tokens alone must enable auth")
	}
	if err := toks.Check("", Client); err != ErrUnauthorized {
		t.Fatalf("no header: got %v, want ErrUnauthorized", err)
	}
	if err := toks.Check("Bearer "+adminTok, Client); err != nil {
		t.Fatalf("admin token on client route: %v", err)
	}
}

func TestGuardSwaps(t *testing.T) {
	var g Guard
	a, _ := NewTokens([]string{clientTok}, nil)
	b, _ := NewTokens([]string{adminTok}, nil)
	g.Set(a)
	if err := g.Check("Bearer "+clientTok, Client); err != nil {
		t.Fatal(err)
	}
	g.Set(b)
	if err := g.Check("Bearer "+clientTok, Client); err != ErrUnauthorized {
		t.Fatalf("after swap the old token: got %v, want ErrUnauthorized", err)
	}
	if err := g.Check("Bearer "+adminTok, Client); err != nil {
		t.Fatalf("after swap the new token: %v", err)
	}
}

func TestBadTokensNeverEchoed(t *testing.T) {
	for _, bad := range []string{"short-secret", "has a space in it 0123", "tab\there-0123456789", "ünïcödé-0123456789"} {
		_, err := NewTokens([]string{clientTok, bad}, nil)
		if !errors.Is(err, ErrBadToken) {
			t.Fatalf("NewTokens(%q) = %v, want ErrBadToken", bad, err)
		}
		if strings.Contains(err.Error(), bad) || !strings.Contains(err.Error(), "client token 2") {
			t.Fatalf("error %q must name the position and not contain the token", err)
		}
		_, err = NewTokens(nil, []string{bad})
		if !errors.Is(err, ErrBadToken) || !strings.Contains(err.Error(), "admin token 1") {
			t.Fatalf("admin: %v", err)
		}
	}
}

func TestReadFile(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "tokens")
	if err := os.WriteFile(good, []byte("# deploy tokens\n\n  "+clientTok+"  \n"+adminTok+"\r\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	got, err := ReadFile(good)
	if err != nil || len(got) != 2 || got[0] != clientTok || got[1] != adminTok {
		t.Fatalf("ReadFile = %q, %v", got, err)
	}
	bad := filepath.Join(dir, "bad")
	if err := os.WriteFile(bad, []byte(clientTok+"\n\nweak\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = ReadFile(bad)
	if !errors.Is(err, ErrBadToken) || !strings.Contains(err.Error(), "line 3") || strings.Contains(err.Error(), "weak") {
		t.Fatalf("ReadFile(bad) = %v, want ErrBadToken naming line 3 without the token", err)
	}
	if _, err := ReadFile(filepath.Join(dir, "absent")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("ReadFile(absent) = %v", err)
	}
}

func TestCheckDoesNotAllocate(t *testing.T) {
	toks, _ := NewTokens([]string{clientTok}, []string{adminTok})
	h := "Bearer " + adminTok + "-and-a-longer-tail-than-32-bytes"
	if n := testing.AllocsPerRun(100, func() { _ = toks.Check(h, Admin) }); n != 0 {
		t.Fatalf("Check allocates %v times per call, want 0", n)
	}
}

func BenchmarkCheck(b *testing.B) {
	for _, n := range []int{1, 100} {
		client := make([]string, n)
		for i := range client {
			client[i] = clientTok + strings.Repeat("x", i)
		}
		toks, _ := NewTokens(client, nil)
		h := "Bearer " + client[n-1]
		b.Run("tokens="+strconv.Itoa(n), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if toks.Check(h, Client) != nil {
					b.Fatal("rejected")
				}
			}
		})
	}
}

// TestGuardChanged: the context of Changed ends at the next Set, and only
// then; after it, the new tokens are in force, and Changed hands out a
// fresh context for the reload after.
func TestGuardChanged(t *testing.T) {
	var g Guard
	first := g.Changed()
	if g.Changed() != first {
		t.Fatal("two calls before a Set returned different contexts")
	}
	if first.Err() != nil {
		t.Fatal("Changed is done before any Set")
	}
	toks, err := NewTokens([]string{clientTok}, nil)
	if err != nil {
		t.Fatal(err)
	}
	g.Set(toks)
	select {
	case <-first.Done():
	default:
		t.Fatal("Set did not end the context of Changed")
	}
	if err := g.Check("Bearer "+clientTok, Client); err != nil {
		t.Fatalf("after the change: %v", err)
	}
	second := g.Changed()
	if second.Err() != nil {
		t.Fatal("the context after a Set is already done")
	}
	g.Set(nil)
	if second.Err() == nil {
		t.Fatal("the second Set did not end the second context")
	}
}

func TestTokenLengthBounds(t *testing.T) {
	long := strings.Repeat("t", MaxTokenBytes+1)
	if err := CheckToken(long); !errors.Is(err, ErrBadToken) {
		t.Errorf("CheckToken(%d bytes) = %v, want ErrBadToken", len(long), err)
	}
	if err := CheckToken(long[:MaxTokenBytes]); err != nil {
		t.Errorf("CheckToken(%d bytes) = %v, want nil", MaxTokenBytes, err)
	}
	toks, err := NewTokens([]string{long[:MaxTokenBytes]}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := toks.Check("Bearer "+long[:MaxTokenBytes], Client); err != nil {
		t.Errorf("the longest token: %v, want accepted", err)
	}
	if err := toks.Check("Bearer "+long, Client); !errors.Is(err, ErrUnauthorized) {
		t.Errorf("a token over the bound: %v, want ErrUnauthorized", err)
	}
}
