package httpx

import (
	"context"
	"errors"
	"math/rand"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

// instant records the waits instead of sleeping.
type instant struct {
	mu    sync.Mutex
	waits []time.Duration
}

func (i *instant) sleep(_ context.Context, d time.Duration) error {
	i.mu.Lock()
	i.waits = append(i.waits, d)
	i.mu.Unlock()
	return nil
}

func TestRetryPolicy(t *testing.T) {
	var calls int
	status := http.StatusServiceUnavailable
	next := roundTripFunc(func(r *http.Request) (*http.Response, error) {
		calls++
		h := http.Header{}
		if status == http.StatusTooManyRequests {
			h.Set("Retry-After", "7")
		}
		return &http.Response{StatusCode: status, Status: http.StatusText(status), Header: h, Body: http.NoBody, Request: r}, nil
	})
	clock := &instant{}
	rt := Retry(next, RetryOptions{Policy: RetryPolicy{MaxAttempts: 4, Initial: 100 * time.Millisecond, Max: 5 * time.Second, Budget: time.Minute}, Rand: rand.New(rand.NewSource(1)), Sleep: clock.sleep})

	req, _ := http.NewRequest("GET", "http://127.0.0.1:1/v2/x/manifests/v1", nil)
	resp, err := rt.RoundTrip(req)
	if err != nil || resp.StatusCode != 503 || calls != 4 || len(clock.waits) != 3 {
		t.Fatalf("503: resp %v err %v calls %d waits %v", resp, err, calls, clock.waits)
	}
	for i, w := range clock.waits {
		if ceil := 100 * time.Millisecond << i; w <= 0 || w > ceil {
			t.Errorf("wait %d = %v, want in (0, %v]", i, w, ceil)
		}
	}

	calls, clock.waits, status = 0, nil, http.StatusTooManyRequests
	rt.RoundTrip(req)
	if clock.waits[0] != 5*time.Second {
		t.Errorf("Retry-After 7 capped at Max: got %v", clock.waits[0])
	}

	calls, status = 0, http.StatusNotFound
	if resp, _ := rt.RoundTrip(req); resp.StatusCode != 404 || calls != 1 {
		t.Errorf("404 retried: %d calls", calls)
	}

	// A streamed body cannot be replayed: one attempt, the caller retries.
	calls, status = 0, http.StatusServiceUnavailable
	body, _ := http.NewRequest("PATCH", "http://127.0.0.1:1/v2/x/blobs/uploads/1", strings.NewReader("x"))
	body.GetBody = nil
	rt.RoundTrip(body)
	if calls != 1 {
		t.Errorf("unreplayable body retried: %d calls", calls)
	}

	// The budget: a host that keeps failing stops costing time.
	tight := Retry(next, RetryOptions{Policy: RetryPolicy{MaxAttempts: 100, Initial: time.Second, Max: time.Second, Budget: 3 * time.Second}, Rand: rand.New(rand.NewSource(1)), Sleep: (&instant{}).sleep})
	_, err = tight.RoundTrip(req)
	var be *RetryBudgetError
	if !errors.As(err, &be) || !strings.Contains(err.Error(), "127.0.0.1:1") {
		t.Fatalf("budget: %v", err)
	}
}

func TestRetryAfter(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for v, want := range map[string]time.Duration{"3": 3 * time.Second, "Thu, 01 Jan 2026 00:00:09 GMT": 9 * time.Second, "Wed, 31 Dec 2025 00:00:00 GMT": 0} {
		if got, ok := retryAfter(v, now); !ok || got != want {
			t.Errorf("retryAfter(%q) = %v %v", v, got, ok)
		}
	}
	for _, v := range []string{"", "soon", "-1"} {
		if _, ok := retryAfter(v, now); ok {
			t.Errorf("retryAfter(%q) accepted", v)
		}
	}
}

// TestRateLimits: GitHub's rate limits are waited out like a 503, for as long as they say,
// and only within the host's budget; a plain 403 is a refusal and never retried.
func TestRateLimits(t *testing.T) {
	now := time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC)
	cases := []struct {
		name     string
		status   int
		header   map[string]string
		budget   time.Duration
		calls    int
		waits    []time.Duration
		budgeted bool // fails with RetryBudgetError
	}{
		{"primary limit resets in 20s", 403, map[string]string{"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": "1796205620"}, time.Minute, 2, []time.Duration{21 * time.Second}, false},
		{"primary limit as 429", 429, map[string]string{"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": "1796205605"}, time.Minute, 2, []time.Duration{6 * time.Second}, false},
		{"secondary limit", 403, map[string]string{"Retry-After": "3"}, time.Minute, 2, []time.Duration{3 * time.Second}, false},
		{"reset past the budget", 403, map[string]string{"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": "1796209200"}, 5 * time.Minute, 1, nil, true},
		{"plain refusal", 403, nil, time.Minute, 1, nil, false},
		{"limit with requests left", 403, map[string]string{"X-RateLimit-Remaining": "12", "X-RateLimit-Reset": "1796205620"}, time.Minute, 1, nil, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			calls := 0
			next := roundTripFunc(func(r *http.Request) (*http.Response, error) {
				calls++
				if calls > 1 {
					return &http.Response{StatusCode: 200, Header: http.Header{}, Body: http.NoBody, Request: r}, nil
				}
				h := http.Header{}
				for k, v := range c.header {
					h.Set(k, v)
				}
				return &http.Response{StatusCode: c.status, Status: http.StatusText(c.status), Header: h, Body: http.NoBody, Request: r}, nil
			})
			clock := &instant{}
			rt := Retry(next, RetryOptions{Policy: RetryPolicy{MaxAttempts: 3, Initial: time.Second, Max: 5 * time.Second, Budget: c.budget},
				Rand: rand.New(rand.NewSource(1)), Sleep: clock.sleep, Now: func() time.Time { return now }})
			req, _ := http.NewRequest("GET", "https://api.github.com/repos/acme/app/releases", nil)
			_, err := rt.RoundTrip(req)
			var be *RetryBudgetError
			if errors.As(err, &be) != c.budgeted {
				t.Fatalf("err %v, want budget error %v", err, c.budgeted)
			}
			if c.budgeted && !strings.Contains(err.Error(), "rate limit exhausted") {
				t.Errorf("budget error does not say why: %v", err)
			}
			if calls != c.calls || len(clock.waits) != len(c.waits) {
				t.Fatalf("calls %d waits %v, want %d %v", calls, clock.waits, c.calls, c.waits)
			}
			for i := range c.waits {
				if clock.waits[i] != c.waits[i] {
					t.Errorf("wait %d = %v, want %v", i, clock.waits[i], c.waits[i])
				}
			}
		})
	}
}

// TestWaitSharesTheBudget: an operation redone whole (Wait) and the requests it makes
// (RoundTripper) draw on one budget per host.
func TestWaitSharesTheBudget(t *testing.T) {
	clock := &instant{}
	r := NewRetrier(RetryOptions{Policy: RetryPolicy{MaxAttempts: 3, Initial: time.Second, Max: time.Second, Budget: 2500 * time.Millisecond},
		Rand: rand.New(rand.NewSource(1)), Sleep: clock.sleep})
	ctx := context.Background()
	fail := &http.Response{StatusCode: 503, Status: "503 Service Unavailable", Header: http.Header{"Retry-After": {"1"}}, Body: http.NoBody}
	for i := 1; i <= 2; i++ {
		if err := r.Wait(ctx, "uploads.github.com", i, fail, fail.Status); err != nil {
			t.Fatalf("wait %d: %v", i, err)
		}
	}
	calls := 0
	rt := r.RoundTripper(roundTripFunc(func(req *http.Request) (*http.Response, error) {
		calls++
		return &http.Response{StatusCode: 503, Status: "503 Service Unavailable", Header: http.Header{"Retry-After": {"1"}}, Body: http.NoBody, Request: req}, nil
	}))
	req, _ := http.NewRequest("POST", "https://uploads.github.com/repos/acme/app/releases/1/assets", nil)
	_, err := rt.RoundTrip(req)
	var be *RetryBudgetError
	if !errors.As(err, &be) || calls != 1 || len(clock.waits) != 2 {
		t.Fatalf("a third second of waiting fit a 2.5 s budget: err %v calls %d waits %v", err, calls, clock.waits)
	}
	// Another host has its own.
	if err := r.Wait(ctx, "api.github.com", 1, fail, fail.Status); err != nil {
		t.Fatalf("another host's budget: %v", err)
	}
}

// TestSetPolicy: a host with a policy of its own retries by it (Sigstore: attempts bounded
// by the budget alone), every other host by the default.
func TestSetPolicy(t *testing.T) {
	clock := &instant{}
	r := NewRetrier(RetryOptions{Policy: RetryPolicy{MaxAttempts: 2, Initial: time.Second, Max: time.Second, Budget: time.Hour},
		Rand: rand.New(rand.NewSource(1)), Sleep: clock.sleep})
	r.SetPolicy("rekor.example", RetryPolicy{MaxAttempts: 1 << 30, Initial: time.Second, Max: time.Second, Budget: 10 * time.Second})
	calls := map[string]int{}
	rt := r.RoundTripper(roundTripFunc(func(req *http.Request) (*http.Response, error) {
		calls[req.URL.Host]++
		return &http.Response{StatusCode: 503, Status: "503 Service Unavailable", Header: http.Header{}, Body: http.NoBody, Request: req}, nil
	}))
	for _, host := range []string{"rekor.example", "registry.example"} {
		req, _ := http.NewRequest("GET", "https://"+host+"/x", nil)
		resp, err := rt.RoundTrip(req)
		if resp != nil {
			resp.Body.Close()
		}
		var be *RetryBudgetError
		switch host {
		case "rekor.example":
			if !errors.As(err, &be) || calls[host] < 10 {
				t.Errorf("%s: %d calls, err %v: want retries until the 10 s budget", host, calls[host], err)
			}
		default:
			if err != nil || calls[host] != 2 {
				t.Errorf("%s: %d calls, err %v: want the default's 2 attempts", host, calls[host], err)
			}
		}
	}
}
