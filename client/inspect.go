package client

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"time"
)

// KeyStatus is what the server tells about one key. Tokens are never
// shown.
type KeyStatus struct {
	Key  string `json:"key"`
	Held bool   `json:"held"`
	// Holder is nil when the key is free; with several holders (Limit >
	// 1) it is the oldest.
	Holder *Holder `json:"holder"`
	// Limit is the key's number of slots (1 for a mutex; 0 from a server
	// that does not say).
	Limit int `json:"limit"`
	// Holders lists every live lease, oldest first.
	Holders []Holder `json:"holders"`
	// Waiters is the queue's length; Queue lists at most its first 100.
	Waiters int      `json:"waiters"`
	Queue   []Waiter `json:"queue"`
	// Paused: an operator paused the key (see Pause): nothing is granted
	// until it is resumed.
	Paused bool `json:"paused"`
	// DelayUntil is when a lock-delay ends (see LockDelay); nil when none.
	DelayUntil *time.Time `json:"delay_until"`
	// Last is how the key's most recent lease ended, while the server
	// remembers it; nil otherwise.
	Last *Previous `json:"last"`
	// Raw is the server's answer as it was sent, for a caller that passes
	// it on (mutexd status -o json) with every field and the API's time
	// format intact.
	Raw json.RawMessage `json:"-"`
}

// Holder is a key's current lease.
type Holder struct {
	Owner      string    `json:"owner"`
	Fence      uint64    `json:"fence"`
	AcquiredAt time.Time `json:"acquired_at"`
	ExpiresAt  time.Time `json:"expires_at"`
	// OnError is "continue" or "stop".
	OnError string `json:"on_error"`
	// MaxHoldUntil is when the lease's MaxHold ends it; nil without one.
	MaxHoldUntil *time.Time `json:"max_hold_until,omitempty"`
}

// Waiter is one queued acquire, in arrival order.
type Waiter struct {
	Owner        string    `json:"owner"`
	WaitingSince time.Time `json:"waiting_since"`
}

// Inspect returns who holds key and who waits for it. A key nobody holds
// or waits for is Held false with no waiters.
func (c *Client) Inspect(ctx context.Context, key string) (*KeyStatus, error) {
	path, err := keyPath(key, "")
	if err != nil {
		return nil, fmt.Errorf("inspect: %w", err)
	}
	resp, err := c.do(ctx, request{method: http.MethodGet, path: path})
	if err != nil {
		return nil, fmt.Errorf("inspect %s: %w", key, err)
	}
	var s KeyStatus
	if err := decode(resp, &s); err != nil {
		return nil, fmt.Errorf("inspect %s: %w", key, err)
	}
	s.Raw = resp.body
	return &s, nil
}

// KeySummary is one row of a listing.
type KeySummary struct {
	Key  string `json:"key"`
	Held bool   `json:"held"`
	// Owner is the oldest holder's.
	Owner   string `json:"owner"`
	Waiters int    `json:"waiters"`
	// Holders is the number of live leases; Limit the key's slots.
	Holders int  `json:"holders"`
	Limit   int  `json:"limit"`
	Paused  bool `json:"paused"`
}

// ListOptions select a page of active keys.
type ListOptions struct {
	// Prefix keeps only keys that start with it.
	Prefix string
	// After is the Next of the previous page; empty for the first.
	After string
	// Limit is the page size (server default 100, at most 1000); 0 leaves
	// it to the server.
	Limit int
}

// ListPage is one page of active keys, sorted by key.
type ListPage struct {
	Locks []KeySummary `json:"locks"`
	// Next is the cursor of the following page; empty on the last.
	Next string `json:"next"`
}

// List returns one page of the keys that have a holder or waiters.
func (c *Client) List(ctx context.Context, o ListOptions) (ListPage, error) {
	q := url.Values{}
	if o.Prefix != "" {
		q.Set("prefix", o.Prefix)
	}
	if o.After != "" {
		q.Set("after", o.After)
	}
	if o.Limit != 0 {
		q.Set("limit", strconv.Itoa(o.Limit))
	}
	resp, err := c.do(ctx, request{method: http.MethodGet, path: "/v1/locks", query: q})
	if err != nil {
		return ListPage{}, fmt.Errorf("list: %w", err)
	}
	var p ListPage
	if err := decode(resp, &p); err != nil {
		return ListPage{}, fmt.Errorf("list: %w", err)
	}
	return p, nil
}
