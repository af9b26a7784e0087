// Package httpx holds what every outbound HTTP client of relay shares: bounded waits.
package httpx

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"time"
)

// DefaultTimeout is how long a request may go without progress when nothing else is set:
// long enough for a registry to commit a large blob, short enough that a hung server costs
// minutes, not the job's six hours. A slow transfer that keeps moving never reaches it.
const DefaultTimeout = 2 * time.Minute

// ConnectTimeout bounds the TCP connect and the TLS handshake, each.
const ConnectTimeout = 30 * time.Second

// UserAgent sets ua (relay's version and the run's correlation id) on every request, so a
// server's logs lead back to the run.
func UserAgent(next http.RoundTripper, ua string) http.RoundTripper {
	return roundTripFunc(func(req *http.Request) (*http.Response, error) {
		req = req.Clone(req.Context())
		req.Header.Set("User-Agent", ua)
		return next.RoundTrip(req)
	})
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// Transport is a connection pool whose connects and TLS handshakes are bounded.
func Transport() *http.Transport {
	t := http.DefaultTransport.(*http.Transport).Clone()
	d := &net.Dialer{Timeout: ConnectTimeout, KeepAlive: 30 * time.Second}
	t.DialContext = d.DialContext
	t.TLSHandshakeTimeout = ConnectTimeout
	return t
}

// TimeoutError is a request that made no progress for its timeout: no answer, or a body
// that stopped moving. It is a net.Error whose Timeout is true, so retry layers treat it
// like a reset connection.
type TimeoutError struct {
	Method, Host, Path string
	After              time.Duration
	Phase              string // "waiting for the response" or "reading the response body", ...
}

func (e *TimeoutError) Error() string {
	return fmt.Sprintf("%s %s%s: no progress for %s while %s (the server hangs or the link stalled; raise --timeout or the host's timeout in relay.yaml if it is only slow)", e.Method, e.Host, e.Path, e.After, e.Phase)
}

// Timeout implements net.Error.
func (e *TimeoutError) Timeout() bool { return true }

// Temporary implements net.Error.
func (e *TimeoutError) Temporary() bool { return true }

// IdleTimeout fails a request that makes no progress for the host's timeout (timeoutFor;
// 0 means DefaultTimeout): from the start of the request until the response headers, and
// between two reads of the request or response body. Progress restarts the clock, so a
// 1 GiB blob on a slow link passes as long as bytes keep moving.
func IdleTimeout(next http.RoundTripper, timeoutFor func(host string) time.Duration) http.RoundTripper {
	return &idle{next: next, timeoutFor: timeoutFor}
}

type idle struct {
	next       http.RoundTripper
	timeoutFor func(string) time.Duration
}

func (t *idle) RoundTrip(req *http.Request) (*http.Response, error) {
	d := DefaultTimeout
	if t.timeoutFor != nil {
		if v := t.timeoutFor(req.URL.Host); v > 0 {
			d = v
		}
	}
	ctx, cancel := context.WithCancel(req.Context())
	w := &watch{d: d, cancel: cancel, err: TimeoutError{Method: req.Method, Host: req.URL.Host, Path: req.URL.Path, After: d, Phase: "waiting for the response"}}
	w.timer = time.AfterFunc(d, w.fire)
	req = req.WithContext(ctx)
	if req.Body != nil && req.Body != http.NoBody {
		body := req.Body
		req.Body = &watchedBody{ReadCloser: body, w: w, phase: "sending the request body", ours: true}
		if gb := req.GetBody; gb != nil {
			req.GetBody = func() (io.ReadCloser, error) {
				b, err := gb()
				if err != nil {
					return nil, err
				}
				return &watchedBody{ReadCloser: b, w: w, phase: "sending the request body", ours: true}, nil
			}
		}
	}
	resp, err := t.next.RoundTrip(req)
	if err != nil {
		w.stop()
		if te := w.fired(); te != nil {
			return nil, te
		}
		return nil, err
	}
	w.progress("reading the response body")
	resp.Body = &watchedBody{ReadCloser: resp.Body, w: w, phase: "reading the response body", done: w.stop}
	return resp, nil
}

// watch is one request's clock.
type watch struct {
	d      time.Duration
	cancel context.CancelFunc
	timer  *time.Timer

	mu      sync.Mutex
	err     TimeoutError
	timeout bool
	stopped bool
}

func (w *watch) fire() {
	w.mu.Lock()
	if w.stopped {
		w.mu.Unlock()
		return
	}
	w.timeout = true
	w.mu.Unlock()
	w.cancel()
}

func (w *watch) progress(phase string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.stopped || w.timeout {
		return
	}
	w.err.Phase = phase
	w.timer.Reset(w.d)
}

// pause stops the clock while relay itself is slow (a request body waiting on its source):
// that is not this server's stall, and the source's own clock runs meanwhile.
func (w *watch) pause() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.stopped && !w.timeout {
		w.timer.Stop()
	}
}

func (w *watch) stop() {
	w.mu.Lock()
	w.stopped = true
	w.mu.Unlock()
	w.timer.Stop()
	w.cancel()
}

func (w *watch) fired() *TimeoutError {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.timeout {
		return nil
	}
	e := w.err
	return &e
}

type watchedBody struct {
	io.ReadCloser
	w     *watch
	phase string
	done  func()
	ours  bool // a request body: its reads wait on relay's side, not on the server
}

func (b *watchedBody) Read(p []byte) (int, error) {
	if b.ours {
		b.w.pause()
	}
	n, err := b.ReadCloser.Read(p)
	if n > 0 || b.ours {
		b.w.progress(b.phase)
	}
	switch {
	case err == io.EOF && b.done != nil:
		b.done() // the answer is complete: nothing left to time
	case err != nil && err != io.EOF:
		if te := b.w.fired(); te != nil {
			return n, te
		}
	}
	return n, err
}

func (b *watchedBody) Close() error {
	err := b.ReadCloser.Close()
	if b.done != nil {
		b.done()
	}
	return err
}
