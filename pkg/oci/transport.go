package oci

import (
	"crypto/tls"
	"errors"
	"net/http"
	"strings"

	"github.com/relaydev/relay/internal/httpx"
)

// WriteGuardError is returned for a write to a host the guard does not allow.
type WriteGuardError = httpx.WriteGuardError

// WriteGuard fails every request that could write to a host that is not loopback.
func WriteGuard(next http.RoundTripper) http.RoundTripper { return httpx.WriteGuard(next) }

// IsLoopback reports whether host is a loopback address or localhost.
func IsLoopback(host string) bool { return httpx.IsLoopback(host) }

// UserAgent sets relay's User-Agent, carrying the correlation id, on every request.
func UserAgent(next http.RoundTripper, ua string) http.RoundTripper { return httpx.UserAgent(next, ua) }

// NewTransport is the HTTP transport relay talks to registries through: one connection pool
// shared by every request, keeping enough idle connections per host for parallel blob
// uploads (net/http keeps 2), and buffers large enough that a blob stream costs few
// system calls.
func NewTransport() *http.Transport {
	t := httpx.Transport() // bounded connects and TLS handshakes
	t.MaxIdleConnsPerHost = 32
	t.WriteBufferSize = 256 << 10
	t.ReadBufferSize = 256 << 10
	return t
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// Insecure lets the named hosts, and only them, skip TLS verification and fall back to
// plain HTTP when the server speaks it; every other host gets next unchanged.
func Insecure(next http.RoundTripper, hosts []string) http.RoundTripper {
	if len(hosts) == 0 {
		return next
	}
	set := map[string]bool{}
	for _, h := range hosts {
		set[strings.ToLower(h)] = true
	}
	base, ok := next.(*http.Transport)
	if !ok {
		base = http.DefaultTransport.(*http.Transport)
	}
	lax := base.Clone()
	lax.TLSClientConfig = &tls.Config{InsecureSkipVerify: true} //nolint:gosec // only for hosts the config names insecure
	return roundTripFunc(func(req *http.Request) (*http.Response, error) {
		if !set[strings.ToLower(req.URL.Host)] {
			return next.RoundTrip(req)
		}
		resp, err := lax.RoundTrip(req)
		var rh tls.RecordHeaderError
		if err != nil && (errors.As(err, &rh) || errors.Is(err, http.ErrSchemeMismatch)) && req.URL.Scheme == "https" {
			// The server answered in plain HTTP: speak it, to this named host only.
			plain := req.Clone(req.Context())
			plain.URL.Scheme = "http"
			if req.GetBody != nil {
				if plain.Body, err = req.GetBody(); err != nil {
					return nil, err
				}
			}
			return lax.RoundTrip(plain)
		}
		return resp, err
	})
}
