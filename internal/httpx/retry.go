package httpx

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

// RetryPolicy bounds the retries of one host.
type RetryPolicy struct {
	MaxAttempts int           // per request, the first one included
	Initial     time.Duration // first backoff
	Max         time.Duration // cap of one backoff (and of an honoured Retry-After)
	Budget      time.Duration // total time all retries to the host may spend waiting
}

// DefaultRetryPolicy is what relay uses unless the config says otherwise.
var DefaultRetryPolicy = RetryPolicy{MaxAttempts: 6, Initial: 200 * time.Millisecond, Max: 30 * time.Second, Budget: 5 * time.Minute}

// RetryOptions configure a Retrier; Rand, Sleep and Now are the seams tests use for determinism.
type RetryOptions struct {
	Policy RetryPolicy
	// Budgets overrides Policy.Budget for some hosts (relay.yaml registries[].retry_budget,
	// signing.retry_budget for the Sigstore services).
	Budgets map[string]time.Duration
	Logger  *slog.Logger
	Rand    *rand.Rand                                       // jitter; seeded in tests
	Sleep   func(ctx context.Context, d time.Duration) error // waits; instant in tests
	Now     func() time.Time                                 // reads Retry-After dates and rate-limit resets
	// Service names the hosts no client named (Name) in the logs: "registry", ...
	Service string
}

// Retrier is relay's one retry layer: every outbound request passes it (RoundTripper), and
// the few operations that must be redone whole rather than replayed (an upload whose body
// cannot be read twice) ask it for their wait (Wait), so each host has one budget.
type Retrier struct {
	o     RetryOptions
	mu    sync.Mutex // guards rand, spent and hung
	spent map[string]time.Duration
	hung  map[string]error // hosts whose timeouts used up the budget, with the last one
	names map[string]string
	// policies are hosts' own policies (SetPolicy).
	policies map[string]RetryPolicy
}

// NewRetrier fills in the defaults.
func NewRetrier(o RetryOptions) *Retrier {
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
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Service == "" {
		o.Service = "HTTP"
	}
	return &Retrier{o: o, spent: map[string]time.Duration{}, hung: map[string]error{}, names: map[string]string{}}
}

// Name says which service hosts are, for the logs ("GitHub request failed, retrying").
func (r *Retrier) Name(service string, hosts ...string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, h := range hosts {
		r.names[h] = service
	}
}

// SetPolicy gives host a policy of its own: the Sigstore services retry for as long as
// signing.retry_budget allows, with no cap on attempts, since a log's outage of a few
// minutes should not fail a release that took an hour to build.
func (r *Retrier) SetPolicy(host string, p RetryPolicy) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.policies == nil {
		r.policies = map[string]RetryPolicy{}
	}
	r.policies[host] = p
}

// policy is host's policy, its budget included.
func (r *Retrier) policy(host string) RetryPolicy {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.policyLocked(host)
}

func (r *Retrier) policyLocked(host string) RetryPolicy {
	if p, ok := r.policies[host]; ok {
		return p
	}
	p := r.o.Policy
	if b, ok := r.o.Budgets[host]; ok && b > 0 {
		p.Budget = b
	}
	return p
}

func (r *Retrier) service(host string) string {
	r.mu.Lock()
	defer r.mu.Unlock()
	if s, ok := r.names[host]; ok {
		return s
	}
	return r.o.Service
}

// Retry retries requests that failed with 429, 5xx, a rate limit, a reset connection or a
// timeout, with exponential backoff and full jitter, honouring Retry-After and GitHub's
// X-RateLimit-Reset. Only requests whose body can be replayed are retried. Each host has
// its own budget, so one slow service cannot stall the others.
func Retry(next http.RoundTripper, o RetryOptions) http.RoundTripper {
	return NewRetrier(o).RoundTripper(next)
}

// RoundTripper retries requests through next.
func (r *Retrier) RoundTripper(next http.RoundTripper) http.RoundTripper {
	return roundTripFunc(func(req *http.Request) (*http.Response, error) { return r.roundTrip(next, req) })
}

// MaxAttempts is host's attempts per request.
func (r *Retrier) MaxAttempts(host string) int { return r.policy(host).MaxAttempts }

// RetryBudgetError says a host used up its retry budget.
type RetryBudgetError struct {
	Host   string
	Budget time.Duration
	Last   string
	Err    error // the last failure, when it was an error (a timeout, a reset)
}

func (e *RetryBudgetError) Error() string {
	return fmt.Sprintf("%s: retry budget of %s used up (last: %s); the service is failing or limiting relay's rate, try again later or raise the budget", e.Host, e.Budget, e.Last)
}

func (e *RetryBudgetError) Unwrap() error { return e.Err }

// RetriedError is a failure that the Retrier already retried as often as its policy allows.
type RetriedError struct {
	Attempts int
	Err      error
}

func (e *RetriedError) Error() string {
	return fmt.Sprintf("%v (after %d attempts)", e.Err, e.Attempts)
}

func (e *RetriedError) Unwrap() error { return e.Err }

// Retried says err is one the Retrier already retried (or gave up on within its budget),
// so a loop above it must not retry it again.
func Retried(err error) bool {
	var re *RetriedError
	var be *RetryBudgetError
	return errors.As(err, &re) || errors.As(err, &be)
}

func (r *Retrier) budget(host string) time.Duration { return r.policy(host).Budget }

// chargeTimeout counts the time a request to host waited in vain against the host's
// budget: retries of a hung host would otherwise cost attempts × timeout per request, with
// no bound but the job's. Once the budget is spent, every request to the host fails at once.
func (r *Retrier) chargeTimeout(host string, err error) {
	var te *TimeoutError
	if !errors.As(err, &te) {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.spent[host] += te.After
	if r.spent[host] > r.policyLocked(host).Budget {
		r.hung[host] = err
	}
}

func (r *Retrier) roundTrip(next http.RoundTripper, req *http.Request) (*http.Response, error) {
	host := req.URL.Host
	r.mu.Lock()
	last := r.hung[host]
	r.mu.Unlock()
	if last != nil {
		return nil, &RetryBudgetError{Host: host, Budget: r.budget(host), Last: last.Error(), Err: last}
	}
	replayable := req.Body == nil || req.Body == http.NoBody || req.GetBody != nil
	max := r.policy(host).MaxAttempts
	for attempt := 1; ; attempt++ {
		if attempt > 1 && req.GetBody != nil {
			body, err := req.GetBody()
			if err != nil {
				return nil, err
			}
			req = req.Clone(req.Context())
			req.Body = body
		}
		resp, err := next.RoundTrip(req)
		r.chargeTimeout(host, err)
		if err == nil {
			resp.Body = &chargedBody{ReadCloser: resp.Body, r: r, host: host}
		}
		reason, retry := Retryable(resp, err)
		if retry && replayable && attempt >= max && err != nil {
			return nil, &RetriedError{Attempts: attempt, Err: err}
		}
		if !retry || !replayable || attempt >= max {
			return resp, err
		}
		if resp != nil {
			// Drain a little so the connection can be reused, then let it go.
			io.CopyN(io.Discard, resp.Body, 4<<10)
			resp.Body.Close()
		}
		if err := r.wait(req.Context(), host, req.Method, attempt, resp, reason, err); err != nil {
			return nil, err
		}
	}
}

// Wait is the backoff before attempt+1 of an operation on host that failed with resp (nil
// for a network error) for reason, charged to the host's budget: a RetryBudgetError when
// the budget cannot pay for it.
func (r *Retrier) Wait(ctx context.Context, host string, attempt int, resp *http.Response, reason string) error {
	return r.wait(ctx, host, "", attempt, resp, reason, nil)
}

func (r *Retrier) wait(ctx context.Context, host, method string, attempt int, resp *http.Response, reason string, cause error) error {
	p := r.policy(host)
	wait := r.backoff(p, attempt, resp)
	r.mu.Lock()
	budget := p.Budget
	over := r.spent[host]+wait > budget
	if !over {
		r.spent[host] += wait
	}
	r.mu.Unlock()
	if over {
		return &RetryBudgetError{Host: host, Budget: budget, Last: reason, Err: cause}
	}
	r.o.Logger.Warn(r.service(host)+" request failed, retrying", "host", host, "method", method,
		"attempt", attempt, "max_attempts", p.MaxAttempts, "reason", reason, "wait_ms", wait.Milliseconds())
	return r.o.Sleep(ctx, wait)
}

// chargedBody charges a body that stopped moving to its host's budget.
type chargedBody struct {
	io.ReadCloser
	r    *Retrier
	host string
}

func (b *chargedBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if err != nil && err != io.EOF {
		b.r.chargeTimeout(b.host, err)
	}
	return n, err
}

func (r *Retrier) backoff(p RetryPolicy, attempt int, resp *http.Response) time.Duration {
	if resp != nil {
		if d, ok := retryAfter(resp.Header.Get("Retry-After"), r.o.Now()); ok {
			return min(d, p.Max)
		}
		// An exhausted rate limit lets nothing through before it resets: waiting less is
		// pointless, so the wait is the reset, and the budget decides whether to afford it.
		if reset, ok := rateLimitReset(resp, r.o.Now()); ok {
			return reset
		}
	}
	ceil := p.Max
	if n := attempt - 1; n < 62 && p.Initial <= p.Max>>n {
		ceil = p.Initial << n
	}
	if ceil <= 0 {
		ceil = time.Millisecond
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	// Full jitter: clients retrying together spread out instead of stampeding.
	return time.Duration(r.o.Rand.Int63n(int64(ceil)) + 1)
}

// Retryable says whether waiting may help a request that got resp or err, and why:
// network errors and timeouts, 408, 429, 5xx but 501, and a rate limit (GitHub answers
// 403 or 429 with X-RateLimit-Remaining: 0, or a secondary limit's Retry-After).
func Retryable(resp *http.Response, err error) (string, bool) {
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
	case http.StatusForbidden:
		if resp.Header.Get("X-RateLimit-Remaining") == "0" {
			return resp.Status + " (rate limit exhausted until " + resp.Header.Get("X-RateLimit-Reset") + ")", true
		}
		if resp.Header.Get("Retry-After") != "" {
			return resp.Status + " (secondary rate limit)", true
		}
	}
	return "", false
}

// rateLimitReset is how long until an exhausted rate limit resets (X-RateLimit-Reset is
// in Unix seconds), plus a second for the clocks.
func rateLimitReset(resp *http.Response, now time.Time) (time.Duration, bool) {
	if resp.Header.Get("X-RateLimit-Remaining") != "0" {
		return 0, false
	}
	s, err := strconv.ParseInt(resp.Header.Get("X-RateLimit-Reset"), 10, 64)
	if err != nil {
		return 0, false
	}
	return max(time.Unix(s, 0).Sub(now), 0) + time.Second, true
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
