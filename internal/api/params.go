package api

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/labstack/echo/v4"

	"github.com/mutexd/mutexd/internal/duration"
)

// Limits of user input.
const (
	MaxKeyBytes   = 256
	MaxOwnerBytes = 128
	MaxBodyBytes  = 64 << 10
	MaxQueueShown = 100
	DefaultLimit  = 100
	MaxLimit      = 1000
	// MaxRequestIDBytes bounds an acquire's request_id.
	MaxRequestIDBytes = 64
	// MaxReasonBytes bounds a drain's reason.
	MaxReasonBytes = 256
	// MaxLockDelay is the longest lock_delay an acquire may ask for.
	MaxLockDelay = time.Minute
)

// DefaultDrainReason is the reason drained waiters are given when the
// operator names none.
const DefaultDrainReason = "drained by an operator"

// params are a request's parameters, from the query string and from a JSON
// body (which wins where both name one). Only the names in the route's
// allowed set are accepted: a typo is an error, not a silent default.
type params struct {
	vals [numParams]string
	set  [numParams]bool
}

type param uint8

const (
	pTTL param = iota
	pWait
	pOwner
	pOnError
	pToken
	pOutcome
	pPrefix
	pLimit
	pAfter
	pKey
	pSince
	pRequestID
	pMaxHold
	pLockDelay
	pReason
	pStale
	pLocal
	pID
	pRaft
	pAPI
	pVoter
	pTo
	pForce
	numParams
)

var paramNames = [numParams]string{"ttl", "wait", "owner", "on_error", "token", "outcome", "prefix", "limit", "after", "key", "since",
	"request_id", "max_hold", "lock_delay", "reason", "stale", "local", "id", "raft", "api", "voter", "to", "force"}

func (p *params) get(k param) (string, bool) { return p.vals[k], p.set[k] }

// parseParams reads the query string and, for requests with a body, a JSON
// object, accepting only the parameters in allowed.
func parseParams(c echo.Context, bodyTimeout time.Duration, allowed ...param) (params, error) {
	var p params
	r := c.Request()
	if r.URL.RawQuery != "" {
		if err := parseQuery(r.URL.RawQuery, allowed, &p); err != nil {
			return p, err
		}
	}
	if r.Body == nil || r.Body == http.NoBody || r.ContentLength == 0 {
		return p, nil
	}
	if r.ContentLength > MaxBodyBytes {
		return p, echo.ErrStatusRequestEntityTooLarge
	}
	// A body must arrive promptly: a client trickling it would otherwise
	// hold a connection and a goroutine for as long as it likes. The
	// deadline is lifted once the body is in, so a long poll is not cut.
	rc := http.NewResponseController(c.Response())
	_ = rc.SetReadDeadline(time.Now().Add(bodyTimeout)) // unsupported writers simply have no deadline
	raw, err := io.ReadAll(io.LimitReader(r.Body, MaxBodyBytes+1))
	if err != nil {
		// Keep the deadline: the server must not wait for the rest of
		// this body before closing the connection.
		c.Response().Header().Set(echo.HeaderConnection, "close")
		return p, badRequest("invalid_body", "The request body could not be read in time.")
	}
	_ = rc.SetReadDeadline(time.Time{})
	if len(raw) > MaxBodyBytes {
		return p, echo.ErrStatusRequestEntityTooLarge
	}
	if len(bytes.TrimSpace(raw)) == 0 {
		return p, nil
	}
	var body map[string]json.RawMessage
	if err := json.Unmarshal(raw, &body); err != nil {
		return p, badRequest("invalid_body", "The request body must be a JSON object of parameters.")
	}
	for name, v := range body {
		k, ok := lookupParam(name, allowed)
		if !ok {
			return p, unknownParam(name, allowed)
		}
		if string(v) == "null" {
			continue // as if absent, the way JSON APIs read an explicit null
		}
		s, err := scalar(v)
		if err != nil {
			return p, badRequest("invalid_body", "Parameter %q must be a string, a number or a boolean.", name)
		}
		p.vals[k], p.set[k] = s, true
	}
	return p, nil
}

// parseQuery reads a query string with url.ParseQuery's rules (pairs split
// on '&', a ';' is an error, %-escapes and '+' decoded, the last of
// repeated names wins) without building its map of slices: on the
// acquire/release path that was most of the parsing's allocations. As
// with ParseQuery, a malformed query is reported before an unknown name.
func parseQuery(raw string, allowed []param, p *params) error {
	if strings.IndexByte(raw, ';') >= 0 {
		return badRequest("invalid_query", "The query string is malformed: %s.", "invalid semicolon separator in query")
	}
	var unknown string
	var hasUnknown bool
	for rest := raw; rest != ""; {
		var pair string
		pair, rest, _ = strings.Cut(rest, "&")
		if pair == "" {
			continue
		}
		name, val, _ := strings.Cut(pair, "=")
		name, err := queryUnescape(name)
		if err != nil {
			return badRequest("invalid_query", "The query string is malformed: %s.", err)
		}
		if val, err = queryUnescape(val); err != nil {
			return badRequest("invalid_query", "The query string is malformed: %s.", err)
		}
		k, ok := lookupParam(name, allowed)
		if !ok {
			if !hasUnknown {
				unknown, hasUnknown = name, true
			}
			continue
		}
		p.vals[k], p.set[k] = val, true
	}
	if hasUnknown {
		return unknownParam(unknown, allowed)
	}
	return nil
}

// queryUnescape is url.QueryUnescape without its work when there is
// nothing to decode.
func queryUnescape(s string) (string, error) {
	if strings.IndexByte(s, '%') < 0 && strings.IndexByte(s, '+') < 0 {
		return s, nil
	}
	return url.QueryUnescape(s)
}

// scalar returns a JSON string's text or a JSON number's digits.
func scalar(v json.RawMessage) (string, error) {
	var s string
	if err := json.Unmarshal(v, &s); err == nil {
		return s, nil
	}
	var b bool
	if err := json.Unmarshal(v, &b); err == nil {
		return strconv.FormatBool(b), nil // a flag's JSON form ("voter": false)
	}
	var n json.Number
	if err := json.Unmarshal(v, &n); err != nil {
		return "", err
	}
	return n.String(), nil
}

func lookupParam(name string, allowed []param) (param, bool) {
	for _, k := range allowed {
		if paramNames[k] == name {
			return k, true
		}
	}
	return 0, false
}

func unknownParam(name string, allowed []param) error {
	names := make([]string, len(allowed))
	for i, k := range allowed {
		names[i] = paramNames[k]
	}
	if len(name) > 64 {
		name = name[:64] + "..."
	}
	takes := strings.Join(names, ", ")
	if len(names) == 0 {
		takes = "no parameters"
	}
	return badRequest("invalid_parameter", "Unknown parameter %q; this call takes %s.", strings.ToValidUTF8(name, "?"), takes)
}

// pathKey returns the route's {key} segment, unescaped and validated.
func pathKey(c echo.Context) (string, error) {
	key := c.Param("key")
	if c.Request().URL.RawPath != "" {
		// echo routed on the escaped path, so the segment is still escaped.
		k, err := url.PathUnescape(key)
		if err != nil {
			return "", badRequest("invalid_key", "The key is not a valid URL-escaped path segment.")
		}
		key = k
	}
	if err := validKey(key); err != nil {
		return "", err
	}
	return key, nil
}

// validKey checks a key: 1 to 256 bytes of UTF-8 without control or
// format characters.
func validKey(key string) error {
	if len(key) == 0 || len(key) > MaxKeyBytes {
		return badRequest("invalid_key", "A key is 1 to %d bytes; got %d.", MaxKeyBytes, len(key))
	}
	if !printable(key) {
		return badRequest("invalid_key", "A key must be valid UTF-8 without control characters.")
	}
	if r, ok := formatChar(key); ok {
		return badRequest("invalid_key", "A key must not contain invisible format characters (bidi controls, zero-width characters); it contains %U.", r)
	}
	return nil
}

// formatChar returns the first character of s in Unicode category Cf
// (format: bidi overrides and isolates, zero-width spaces and joiners, the
// byte order mark, ...). They are invisible or reorder the text around
// them, so a key or owner holding one can pose as another in the
// console's and the command line's tables. s is valid UTF-8.
func formatChar(s string) (rune, bool) {
	for i := 0; i < len(s); i++ {
		if s[i] >= utf8.RuneSelf { // no ASCII character is in Cf
			for _, r := range s[i:] {
				if unicode.Is(unicode.Cf, r) {
					return r, true
				}
			}
			break
		}
	}
	return 0, false
}

// printable reports whether s is valid UTF-8 without control characters.
func printable(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c >= utf8.RuneSelf {
			return printableSlow(s[i:])
		} else if c < 0x20 || c == 0x7f {
			return false
		}
	}
	return true
}

func printableSlow(s string) bool {
	if !utf8.ValidString(s) {
		return false
	}
	for _, r := range s {
		if unicode.IsControl(r) {
			return false
		}
	}
	return true
}

// validOwner checks an owner: at most 128 bytes of UTF-8 without control
// or format characters.
func validOwner(owner string) error {
	if len(owner) > MaxOwnerBytes || !printable(owner) {
		return badRequest("invalid_owner", "owner is at most %d bytes of UTF-8 without control characters.", MaxOwnerBytes)
	}
	if r, ok := formatChar(owner); ok {
		return badRequest("invalid_owner", "owner must not contain invisible format characters (bidi controls, zero-width characters); it contains %U.", r)
	}
	return nil
}

// durationParam reads an optional duration parameter within [lo, hi].
func durationParam(p *params, k param, def, lo, hi time.Duration, code string) (time.Duration, error) {
	s, ok := p.get(k)
	if !ok {
		return def, nil
	}
	d, err := duration.Parse(s)
	if err != nil || d < lo || d > hi {
		return 0, badRequest(code, "%s must be a duration from %s to %s (such as 30s, 1500ms, 2m, or whole seconds); got %q.",
			paramNames[k], duration.Format(lo), duration.Format(hi), clip(s))
	}
	return d, nil
}

// clip shortens user input quoted back in an error message.
func clip(s string) string {
	s = strings.ToValidUTF8(s, "?")
	if len(s) > 64 {
		return s[:64] + "..."
	}
	return s
}

// validRequestID checks a request_id: 1 to 64 printable ASCII bytes
// (0x21 to 0x7e), so that it is the same bytes in a query string, a JSON
// body, a log line and a header, whatever a client's encoder does.
func validRequestID(id string) error {
	if len(id) == 0 || len(id) > MaxRequestIDBytes {
		return badRequest("invalid_request_id", "request_id must be 1 to %d printable ASCII characters; got %d bytes.", MaxRequestIDBytes, len(id))
	}
	for i := 0; i < len(id); i++ {
		if c := id[i]; c < 0x21 || c > 0x7e {
			return badRequest("invalid_request_id", "request_id must be 1 to %d printable ASCII characters; got %q.", MaxRequestIDBytes, clip(id))
		}
	}
	return nil
}

// validPrefix checks a required prefix of the operators' prefix calls:
// 1 to 256 bytes of UTF-8 without control characters. An empty prefix
// would act on every key, which nobody should do by leaving a parameter
// out.
func validPrefix(p *params) (string, error) {
	prefix, _ := p.get(pPrefix)
	if prefix == "" || len(prefix) > MaxKeyBytes || !printable(prefix) {
		return "", badRequest("invalid_prefix", "prefix is required: 1 to %d bytes of UTF-8 without control characters (it would act on every key under it).", MaxKeyBytes)
	}
	return prefix, nil
}

// drainReason reads a drain's optional reason: at most 256 bytes of UTF-8
// without control or format characters, as it is shown to the drained
// waiters, in events and in the console.
func drainReason(p *params) (string, error) {
	reason, _ := p.get(pReason)
	if reason == "" {
		return DefaultDrainReason, nil
	}
	if len(reason) > MaxReasonBytes || !printable(reason) {
		return "", badRequest("invalid_reason", "reason is at most %d bytes of UTF-8 without control characters; got %d bytes.", MaxReasonBytes, len(reason))
	}
	if r, ok := formatChar(reason); ok {
		return "", badRequest("invalid_reason", "reason must not contain invisible format characters (bidi controls, zero-width characters); it contains %U.", r)
	}
	return reason, nil
}
