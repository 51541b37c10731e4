package api_test

import (
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/mutexd/mutexd/internal/api"
	"github.com/mutexd/mutexd/internal/engine"
)

// TestStreamingAcquirePanicIsAnswered: the streaming acquire calls the
// engine from a goroutine of its own, outside the handler's recover; a
// panic there must end the stream with an "internal" event and a log line
// carrying the request id, not take the daemon down.
func TestStreamingAcquirePanicIsAnswered(t *testing.T) {
	eng := engine.New(engine.SystemClock{}, nil, engine.Limits{})
	logs := &lockedBuffer{}
	s := api.New(api.Options{
		Locker:   &panicky{Engine: eng, when: "before"},
		Bounds:   api.Bounds{DefaultTTL: time.Minute, MinTTL: time.Second, MaxTTL: time.Hour, MaxWait: time.Minute},
		Logger:   slog.New(slog.NewJSONHandler(logs, nil)),
		Observer: checkCodes(t),
	})
	s.SetReady(true)
	hs := httptest.NewServer(s)
	defer hs.Close()

	req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, hs.URL+"/v1/locks/k/acquire", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Accept", "text/event-stream")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(raw), "event: internal\ndata: {\"error\":\"internal\"") {
		t.Fatalf("stream = %q, want a final internal event", raw)
	}
	id := resp.Header.Get("X-Request-Id")
	if !strings.Contains(logs.String(), "injected before acquire") || !strings.Contains(logs.String(), `"request_id":"`+id+`"`) {
		t.Fatalf("the panic is not logged with request id %q:\n%s", id, logs)
	}
	if err := eng.Check(); err != nil {
		t.Fatal(err)
	}
}

// TestPanicAfterCommitIsLogged: a handler that panics after its response
// has started (a stream, a file) cannot be answered 500 any more, but the
// panic must still be logged with the request id.
func TestPanicAfterCommitIsLogged(t *testing.T) {
	logs := &lockedBuffer{}
	s := api.New(api.Options{
		Locker: engine.New(engine.SystemClock{}, nil, engine.Limits{}),
		Bounds: api.Bounds{DefaultTTL: time.Minute, MinTTL: time.Second, MaxTTL: time.Hour, MaxWait: time.Minute},
		UI: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			w.WriteHeader(http.StatusOK)
			panic("injected after commit")
		}),
		Logger:   slog.New(slog.NewJSONHandler(logs, nil)),
		Observer: checkCodes(t),
	})
	hs := httptest.NewServer(s)
	defer hs.Close()
	resp, err := http.Get(hs.URL + "/ui/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	id := resp.Header.Get("X-Request-Id")
	if !strings.Contains(logs.String(), "injected after commit") || !strings.Contains(logs.String(), `"request_id":"`+id+`"`) {
		t.Fatalf("the panic after commit is not logged with request id %q:\n%s", id, logs)
	}
}
