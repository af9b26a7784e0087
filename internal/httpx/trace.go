package httpx

import (
	"context"
	"net/http"
	"strconv"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/relaydev/relay/internal/telemetry"
)

// Trace makes each request a client span, child of the span in the request's context,
// or of fallback's where the request has none (clients that build their requests without
// one), and sends that span on as traceparent, so the services' own traces and logs join
// the run's.
func Trace(next http.RoundTripper, fallback context.Context) http.RoundTripper {
	return roundTripFunc(func(req *http.Request) (*http.Response, error) {
		ctx := req.Context()
		if !trace.SpanContextFromContext(ctx).IsValid() && fallback != nil {
			ctx = trace.ContextWithSpan(ctx, trace.SpanFromContext(fallback))
		}
		u := *req.URL
		u.User, u.RawQuery, u.Fragment = nil, "", "" // a query may hold a token
		attrs := []attribute.KeyValue{attribute.String("http.request.method", req.Method), attribute.String("server.address", req.URL.Hostname()), attribute.String("url.full", u.String())}
		if p := req.URL.Port(); p != "" {
			if n, err := strconv.Atoi(p); err == nil {
				attrs = append(attrs, attribute.Int("server.port", n))
			}
		}
		ctx, span := telemetry.Tracer(ctx).Start(ctx, req.Method, trace.WithSpanKind(trace.SpanKindClient), trace.WithAttributes(attrs...))
		defer span.End()
		req = req.Clone(ctx)
		telemetry.Inject(ctx, req.Header.Set)
		resp, err := next.RoundTrip(req)
		if err != nil {
			span.RecordError(err)
			span.SetStatus(codes.Error, err.Error())
			return nil, err
		}
		span.SetAttributes(attribute.Int("http.response.status_code", resp.StatusCode))
		if resp.StatusCode >= 400 {
			span.SetStatus(codes.Error, resp.Status)
		}
		return resp, nil
	})
}
