package httpx

import (
	"errors"
	"net/http"
	"strings"
	"sync"
	"testing"
)

// TestChain: the chain's layers in order, seen from the server side of a stub pool: the
// User-Agent on every request, the guard refusing writes to other hosts than loopback
// (but not the credential exchanges), a wrap between them, and the retry layer under all.
func TestChain(t *testing.T) {
	var mu sync.Mutex
	var got []string
	fails := 1
	base := roundTripFunc(func(r *http.Request) (*http.Response, error) {
		mu.Lock()
		defer mu.Unlock()
		got = append(got, r.Method+" "+r.URL.Host+" "+r.UserAgent())
		status := 200
		if fails > 0 {
			fails--
			status = 503
		}
		return &http.Response{StatusCode: status, Status: http.StatusText(status), Header: http.Header{}, Body: http.NoBody, Request: r}, nil
	})
	c := NewChain(ChainOptions{UserAgent: "relay/test (correlation_id=c1)", Guard: true, Base: base,
		Retry: RetryOptions{Sleep: (&instant{}).sleep}})
	post := func(host string) *http.Request {
		r, _ := http.NewRequest(http.MethodPost, "https://"+host+"/x", strings.NewReader("{}"))
		return r
	}
	var ge *WriteGuardError
	if _, err := c.Client().Do(post("api.github.com")); !errors.As(err, &ge) {
		t.Fatalf("guarded chain sent a write to api.github.com: %v", err)
	}
	if resp, err := c.Credentials().Do(post("api.github.com")); err != nil || resp.StatusCode != 200 {
		t.Fatalf("credential exchange: %v", err)
	}
	wrapped := 0
	rt := c.With(func(next http.RoundTripper) http.RoundTripper {
		return roundTripFunc(func(r *http.Request) (*http.Response, error) { wrapped++; return next.RoundTrip(r) })
	})
	if _, err := (&http.Client{Transport: rt}).Do(post("127.0.0.1:5000")); err != nil || wrapped != 1 {
		t.Fatalf("wrapped loopback write: %v (wrapped %d)", err, wrapped)
	}
	want := []string{"POST api.github.com relay/test (correlation_id=c1)", "POST api.github.com relay/test (correlation_id=c1)", "POST 127.0.0.1:5000 relay/test (correlation_id=c1)"}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("the pool saw:\n%s\nwant (the 503 retried once, the guarded write never sent):\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}
