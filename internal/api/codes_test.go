package api_test

import (
	"fmt"
	"maps"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/mutexd/mutexd/internal/api"
)

// codeCheck is an api.Observer that fails its test when a route answers a
// status code the route table does not list for it. The metrics create a
// counter at 0 only for the listed codes, so this keeps the list honest:
// every black-box test that builds its server with checkCodes (the main
// fixtures, the HTTP stack fuzzer, the auth, stream, guard and panic tests)
// also checks that the codes it provokes were foreseen.
type codeCheck struct {
	mu  sync.Mutex      // guards bad
	bad map[string]bool // "METHOD route answered code"
}

// checkCodes returns a codeCheck that reports at the end of t. Build the
// server after calling it, so its report comes after the server closed.
func checkCodes(t *testing.T) api.Observer {
	c := &codeCheck{bad: map[string]bool{}}
	t.Cleanup(func() {
		c.mu.Lock()
		defer c.mu.Unlock()
		for _, b := range slices.Sorted(maps.Keys(c.bad)) {
			t.Errorf("%s, a code its row in the route table does not list (so no counter exists for it until it happens)", b)
		}
	})
	return c
}

func (c *codeCheck) Route(route, method string, codes []int) api.RouteObserver {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !slices.IsSorted(codes) || len(slices.Compact(slices.Clone(codes))) != len(codes) {
		c.bad[fmt.Sprintf("%s %s lists codes %v, not sorted and distinct", method, route, codes)] = true
	}
	return &codeRoute{c: c, name: method + " " + route, codes: codes}
}

type codeRoute struct {
	c     *codeCheck
	name  string
	codes []int
}

func (r *codeRoute) Observe(code int, _ time.Duration) {
	if slices.Contains(r.codes, code) {
		return
	}
	r.c.mu.Lock()
	defer r.c.mu.Unlock()
	r.c.bad[fmt.Sprintf("%s answered %d", r.name, code)] = true
}
