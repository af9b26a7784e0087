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

	"github.com/google/go-containerregistry/pkg/v1/remote/transport"

	"github.com/relaydev/relay/internal/backoff"
	"github.com/relaydev/relay/internal/httpx"
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
	return &retrier{next: next, o: o, spent: map[string]time.Duration{}, hung: map[string]error{}}
}

type retrier struct {
	next  http.RoundTripper
	o     RetryOptions
	mu    sync.Mutex // guards rand, spent and hung
	spent map[string]time.Duration
	hung  map[string]error // hosts whose timeouts used up the budget, with the last one
}

// RetryBudgetError says a host used up its retry budget.
type RetryBudgetError struct {
	Host   string
	Budget time.Duration
	Last   string
	Err    error // the last failure, when it was an error (a timeout, a reset)
}

func (e *RetryBudgetError) Error() string {
	return fmt.Sprintf("registry %s: retry budget of %s used up (last: %s); the registry is failing, try again later or raise the budget", e.Host, e.Budget, e.Last)
}

func (e *RetryBudgetError) Unwrap() error { return e.Err }

// RetriedError is a failure that Retry already retried as often as its policy allows.
type RetriedError struct {
	Attempts int
	Err      error
}

func (e *RetriedError) Error() string {
	return fmt.Sprintf("%v (after %d attempts)", e.Err, e.Attempts)
}

func (e *RetriedError) Unwrap() error { return e.Err }

// ggcrRetry is go-containerregistry's retry predicate under relay's Retry, so one layer
// retries each request: what Retry could replay it retried already (within the host's
// budget, and logged), so it is not retried again underneath (with relay at 2 attempts a
// failing registry saw 6 manifest PUTs); only a streamed upload, which Retry cannot replay
// and go-containerregistry re-opens from the layer, is left to it.
func ggcrRetry(err error) bool {
	var te *transport.Error
	if errors.As(err, &te) && te.Request != nil && (te.Request.Body == nil || te.Request.Body == http.NoBody || te.Request.GetBody != nil) {
		return false
	}
	var re *RetriedError
	var be *RetryBudgetError
	if errors.As(err, &re) || errors.As(err, &be) {
		return false
	}
	// go-containerregistry's own predicate, for what Retry left alone.
	var tmp interface{ Temporary() bool }
	return errors.As(err, &tmp) && tmp.Temporary() || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) ||
		errors.Is(err, syscall.EPIPE) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, net.ErrClosed)
}

func (r *retrier) budget(host string) time.Duration {
	if b, ok := r.o.Budgets[host]; ok && b > 0 {
		return b
	}
	return r.o.Policy.Budget
}

// chargeTimeout counts the time a request to host waited in vain against the host's
// budget: retries of a hung host would otherwise cost attempts × timeout per request, with
// no bound but the job's. Once the budget is spent, every request to the host fails at once.
func (r *retrier) chargeTimeout(host string, err error) {
	var te *httpx.TimeoutError
	if !errors.As(err, &te) {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.spent[host] += te.After
	if r.spent[host] > r.budget(host) {
		r.hung[host] = err
	}
}

func (r *retrier) RoundTrip(req *http.Request) (*http.Response, error) {
	host := req.URL.Host
	r.mu.Lock()
	last := r.hung[host]
	r.mu.Unlock()
	if last != nil {
		return nil, &RetryBudgetError{Host: host, Budget: r.budget(host), Last: last.Error(), Err: last}
	}
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
		r.chargeTimeout(host, err)
		if err == nil {
			resp.Body = &chargedBody{ReadCloser: resp.Body, r: r, host: host}
		}
		reason, retry := retryable(resp, err)
		if retry && replayable && attempt >= r.o.Policy.MaxAttempts && err != nil {
			return nil, &RetriedError{Attempts: attempt, Err: err}
		}
		if !retry || !replayable || attempt >= r.o.Policy.MaxAttempts {
			return resp, err
		}
		wait := r.backoff(attempt, resp)
		budget := r.budget(host)
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
			return nil, &RetryBudgetError{Host: host, Budget: budget, Last: reason, Err: err}
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

// chargedBody charges a body that stopped moving to its host's budget.
type chargedBody struct {
	io.ReadCloser
	r    *retrier
	host string
}

func (b *chargedBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if err != nil && err != io.EOF {
		b.r.chargeTimeout(b.host, err)
	}
	return n, err
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
