package httpx

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"go.opentelemetry.io/otel/trace"

	"github.com/relaydev/relay/internal/telemetry"
)

// TestTraceSendsTheSpan: each request carries a traceparent of the run's trace with a span
// of its own; a request built without a context (as sigstore-go builds Fulcio's) gets the
// fallback's trace.
func TestTraceSendsTheSpan(t *testing.T) {
	var got []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got = append(got, r.Header.Get("traceparent"))
	}))
	defer srv.Close()
	ctx, tel, err := telemetry.Start(context.Background(), telemetry.Options{Getenv: func(k string) string {
		if k == "TRACEPARENT" {
			return "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
		}
		return ""
	}, Command: "relay test"})
	if err != nil {
		t.Fatal(err)
	}
	defer tel.End(ctx, nil)
	c := &http.Client{Transport: Trace(Transport(), ctx)}
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL+"/a?token=secret", nil)
	if _, err := c.Do(req); err != nil {
		t.Fatal(err)
	}
	bare, _ := http.NewRequest(http.MethodPost, srv.URL+"/b", nil)
	if _, err := c.Do(bare); err != nil {
		t.Fatal(err)
	}
	run := trace.SpanContextFromContext(ctx).SpanID().String()
	if len(got) != 2 {
		t.Fatalf("%d requests", len(got))
	}
	for _, tp := range got {
		f := strings.Split(tp, "-")
		if len(f) != 4 || f[1] != "4bf92f3577b34da6a3ce929d0e0e4736" || f[2] == run || f[2] == "00f067aa0ba902b7" {
			t.Errorf("traceparent %q: want the run's trace with the request's own span", tp)
		}
	}
	if got[0] == got[1] {
		t.Error("two requests, one span")
	}
	// Without a span anywhere nothing is sent.
	got = nil
	plain := &http.Client{Transport: Trace(Transport(), nil)}
	plain.Get(srv.URL)
	if got[0] != "" {
		t.Errorf("traceparent %q without a trace", got[0])
	}
}
