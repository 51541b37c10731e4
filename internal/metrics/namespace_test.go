package metrics_test

import (
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mutexd/mutexd/internal/engine"
	"github.com/mutexd/mutexd/internal/metrics"
)

// testClock is a clock the test moves by hand.
type testClock struct {
	mu sync.Mutex // guards t
	t  time.Time
}

func (c *testClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }

func (c *testClock) Add(d time.Duration) { c.mu.Lock(); c.t = c.t.Add(d); c.mu.Unlock() }

// scrape fetches the exposition through Handler, which sweeps first.
func scrape(t *testing.T, m *metrics.Metrics) string {
	t.Helper()
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	if rec.Code != http.StatusOK {
		t.Fatalf("scrape: status %d", rec.Code)
	}
	b, _ := io.ReadAll(rec.Body)
	return string(b)
}

func cycle(m *metrics.Metrics, key string) {
	m.OnEvent(engine.Event{Type: engine.EventGranted, Key: key})
	m.OnEvent(engine.Event{Type: engine.EventEnded, Key: key, Outcome: engine.OutcomeReleased, Held: time.Millisecond})
}

// TestIdleNamespacesGiveTheirSlotsBack is the attack of a client that
// sends junk1: ... junk60: to take every namespace slot: once the junk has
// been idle for NamespaceIdle, its slots go to the namespaces that are
// still in use, and its series leave the exposition.
func TestIdleNamespacesGiveTheirSlotsBack(t *testing.T) {
	clk := &testClock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	const idle = 15 * time.Minute
	m := metrics.New(metrics.Options{NamespaceSeparator: ":", MaxNamespaces: 50, NamespaceIdle: idle, Now: clk.Now, Version: "v-test"})
	for i := 1; i <= 60; i++ {
		cycle(m, "junk"+strconv.Itoa(i)+":x")
	}
	// A namespace that keeps a lease held is never given up, however long.
	m.OnEvent(engine.Event{Type: engine.EventGranted, Key: "junk1:held"})
	if got := m.Namespace("orders:1"); got != metrics.OtherNamespace {
		t.Fatalf("with every slot taken, Namespace(orders:1) = %q, want %q", got, metrics.OtherNamespace)
	}
	scrape(t, m) // sees the junk touched: its idle time starts now
	clk.Add(idle - time.Second)
	cycle(m, "junk2:x") // still in use
	if text := scrape(t, m); !strings.Contains(text, `lock_namespace="junk3"`) {
		t.Fatalf("junk3 given up before it was idle for %s", idle)
	}
	clk.Add(time.Second)
	text := scrape(t, m)
	for _, ns := range []string{"junk3", "junk50"} {
		if strings.Contains(text, `lock_namespace="`+ns+`"`) {
			t.Errorf("idle namespace %s still exported:\n%s", ns, grep(text, ns+`"`))
		}
	}
	for _, want := range []string{`mutexd_locks_held{lock_namespace="junk1"} 1`, `lock_namespace="junk2"`} {
		if !strings.Contains(text, want) {
			t.Errorf("exposition lacks %s (a namespace in use was given up)", want)
		}
	}
	cycle(m, "orders:1")
	if got := m.Namespace("orders:1"); got != "orders" {
		t.Fatalf("after the sweep, Namespace(orders:1) = %q, want orders", got)
	}
	if text := scrape(t, m); !strings.Contains(text, `mutexd_hold_duration_seconds_count{lock_namespace="orders",outcome="released"} 1`) {
		t.Errorf("orders not counted under its own label:\n%s", grep(text, "orders"))
	}
}

// TestNamespaceKeepsItsKeysWhileTheyLive: a lease counted in _other (no
// slot was free when it was granted) is also ended in _other, even if its
// namespace may take a freed slot meanwhile, so no gauge goes negative or
// stays up.
func TestNamespaceKeepsItsKeysWhileTheyLive(t *testing.T) {
	clk := &testClock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	m := metrics.New(metrics.Options{NamespaceSeparator: ":", MaxNamespaces: 1, NamespaceIdle: time.Minute, Now: clk.Now, Version: "v-test"})
	cycle(m, "junk:1")
	m.OnEvent(engine.Event{Type: engine.EventGranted, Key: "late:1"}) // no slot: _other
	m.OnEvent(engine.Event{Type: engine.EventQueued, Key: "late:1"})
	scrape(t, m)
	clk.Add(time.Minute)
	scrape(t, m) // junk's slot is free now
	m.OnEvent(engine.Event{Type: engine.EventGranted, Key: "late:2"})
	if got := m.Namespace("late:2"); got != metrics.OtherNamespace {
		t.Errorf("while late:1 is counted in _other, Namespace(late:2) = %q, want %q", got, metrics.OtherNamespace)
	}
	m.OnEvent(engine.Event{Type: engine.EventEnded, Key: "late:1", Outcome: engine.OutcomeReleased})
	m.OnEvent(engine.Event{Type: engine.EventGranted, Key: "late:1", FromQueue: true})
	m.OnEvent(engine.Event{Type: engine.EventEnded, Key: "late:1", Outcome: engine.OutcomeReleased})
	m.OnEvent(engine.Event{Type: engine.EventEnded, Key: "late:2", Outcome: engine.OutcomeReleased})
	text := scrape(t, m)
	for _, want := range []string{
		`mutexd_locks_held{lock_namespace="_other"} 0`, `mutexd_queue_depth{lock_namespace="_other"} 0`,
		`mutexd_hold_duration_seconds_count{lock_namespace="_other",outcome="released"} 3`,
	} {
		if !strings.Contains(text, want+"\n") {
			t.Errorf("exposition lacks %s:\n%s", want, grep(text, "_other"))
		}
	}
	cycle(m, "late:3")
	if got := m.Namespace("late:3"); got != "late" {
		t.Errorf("once nothing of late is in _other, Namespace(late:3) = %q, want late", got)
	}
}

// TestNamespaceAllowList: with Namespaces set, only those (and _none) have
// labels, from the start, and they are never given up.
func TestNamespaceAllowList(t *testing.T) {
	clk := &testClock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	m := metrics.New(metrics.Options{NamespaceSeparator: ":", MaxNamespaces: 50, Namespaces: []string{"orders", "billing"},
		NamespaceIdle: time.Minute, Now: clk.Now, Version: "v-test"})
	tests := []struct{ key, want string }{
		{"orders:1", "orders"},
		{"billing:1", "billing"},
		{"plain", metrics.NoNamespace},
		{"junk:1", metrics.OtherNamespace},
		{"user:1", metrics.OtherNamespace},
	}
	for _, tt := range tests {
		cycle(m, tt.key)
		if got := m.Namespace(tt.key); got != tt.want {
			t.Errorf("Namespace(%q) = %q, want %q", tt.key, got, tt.want)
		}
	}
	clk.Add(time.Hour)
	scrape(t, m)
	clk.Add(time.Hour)
	text := scrape(t, m)
	for _, ns := range []string{"orders", "billing", metrics.NoNamespace, metrics.OtherNamespace} {
		if !strings.Contains(text, `mutexd_locks_held{lock_namespace="`+ns+`"} 0`) {
			t.Errorf("allowed namespace %s not exported after an idle hour", ns)
		}
	}
	for _, ns := range []string{"junk", "user"} {
		if strings.Contains(text, `lock_namespace="`+ns+`"`) {
			t.Errorf("namespace %s outside the allow-list is exported", ns)
		}
	}
}

// TestNamespaceCountsUnderConcurrentSweeps drives arrivals and departures
// on many namespaces (more than the slots) from several goroutines while
// another sweeps with a clock that runs fast: every gauge must end at 0,
// none may ever be scraped negative, and every lease must be counted in
// the hold histogram exactly once.
func TestNamespaceCountsUnderConcurrentSweeps(t *testing.T) {
	clk := &testClock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	m := metrics.New(metrics.Options{NamespaceSeparator: ":", MaxNamespaces: 4, NamespaceIdle: time.Second, Now: clk.Now, Version: "v-test"})
	const workers, rounds = 4, 3000
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(w), 1))
			for i := range rounds {
				// Each worker owns its keys, as a shard would: a key's
				// events arrive in order.
				key := "ns" + strconv.Itoa(rng.IntN(12)) + ":" + strconv.Itoa(w)
				m.OnEvent(engine.Event{Type: engine.EventGranted, Key: key})
				if i%3 == 0 {
					m.OnEvent(engine.Event{Type: engine.EventQueued, Key: key})
					m.OnEvent(engine.Event{Type: engine.EventEnded, Key: key, Outcome: engine.OutcomeReleased})
					m.OnEvent(engine.Event{Type: engine.EventGranted, Key: key, FromQueue: true})
				}
				m.OnEvent(engine.Event{Type: engine.EventEnded, Key: key, Outcome: engine.OutcomeReleased})
			}
		})
	}
	stop := make(chan struct{})
	var sweeps sync.WaitGroup
	sweeps.Go(func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			clk.Add(time.Second)
			if text := scrape(t, m); strings.Contains(text, "} -") {
				t.Errorf("a gauge went negative:\n%s", grep(text, "} -"))
				return
			}
		}
	})
	wg.Wait()
	close(stop)
	sweeps.Wait()
	var total float64
	for _, l := range strings.Split(gather(t, m), "\n") {
		switch {
		case strings.HasPrefix(l, "mutexd_locks_held{"), strings.HasPrefix(l, "mutexd_queue_depth{"):
			if !strings.HasSuffix(l, " 0") {
				t.Errorf("after every lease ended: %s", l)
			}
		case strings.HasPrefix(l, "mutexd_hold_duration_seconds_count{"):
			v, _ := strconv.ParseFloat(l[strings.LastIndexByte(l, ' ')+1:], 64)
			total += v
		}
	}
	// Sweeps drop the counts of namespaces they give up, so the total is
	// at most the leases ended; without sweeps it is exact.
	if want := float64(workers * (rounds + (rounds+2)/3)); total > want {
		t.Errorf("hold count total = %v, want at most %v", total, want)
	}
}
