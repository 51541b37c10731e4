package client_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"os"
	"time"

	"github.com/mutexd/mutexd/client"
)

// Do runs a function while holding a lock: the lease is renewed in the
// background, the function's context is cancelled if the lease is lost,
// and the lease is released with outcome ok, or failed if the function
// returns an error or panics.
func ExampleClient_Do() {
	c, err := client.New(os.Getenv("MUTEXD_ADDR")) // such as http://127.0.0.1:7070
	if err != nil {
		log.Fatal(err)
	}
	ctx := context.Background()
	err = c.Do(ctx, "invoice:42", func(ctx context.Context, l *client.Lease) error {
		// Only one process at a time gets here for invoice:42. Pass the
		// fence to the store, so that it can refuse a stale holder.
		fmt.Println("charging invoice 42, fence > 0:", l.Fence > 0)
		return nil
	}, client.TTL(10*time.Second), client.Wait(30*time.Second))
	if errors.Is(err, client.ErrTimeout) {
		fmt.Println("someone else held invoice:42 for 30s")
	} else if err != nil {
		log.Fatal(err)
	}
	// Output: charging invoice 42, fence > 0: true
}

// Acquire, KeepAlive and Release are the steps of Do, for programs that
// need them apart.
func ExampleClient_Acquire() {
	c, err := client.New(os.Getenv("MUTEXD_ADDR"), client.WithOwner("report-builder"))
	if err != nil {
		log.Fatal(err)
	}
	ctx := context.Background()

	lease, err := c.Acquire(ctx, "reports:daily", client.TTL(5*time.Second), client.Wait(0))
	if errors.Is(err, client.ErrTimeout) {
		fmt.Println("another builder is running; skipping")
		return
	} else if err != nil {
		log.Fatal(err)
	}
	lease.KeepAlive(ctx) // renews every TTL/3 until Release

	work := time.After(100 * time.Millisecond) // the real work goes here
	select {
	case <-work:
		fmt.Println("report built by", lease.Owner)
	case <-lease.Lost():
		log.Fatal("lease lost, stopping: ", lease.Err())
	}
	if err := lease.Release(ctx); err != nil {
		log.Fatal(err)
	}
	// Output: report built by report-builder
}
