package oci

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand"
	"net"
	"net/http"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/relaydev/relay/internal/backoff"
)

// RetryPolicy bounds the retries of one registry host.
type RetryPolicy struct {
	MaxAttempts int           // per request, the first one included
	Initial     time.Duration // first backoff
	Max         time.Duration // cap of one backoff (and of an honoured Retry-After)
	Budget      time.Duration // total time all retries to the host may spend waiting
}

// DefaultRetryPolicy is what relay uses unless the config says otherwise.
var DefaultRetryPolicy = RetryPolicy{MaxAttempts: 6, Initial: 200 * time.Millisecond, Max: 30 * time.Second, Budget: 5 * time.Minute}

// RetryOptions configure Retry; Rand and Sleep are the seams tests use for determinism.
type RetryOptions struct {
	Policy RetryPolicy
	// Budgets overrides Policy.Budget for some hosts (relay.yaml registries[].retry_budget).
	Budgets map[string]time.Duration
	Logger  *slog.Logger
	Rand    *rand.Rand                                       // jitter; seeded in tests
	Sleep   func(ctx context.Context, d time.Duration) error // waits; instant in tests
}

// Retry retries requests that failed with 429, 5xx, a reset connection or a timeout, with
// exponential backoff and full jitter, honouring Retry-After. Only requests whose body can
// be replayed are retried; go-containerregistry retries streamed blob uploads itself.
// Each host has its own budget, so one slow registry cannot stall the others.
func Retry(next http.RoundTripper, o RetryOptions) http.RoundTripper {
	if o.Policy.MaxAttempts < 1 {
		o.Policy = DefaultRetryPolicy
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Rand == nil {
		o.Rand = rand.New(rand.NewSource(time.Now().UnixNano()))
	}
	if o.Sleep == nil {
		o.Sleep = backoff.Sleep
	}
	return &retrier{next: next, o: o, spent: map[string]time.Duration{}}
}

type retrier struct {
	next  http.RoundTripper
	o     RetryOptions
	mu    sync.Mutex // guards rand and spent
	spent map[string]time.Duration
}

// RetryBudgetError says a host used up its retry budget.
type RetryBudgetError struct {
	Host   string
	Budget time.Duration
	Last   string
}

func (e *RetryBudgetError) Error() string {
	return fmt.Sprintf("registry %s: retry budget of %s used up (last: %s); the registry is failing, try again later or raise the budget", e.Host, e.Budget, e.Last)
}

func (r *retrier) RoundTrip(req *http.Request) (*http.Response, error) {
	replayable := req.Body == nil || req.Body == http.NoBody || req.GetBody != nil
	for attempt := 1; ; attempt++ {
		if attempt > 1 && req.GetBody != nil {
			body, err := req.GetBody()
			if err != nil {
				return nil, err
			}
			req = req.Clone(req.Context())
			req.Body = body
		}
		resp, err := r.next.RoundTrip(req)
		reason, retry := retryable(resp, err)
		if !retry || !replayable || attempt >= r.o.Policy.MaxAttempts {
			return resp, err
		}
		wait := r.backoff(attempt, resp)
		host := req.URL.Host
		budget := r.o.Policy.Budget
		if b, ok := r.o.Budgets[host]; ok && b > 0 {
			budget = b
		}
		r.mu.Lock()
		over := r.spent[host]+wait > budget
		if !over {
			r.spent[host] += wait
		}
		r.mu.Unlock()
		if over {
			if resp != nil {
				resp.Body.Close()
			}
			return nil, &RetryBudgetError{Host: host, Budget: budget, Last: reason}
		}
		if resp != nil {
			// Drain a little so the connection can be reused, then let it go.
			io.CopyN(io.Discard, resp.Body, 4<<10)
			resp.Body.Close()
		}
		r.o.Logger.Warn("registry request failed, retrying", "host", host, "method", req.Method,
			"attempt", attempt, "max_attempts", r.o.Policy.MaxAttempts, "reason", reason, "wait_ms", wait.Milliseconds())
		if err := r.o.Sleep(req.Context(), wait); err != nil {
			return nil, err
		}
	}
}

func (r *retrier) backoff(attempt int, resp *http.Response) time.Duration {
	if resp != nil {
		if d, ok := retryAfter(resp.Header.Get("Retry-After"), time.Now()); ok {
			return min(d, r.o.Policy.Max)
		}
	}
	ceil := r.o.Policy.Initial << (attempt - 1)
	if ceil <= 0 || ceil > r.o.Policy.Max {
		ceil = r.o.Policy.Max
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	// Full jitter: clients retrying together spread out instead of stampeding.
	return time.Duration(r.o.Rand.Int63n(int64(ceil)) + 1)
}

func retryable(resp *http.Response, err error) (string, bool) {
	if err != nil {
		if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
			return "", false
		}
		var ne net.Error
		switch {
		case errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.ECONNREFUSED), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, io.EOF):
			return err.Error(), true
		case errors.As(err, &ne) && ne.Timeout():
			return "timeout: " + err.Error(), true
		}
		return "", false
	}
	switch resp.StatusCode {
	case http.StatusTooManyRequests, http.StatusInternalServerError, http.StatusBadGateway,
		http.StatusServiceUnavailable, http.StatusGatewayTimeout, http.StatusRequestTimeout:
		return resp.Status, true
	}
	return "", false
}

// retryAfter parses Retry-After as seconds or an HTTP date.
func retryAfter(v string, now time.Time) (time.Duration, bool) {
	if v == "" {
		return 0, false
	}
	if s, err := strconv.Atoi(v); err == nil && s >= 0 {
		return time.Duration(s) * time.Second, true
	}
	if t, err := http.ParseTime(v); err == nil {
		if d := t.Sub(now); d > 0 {
			return d, true
		}
		return 0, true
	}
	return 0, false
}
