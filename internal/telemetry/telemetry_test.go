package telemetry

import (
	"context"
	"strings"
	"testing"

	"go.opentelemetry.io/otel/trace"
)

const parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

func env(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

func TestStartContinuesTheCallersTrace(t *testing.T) {
	ctx, tel, err := Start(context.Background(), Options{Getenv: env(map[string]string{"TRACEPARENT": parent, "TRACESTATE": "ci=1"}), Command: "relay run"})
	if err != nil || tel.Exporting {
		t.Fatalf("start: %v, exporting %v", err, tel.Exporting)
	}
	sc := trace.SpanContextFromContext(ctx)
	if sc.TraceID().String() != "4bf92f3577b34da6a3ce929d0e0e4736" || sc.SpanID().String() == "00f067aa0ba902b7" || !sc.IsSampled() {
		t.Fatalf("the command's span %v does not continue the caller's", sc)
	}
	// A child process (the runner's job) gets the command's span as its parent.
	var tp string
	for _, kv := range Environ(ctx) {
		if v, ok := strings.CutPrefix(kv, "TRACEPARENT="); ok {
			tp = v
		}
	}
	if tp != "00-4bf92f3577b34da6a3ce929d0e0e4736-"+sc.SpanID().String()+"-01" {
		t.Fatalf("TRACEPARENT for the child: %q", tp)
	}
	if !strings.Contains(strings.Join(Environ(ctx), " "), "TRACESTATE=ci=1") {
		t.Errorf("TRACESTATE not passed on: %v", Environ(ctx))
	}
	tel.End(ctx, nil)

	// Without TRACEPARENT a new trace starts; a malformed one is reported, not fatal.
	ctx, tel, _ = Start(context.Background(), Options{Getenv: env(nil), Command: "relay run"})
	if !trace.SpanContextFromContext(ctx).IsValid() {
		t.Fatal("no trace without TRACEPARENT")
	}
	tel.End(ctx, nil)
	if err := CheckParent(context.Background(), env(map[string]string{"TRACEPARENT": "garbage"})); err != ErrBadParent {
		t.Fatalf("malformed TRACEPARENT: %v", err)
	}
	if err := CheckParent(context.Background(), env(map[string]string{"TRACEPARENT": parent})); err != nil {
		t.Fatal(err)
	}
	// The run's own span (ctx has one) does not make a malformed TRACEPARENT look valid.
	if err := CheckParent(ctx, env(map[string]string{"TRACEPARENT": "garbage"})); err != ErrBadParent {
		t.Fatalf("malformed TRACEPARENT under the run's span: %v", err)
	}
}

func TestTracesEndpoint(t *testing.T) {
	for _, tc := range []struct {
		env  map[string]string
		want string
		ok   bool
	}{
		{nil, "", false},
		{map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}, "http://127.0.0.1:4318/v1/traces", true},
		{map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318/otlp/"}, "http://c:4318/otlp/v1/traces", true},
		{map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://t:1/x"}, "http://t:1/x", true},
	} {
		if got, ok := tracesEndpoint(env(tc.env)); got != tc.want || ok != tc.ok {
			t.Errorf("%v: %q %v, want %q %v", tc.env, got, ok, tc.want, tc.ok)
		}
	}
}
