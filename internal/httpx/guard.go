package httpx

import (
	"fmt"
	"net"
	"net/http"
	"strings"
)

// WriteGuardError is returned for a write to a host the guard does not allow.
type WriteGuardError struct {
	Method, URL string
}

func (e *WriteGuardError) Error() string {
	return fmt.Sprintf("refusing %s %s: --local and --dry-run never write to a non-loopback host", e.Method, e.URL)
}

// WriteGuard fails every request that could write (anything but GET, HEAD, OPTIONS) to a
// host that is not loopback. --local and --dry-run wrap every outbound transport in it, so
// a mistake in wiring cannot publish anything.
func WriteGuard(next http.RoundTripper) http.RoundTripper {
	return roundTripFunc(func(req *http.Request) (*http.Response, error) {
		switch req.Method {
		case http.MethodGet, http.MethodHead, http.MethodOptions:
		default:
			if !IsLoopback(req.URL.Hostname()) {
				return nil, &WriteGuardError{Method: req.Method, URL: req.URL.Redacted()}
			}
		}
		return next.RoundTrip(req)
	})
}

// IsLoopback reports whether host is a loopback address or localhost.
func IsLoopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
