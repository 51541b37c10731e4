package api

import (
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/mutexd/mutexd/internal/engine"
	"github.com/mutexd/mutexd/internal/events"
)

// EventSource is the event hub as the API needs it.
type EventSource interface {
	// Subscribe may not take the places kept for admin tokens.
	Subscribe(f events.Filter) (*events.Subscription, error)
	// SubscribeReserved may.
	SubscribeReserved(f events.Filter) (*events.Subscription, error)
	// Stats counts the events seen, for GET /v1/stats.
	Stats(now time.Time) events.Stats
}

var _ EventSource = (*events.Hub)(nil)

// DefaultHeartbeat is how often an idle event stream sends a comment, so
// proxies and load balancers keep it open.
const DefaultHeartbeat = 15 * time.Second

// eventStreamType is the Server-Sent Events media type.
const eventStreamType = "text/event-stream"

// wantsStream reports whether the client asked for Server-Sent Events.
func wantsStream(r *http.Request) bool {
	return strings.Contains(r.Header.Get(echo.HeaderAccept), eventStreamType)
}

// sseWriter writes Server-Sent Events to a committed 200 response.
type sseWriter struct {
	res *echo.Response
	buf []byte
}

// startStream commits the response as an event stream.
func startStream(c echo.Context) *sseWriter {
	res := c.Response()
	h := res.Header()
	h.Set(echo.HeaderContentType, eventStreamType)
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no") // nginx: do not buffer the stream
	res.WriteHeader(http.StatusOK)
	w := &sseWriter{res: res}
	w.flush([]byte("retry: 2000\n\n"))
	return w
}

func (w *sseWriter) flush(b []byte) {
	_, _ = w.res.Write(b) // a failed write means the client left; its context ends the stream
	w.res.Flush()
}

// event writes one event named name whose data is the JSON document data
// (which ends with a newline or not).
func (w *sseWriter) event(name string, id uint64, data []byte) {
	b := w.buf[:0]
	if id > 0 {
		b = append(b, "id: "...)
		b = strconv.AppendUint(b, id, 10)
		b = append(b, '\n')
	}
	b = append(b, "event: "...)
	b = append(b, name...)
	b = append(b, "\ndata: "...)
	b = append(b, strings.TrimSuffix(string(data), "\n")...)
	b = append(b, "\n\n"...)
	w.buf = b
	w.flush(b)
}

func (w *sseWriter) heartbeat() { w.flush([]byte(": heartbeat\n\n")) }

// eventName is an engine event's name on the stream.
func eventName(ev *engine.Event) string {
	if ev.Type != engine.EventEnded {
		return ev.Type.String()
	}
	switch ev.Outcome {
	case engine.OutcomeExpired:
		return "expired"
	case engine.OutcomeForced:
		return "forced"
	}
	return "released"
}

// appendEvent encodes an event's data: {"id","type","time","key","owner",...}
// with the fields of its type. It never carries a token.
func appendEvent(b []byte, id uint64, ev *engine.Event) []byte {
	b = append(b, `{"id":`...)
	b = strconv.AppendUint(b, id, 10)
	b = append(b, `,"type":"`...)
	b = append(b, eventName(ev)...)
	b = append(b, `","time":`...)
	b = appendTime(b, ev.Time)
	b = append(b, `,"key":`...)
	b = appendString(b, ev.Key)
	b = append(b, `,"owner":`...)
	b = appendString(b, ev.Owner)
	switch ev.Type {
	case engine.EventQueued:
		b = append(b, `,"position":`...)
		b = strconv.AppendInt(b, int64(ev.Position), 10)
	case engine.EventGranted:
		b = appendFence(b, ev.Fence)
		b = append(b, `,"expires_at":`...)
		b = appendTime(b, ev.ExpiresAt)
		b = appendWaited(b, ev)
		b = append(b, `,"from_queue":`...)
		b = strconv.AppendBool(b, ev.FromQueue)
		b = append(b, `,"on_error":"`...)
		b = append(b, ev.OnError.String()...)
		b = append(b, `","previous":`...)
		b = appendPrevious(b, ev.Previous)
	case engine.EventEnded:
		b = appendFence(b, ev.Fence)
		b = append(b, `,"outcome":"`...)
		b = append(b, ev.Outcome.String()...)
		b = append(b, `","held_ms":`...)
		b = appendMillis(b, ev.Held)
	case engine.EventRenewed:
		b = appendFence(b, ev.Fence)
		b = append(b, `,"expires_at":`...)
		b = appendTime(b, ev.ExpiresAt)
	case engine.EventTimeout, engine.EventAborted, engine.EventCancelled:
		b = appendWaited(b, ev)
	case engine.EventSuperseded:
		// The place taken over; the queue's length is unchanged.
		b = appendWaited(b, ev)
		b = append(b, `,"position":`...)
		b = strconv.AppendInt(b, int64(ev.Position), 10)
	case engine.EventDrained:
		b = appendWaited(b, ev)
		b = append(b, `,"reason":`...)
		b = appendString(b, ev.Reason)
	case engine.EventDelayed:
		b = append(b, `,"until":`...)
		b = appendTime(b, ev.ExpiresAt)
	}
	return append(b, '}')
}

func appendFence(b []byte, fence uint64) []byte {
	b = append(b, `,"fence":`...)
	return strconv.AppendUint(b, fence, 10)
}

// appendWaited adds waited_ms and waiting_since, which (with owner) names
// the waiter the way GET /v1/locks/{key} lists it.
func appendWaited(b []byte, ev *engine.Event) []byte {
	b = append(b, `,"waited_ms":`...)
	b = appendMillis(b, ev.Waited)
	b = append(b, `,"waiting_since":`...)
	return appendTime(b, ev.Time.Add(-ev.Waited))
}

// appendReplayed encodes a replayed event: appendEvent's object with
// "replay":true, so that a client tells history from what happens now.
func appendReplayed(b []byte, id uint64, ev *engine.Event) []byte {
	b = appendEvent(b, id, ev)
	return append(b[:len(b)-1], `,"replay":true}`...)
}

// replayFrom is the event id after which a stream replays history: the
// Last-Event-ID header (an EventSource reconnecting), else the since
// parameter; ok is false when neither asks for history.
func replayFrom(r *http.Request, p params) (after uint64, ok bool, err error) {
	v, ok := p.get(pSince)
	if h := r.Header.Get("Last-Event-ID"); h != "" {
		v, ok = h, true
	}
	if !ok {
		return 0, false, nil
	}
	after, err = strconv.ParseUint(v, 10, 64)
	if err != nil {
		return 0, false, badRequest("invalid_since", "since (or Last-Event-ID) must be an event id: a whole number, 0 for all the history kept; got %q.", v)
	}
	return after, true, nil
}

// events serves GET /v1/events: every engine transition (optionally only
// of one key or of keys with a prefix) as Server-Sent Events, a heartbeat
// comment when idle, and a final "overflow" event before the stream is cut
// off if this client reads too slowly. Asked with since (or Last-Event-ID),
// it first replays the history the hub kept after that id (see
// events.Subscription.Replay), each event marked "replay":true, then a
// "replayed" event, then goes on live without a gap or a repeat.
func (s *Server) events(c echo.Context) error {
	p, err := parseParams(c, s.bodyTimeout, pKey, pPrefix, pSince)
	if err != nil {
		return err
	}
	after, replay, err := replayFrom(c.Request(), p)
	if err != nil {
		return err
	}
	var f events.Filter
	if k, ok := p.get(pKey); ok {
		if err := validKey(k); err != nil {
			return err
		}
		f.Key = k
	}
	f.Prefix, _ = p.get(pPrefix)
	if len(f.Prefix) > MaxKeyBytes || !printable(f.Prefix) {
		return badRequest("invalid_prefix", "prefix is at most %d bytes of UTF-8 without control characters.", MaxKeyBytes)
	}
	sub, err := s.subscribe(c.Request(), f)
	if err != nil {
		return err
	}
	defer sub.Close()

	ctx, rc := s.revocable(c)
	defer rc.release()
	w := startStream(c)
	tick := time.NewTicker(s.heartbeat)
	defer tick.Stop()
	done := ctx.Done()
	var data []byte
	if replay {
		if after > sub.Start() {
			// An id this daemon has not issued yet: the client saw an
			// earlier run (ids start again at 1), so all of this run's
			// history is news to it.
			after = 0
		}
		items := sub.Replay(after)
		for i := range items {
			data = appendReplayed(data[:0], items[i].ID, &items[i].Event)
			w.event(eventName(&items[i].Event), items[i].ID, data)
		}
		data = append(data[:0], `{"type":"replayed","events":`...)
		data = strconv.AppendInt(data, int64(len(items)), 10)
		data = append(data, `,"last_id":`...)
		data = strconv.AppendUint(data, sub.Start(), 10)
		w.event("replayed", 0, append(data, '}'))
	}
	for {
		select {
		case it, ok := <-sub.Events():
			if !ok {
				if sub.Overflowed() {
					w.event("overflow", 0, []byte(`{"type":"overflow","message":"This client read events too slowly and was disconnected; reconnect and reload the state."}`))
				}
				return nil
			}
			data = appendEvent(data[:0], it.ID, &it.Event)
			w.event(eventName(&it.Event), it.ID, data)
		case <-tick.C:
			w.heartbeat()
		case <-done:
			if err := revoked(ctx); err != nil {
				// The last event, named after the error's code, with its body.
				ae := s.logged(c, err)
				w.event(ae.Code, 0, appendErrorBody(data[:0], ae))
			}
			return nil
		}
	}
}

// subscribe subscribes r's caller to the events f selects, in the places
// kept for admins too when r may use them (see mayUseReserve).
func (s *Server) subscribe(r *http.Request, f events.Filter) (*events.Subscription, error) {
	if !s.auth.Tokens().Enabled() {
		return s.source.SubscribeReserved(f)
	}
	sub, err := s.source.Subscribe(f)
	if errors.Is(err, events.ErrTooManySubscribers) && s.mayUseReserve(r) {
		return s.source.SubscribeReserved(f)
	}
	return sub, err
}

// acquireStream serves an acquire sent with Accept: text/event-stream: a
// "queued" event with the caller's place in line whenever it moves, then
// exactly one final event: "granted" with the 200 body of a plain acquire,
// or the error's code ("timeout", "aborted", "superseded", "drained",
// "unavailable", ...) with its error body. A client that disconnects
// leaves the queue as a long poll's would (one with a request_id keeps its
// place, or its grant, for lock.detach_grace).
func (s *Server) acquireStream(c echo.Context, key string, o engine.AcquireOptions) error {
	// OnPosition runs under the engine's shard lock: it keeps only the
	// latest position and never blocks. Calls for one waiter are serialised
	// by that lock, so after the drain the send always finds room.
	pos := make(chan int, 1)
	o.OnPosition = func(n int) {
		select {
		case pos <- n:
		default:
			select {
			case <-pos:
			default:
			}
			select {
			case pos <- n:
			default:
			}
		}
	}
	type result struct {
		g   engine.Grant
		err error
	}
	done := make(chan result, 1)
	// A token revoked by a reload ends the wait, and the stream with a
	// final "unauthorized" event. Armed now: the stream is long-lived
	// anyway, and armed contexts never return to the pool, which the
	// goroutine below might otherwise outlive (a panic in this handler).
	ctx, rc := s.revocable(c)
	defer rc.release()
	rc.arm()
	go func() { // ends when Acquire does, which the request's context bounds
		defer func() {
			// Outside the handler's own recover: a panic here would end
			// the process. Answer it like a handler's panic instead.
			if r := recover(); r != nil {
				done <- result{err: fmt.Errorf("panic in handler: %v", r)}
			}
		}()
		g, err := s.lock(ctx, c.Request(), key, o)
		done <- result{g, err}
	}()

	w := startStream(c)
	tick := time.NewTicker(s.heartbeat)
	defer tick.Stop()
	var buf []byte
	queued := func(n int) {
		buf = append(buf[:0], `{"key":`...)
		buf = appendString(buf, key)
		buf = append(buf, `,"owner":`...)
		buf = appendString(buf, o.Owner)
		buf = append(buf, `,"position":`...)
		buf = strconv.AppendInt(buf, int64(n), 10)
		buf = append(buf, '}')
		w.event("queued", 0, buf)
	}
	for {
		select {
		case n := <-pos:
			queued(n)
		case <-tick.C:
			w.heartbeat()
		case r := <-done:
			select {
			case n := <-pos: // a move that happened before the outcome
				queued(n)
			default:
			}
			if r.err == nil {
				if r.err = s.dropIfGone(ctx, r.g); r.err == nil {
					w.event("granted", 0, appendGrant(buf[:0], r.g, o.Limit, o.RequestID))
					return nil
				}
			}
			ae := s.logged(c, r.err)
			if ae.Status == statusClientClosed {
				return nil // nobody is listening
			}
			w.event(ae.Code, 0, appendErrorBody(buf[:0], ae))
			return nil
		}
	}
}
