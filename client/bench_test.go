package client_test

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/mutexd/mutexd/client"
	"github.com/mutexd/mutexd/internal/servertest"
)

// BenchmarkAcquireRelease measures an uncontended acquire+release cycle
// through the client; BenchmarkAcquireReleaseRawHTTP the same two calls
// hand-written with net/http, so the client's own cost is the difference
// between the two in one run.
func BenchmarkAcquireRelease(b *testing.B) {
	s := servertest.Start(b)
	c, err := client.New(s.URL)
	if err != nil {
		b.Fatal(err)
	}
	ctx := b.Context()
	for b.Loop() {
		l, err := c.Acquire(ctx, "bench")
		if err != nil {
			b.Fatal(err)
		}
		if err := l.Release(ctx); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkAcquireReleaseRawHTTP(b *testing.B) {
	s := servertest.Start(b)
	hc := &http.Client{}
	post := func(url, body string) []byte {
		resp, err := hc.Post(url, "application/json", strings.NewReader(body))
		if err != nil {
			b.Fatal(err)
		}
		defer resp.Body.Close()
		out, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK {
			b.Fatalf("%s: %s", resp.Status, out)
		}
		return out
	}
	for b.Loop() {
		var g struct {
			Token string `json:"token"`
		}
		if err := json.Unmarshal(post(s.URL+"/v1/locks/bench/acquire", `{}`), &g); err != nil {
			b.Fatal(err)
		}
		post(s.URL+"/v1/locks/bench/release", `{"token":"`+g.Token+`"}`)
	}
}
