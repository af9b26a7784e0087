package oci

import (
	"context"
	"errors"
	"math/rand"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/relaydev/relay/internal/httpx"
	"github.com/relaydev/relay/internal/testutil"
)

// TestHungRegistryFailsWithinTimeout: a registry that accepts connections and never
// answers, and one whose blob bodies stall half-way, fail the operation after the retries
// with an error naming the host and the timeout, instead of hanging the job.
func TestHungRegistryFailsWithinTimeout(t *testing.T) {
	ctx := context.Background()
	const timeout = 200 * time.Millisecond
	const budget = 2 * time.Second
	client := func(t *testing.T, clock *instant) *Client {
		policy := DefaultRetryPolicy
		policy.Budget = budget
		rt := Retry(httpx.IdleTimeout(NewTransport(), func(string) time.Duration { return timeout }),
			RetryOptions{Policy: policy, Rand: rand.New(rand.NewSource(1)), Sleep: clock.sleep})
		c, err := New(WithTransport(rt), WithJobs(1))
		if err != nil {
			t.Fatal(err)
		}
		c.sleep = clock.sleep // the uploader's resume waits
		return c
	}

	t.Run("never answers", func(t *testing.T) {
		host := testutil.HungServer(t)
		clock := &instant{}
		_, err := client(t, clock).Resolve(ctx, mustRepo(t, host+"/acme/app").Tag("v1"))
		var te *httpx.TimeoutError
		if !errors.As(err, &te) || te.Host != host || !strings.Contains(err.Error(), "no progress for 200ms") {
			t.Fatalf("hung registry: %v", err)
		}
		// Time lost to timeouts counts against the host's budget: the whole operation gives
		// up after about budget/timeout timed-out attempts, not attempts × requests of them.
		if n := len(clock.waits); n == 0 || n > int(budget/timeout) {
			t.Fatalf("%d retries of timed-out requests with a %s budget and a %s timeout", n, budget, timeout)
		}
		var be *RetryBudgetError
		if !errors.As(err, &be) || be.Host != host {
			t.Fatalf("the budget did not end it: %v", err)
		}
	})

	t.Run("blob body stalls", func(t *testing.T) {
		release := make(chan struct{})
		stall := func(next http.Handler) http.Handler {
			return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.Method == http.MethodGet && strings.Contains(r.URL.Path, "/blobs/sha256:") {
					w.Header().Set("Content-Length", "1000000")
					w.WriteHeader(http.StatusOK)
					w.Write(make([]byte, 1000))
					w.(http.Flusher).Flush()
					select {
					case <-release:
					case <-r.Context().Done():
					}
					return
				}
				next.ServeHTTP(w, r)
			})
		}
		src := testutil.Registry(t, true, stall)
		defer close(release)
		dst := testutil.Registry(t, true)
		clean := newClient(t)
		d, err := clean.Write(ctx, mustRepo(t, src+"/build/app"), bigIndex(t))
		if err != nil {
			t.Fatal(err)
		}
		clock := &instant{}
		_, err = client(t, clock).Copy(ctx, d, mustRepo(t, dst+"/acme/app"))
		var te *httpx.TimeoutError
		// The source stalled: the error names it, not the destination that waited on it.
		if !errors.As(err, &te) || te.Host != src || te.Phase != "reading the response body" || !strings.Contains(err.Error(), "no progress for 200ms") {
			t.Fatalf("stalled source: %v", err)
		}
		if len(clock.waits) == 0 {
			t.Fatal("the stalled read was not retried: the test proves nothing about retries")
		}
		// Once the source's budget is spent the upload stops resuming: each resume waits.
		var be *RetryBudgetError
		if errors.As(err, &be) && len(clock.waits) > maxResumes+int(budget/timeout)+DefaultRetryPolicy.MaxAttempts {
			t.Fatalf("%d waits after the budget was spent", len(clock.waits))
		}
	})
}
