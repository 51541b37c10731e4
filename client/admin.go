package client

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"time"
)

// FenceStatus is a fence the server confirmed live (see CheckFence).
type FenceStatus struct {
	Key   string `json:"key"`
	Fence uint64 `json:"fence"`
	Live  bool   `json:"live"`
	// ExpiresAt is when the lease expires unless renewed (server clock).
	ExpiresAt time.Time `json:"expires_at"`
}

// CheckFence asks whether fence is a live lease of key, for a resource
// that cannot keep the highest fence it has seen itself (a webhook
// receiver, an object store, a script): call it right before acting on a
// request that carries the fence. A stale fence returns an error matching
// ErrStaleFence whose *APIError lists the key's live fences in
// CurrentFences. The answer holds at the moment it is given; the lease
// can still end right after, so the check narrows the window, it does not
// close it.
func (c *Client) CheckFence(ctx context.Context, key string, fence uint64) (FenceStatus, error) {
	if fence == 0 {
		return FenceStatus{}, fmt.Errorf("check fence: %w: a fence is at least 1", ErrInvalid)
	}
	path, err := keyPath(key, "/fences/"+strconv.FormatUint(fence, 10))
	if err != nil {
		return FenceStatus{}, fmt.Errorf("check fence: %w", err)
	}
	resp, err := c.do(ctx, request{method: http.MethodGet, path: path})
	if err != nil {
		return FenceStatus{}, fmt.Errorf("check fence %d of %s: %w", fence, key, err)
	}
	var st FenceStatus
	if err := decode(resp, &st); err != nil {
		return FenceStatus{}, fmt.Errorf("check fence %d of %s: %w", fence, key, err)
	}
	return st, nil
}

// PauseStatus is the answer to Pause or Resume of one key.
type PauseStatus struct {
	Key    string `json:"key"`
	Paused bool   `json:"paused"`
	// Changed is false when the key already was in that state.
	Changed bool `json:"changed"`
}

// Pause stops the server from granting key (an admin call): holders keep
// their leases, waiters their places, and new acquires still queue, until
// Resume. For maintenance on what the key protects.
func (c *Client) Pause(ctx context.Context, key string) (PauseStatus, error) {
	return c.pause(ctx, key, "pause")
}

// Resume lets the server grant key again after Pause (an admin call).
func (c *Client) Resume(ctx context.Context, key string) (PauseStatus, error) {
	return c.pause(ctx, key, "resume")
}

func (c *Client) pause(ctx context.Context, key, verb string) (PauseStatus, error) {
	path, err := keyPath(key, "/"+verb)
	if err != nil {
		return PauseStatus{}, fmt.Errorf("%s: %w", verb, err)
	}
	resp, err := c.do(ctx, request{method: http.MethodPost, path: path})
	if err != nil {
		return PauseStatus{}, fmt.Errorf("%s %s: %w", verb, key, err)
	}
	var st PauseStatus
	if err := decode(resp, &st); err != nil {
		return PauseStatus{}, fmt.Errorf("%s %s: %w", verb, key, err)
	}
	return st, nil
}

// Drain answers every waiter of key with ErrDrained carrying reason ("",
// the server's default reason) and returns how many there were (an admin
// call). Holders are untouched.
func (c *Client) Drain(ctx context.Context, key, reason string) (int, error) {
	path, err := keyPath(key, "/waiters")
	if err != nil {
		return 0, fmt.Errorf("drain: %w", err)
	}
	var out struct {
		Drained int `json:"drained"`
	}
	if err := c.prefixCall(ctx, http.MethodDelete, path, reasonQuery(reason), &out); err != nil {
		return 0, fmt.Errorf("drain %s: %w", key, err)
	}
	return out.Drained, nil
}

// PausePrefix pauses every active key that starts with prefix (non-empty)
// and returns how many it paused (an admin call); see Pause.
func (c *Client) PausePrefix(ctx context.Context, prefix string) (int, error) {
	var out struct {
		N int `json:"paused"`
	}
	err := c.prefixCall(ctx, http.MethodPost, "/v1/locks/pause", prefixQuery(prefix, ""), &out)
	if err != nil {
		return 0, fmt.Errorf("pause prefix %q: %w", prefix, err)
	}
	return out.N, nil
}

// ResumePrefix resumes every paused key that starts with prefix
// (non-empty) and returns how many it resumed (an admin call).
func (c *Client) ResumePrefix(ctx context.Context, prefix string) (int, error) {
	var out struct {
		N int `json:"resumed"`
	}
	err := c.prefixCall(ctx, http.MethodPost, "/v1/locks/resume", prefixQuery(prefix, ""), &out)
	if err != nil {
		return 0, fmt.Errorf("resume prefix %q: %w", prefix, err)
	}
	return out.N, nil
}

// DrainPrefix drains (see Drain) every key that starts with prefix
// (non-empty) and returns how many waiters it answered (an admin call).
func (c *Client) DrainPrefix(ctx context.Context, prefix, reason string) (int, error) {
	var out struct {
		N int `json:"drained"`
	}
	err := c.prefixCall(ctx, http.MethodDelete, "/v1/locks/waiters", prefixQuery(prefix, reason), &out)
	if err != nil {
		return 0, fmt.Errorf("drain prefix %q: %w", prefix, err)
	}
	return out.N, nil
}

// prefixCall sends an admin call with query parameters and decodes its
// answer into out. An empty prefix is refused here: the server would
// refuse it too, and an operator never means every key.
func (c *Client) prefixCall(ctx context.Context, method, path string, q url.Values, out any) error {
	if q.Has("prefix") && q.Get("prefix") == "" {
		return fmt.Errorf("%w: the prefix is empty", ErrInvalid)
	}
	resp, err := c.do(ctx, request{method: method, path: path, query: q})
	if err != nil {
		return err
	}
	return decode(resp, out)
}

func prefixQuery(prefix, reason string) url.Values {
	q := reasonQuery(reason)
	q.Set("prefix", prefix)
	return q
}

func reasonQuery(reason string) url.Values {
	q := url.Values{}
	if reason != "" {
		q.Set("reason", reason)
	}
	return q
}
