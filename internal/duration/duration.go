// Package duration reads and prints the durations mutexd accepts
// everywhere (API parameters, configuration, command-line flags): a Go
// duration ("30s", "1500ms", "2m") or a bare whole number of seconds, so
// "ttl=30" means the same in a query, a YAML file and a flag.
package duration

import (
	"errors"
	"strconv"
	"strings"
	"time"
)

// ErrSyntax is the error of a string that is not a duration.
var ErrSyntax = errors.New("not a duration such as 30s, 1500ms, 2m or whole seconds")

// maxSeconds is the largest bare number of seconds that fits a Duration
// with room to spare.
const maxSeconds = int64(1<<62) / int64(time.Second)

// Parse reads a Go duration or a bare whole number of seconds. It does not
// allocate for valid input, since the API parses ttl and wait on every
// acquire.
func Parse(s string) (time.Duration, error) {
	if !wholeNumber(s) {
		d, err := time.ParseDuration(s) // checked first: a failed ParseInt allocates its error
		if err != nil {
			return 0, ErrSyntax
		}
		return d, nil
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < -maxSeconds || n > maxSeconds {
		return 0, ErrSyntax
	}
	return time.Duration(n) * time.Second, nil
}

// wholeNumber reports whether s is an optionally signed run of decimal
// digits, the only input strconv.ParseInt accepts in base 10.
func wholeNumber(s string) bool {
	if s != "" && (s[0] == '+' || s[0] == '-') {
		s = s[1:]
	}
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// Format prints d in whole units without trailing zero parts ("1h", not
// "1h0m0s"; "1m30s" stays).
func Format(d time.Duration) string {
	s := d.String()
	for _, suffix := range []string{"0s", "0m"} {
		if len(s) > len(suffix) && strings.HasSuffix(s, suffix) && (strings.HasSuffix(s, "m0s") || strings.HasSuffix(s, "h0m")) {
			s = strings.TrimSuffix(s, suffix)
		}
	}
	return s
}
