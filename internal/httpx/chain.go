package httpx

import (
	"context"
	"net/http"
	"time"
)

// ChainOptions configure the one HTTP stack a relay process sends every request through.
type ChainOptions struct {
	// UserAgent is relay's version with the run's correlation id.
	UserAgent string
	// Timeout bounds a request without progress (0: DefaultTimeout); Timeouts per host.
	Timeout  time.Duration
	Timeouts map[string]time.Duration
	Retry    RetryOptions
	// Guard refuses every write to a host that is not loopback (--local, --dry-run).
	Guard bool
	// Base is the connection pool (nil: Transport()).
	Base http.RoundTripper
	// Trace parents the spans of requests whose context carries none.
	Trace context.Context
}

// Chain is relay's outbound HTTP stack, from the outside in: the User-Agent, the write
// guard, a client span per request (traceparent sent on), one retry layer with a budget per
// host, the no-progress timeout of each attempt, and one connection pool.
type Chain struct {
	ua      string
	guard   bool
	retrier *Retrier
	inner   http.RoundTripper
}

// NewChain builds the chain; every client of a run takes its transport from the same one.
func NewChain(o ChainOptions) *Chain {
	base := o.Base
	if base == nil {
		base = Transport()
	}
	r := NewRetrier(o.Retry)
	bounded := IdleTimeout(base, func(host string) time.Duration {
		if d, ok := o.Timeouts[host]; ok && d > 0 {
			return d
		}
		return o.Timeout
	})
	return &Chain{ua: o.UserAgent, guard: o.Guard, retrier: r, inner: Trace(r.RoundTripper(bounded), o.Trace)}
}

// Transport is the whole chain.
func (c *Chain) Transport() http.RoundTripper { return c.With(nil) }

// With puts wrap (the dry run's registry overlay, which answers writes itself) between the
// User-Agent and the write guard, so the guard still sees whatever wrap lets through.
func (c *Chain) With(wrap func(http.RoundTripper) http.RoundTripper) http.RoundTripper {
	rt := c.inner
	if c.guard {
		rt = WriteGuard(rt)
	}
	if wrap != nil {
		rt = wrap(rt)
	}
	if c.ua != "" {
		rt = UserAgent(rt, c.ua)
	}
	return rt
}

// Credentials is a client over the chain without the write guard, for the exchanges that
// mint credentials (a GitHub App's installation token, ACR's and ECR's registry tokens):
// POSTs that publish nothing, which --local and --dry-run need to read.
func (c *Chain) Credentials() *http.Client {
	var rt http.RoundTripper = c.inner
	if c.ua != "" {
		rt = UserAgent(rt, c.ua)
	}
	return &http.Client{Transport: rt}
}

// Client is an *http.Client over the chain.
func (c *Chain) Client() *http.Client { return &http.Client{Transport: c.Transport()} }

// Retrier is the chain's retry layer, for clients that redo an operation whole.
func (c *Chain) Retrier() *Retrier { return c.retrier }

// Guarded says whether writes to other hosts than loopback are refused.
func (c *Chain) Guarded() bool { return c.guard }

// Retrying is hc (nil: a new client) under a retry layer: r when the caller's chain has one
// (hc's transport then includes it), else one made with o over hc's transport, so a client
// used on its own still retries. It returns the client and the retry layer in use.
func Retrying(hc *http.Client, r *Retrier, o RetryOptions) (*http.Client, *Retrier) {
	c := http.Client{}
	if hc != nil {
		c = *hc
	}
	if r == nil {
		r = NewRetrier(o)
		base := c.Transport
		if base == nil {
			base = Transport()
		}
		c.Transport = r.RoundTripper(base)
	}
	return &c, r
}
