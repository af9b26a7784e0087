// Package telemetry is relay's tracing: the caller's trace continued from TRACEPARENT
// (a CI system that traces its pipelines hands it to the job), a span for the command and
// one per step following OpenTelemetry's CI/CD conventions, and export over OTLP/HTTP only
// when OTEL_EXPORTER_OTLP_ENDPOINT (or _TRACES_ENDPOINT) is set. Without an endpoint the
// spans still carry ids, so every outbound request's traceparent joins the caller's trace.
package telemetry

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
)

// Name is the instrumentation scope of relay's spans.
const Name = "github.com/relaydev/relay"

// Options say what the command's span is.
type Options struct {
	Getenv  func(string) string
	Version string
	// Command names the span ("relay run"); Attributes go on it.
	Command    string
	Attributes []attribute.KeyValue
}

// Telemetry is one command's tracing.
type Telemetry struct {
	provider *sdktrace.TracerProvider
	span     trace.Span
	// Exporting says whether spans leave the process.
	Exporting bool
}

// Start begins the command's span, as a child of TRACEPARENT's when it is set. ctx then
// carries the span: Tracer(ctx) gives the components the provider to start theirs with.
func Start(ctx context.Context, o Options) (context.Context, *Telemetry, error) {
	opts := []sdktrace.TracerProviderOption{
		sdktrace.WithResource(resource.NewSchemaless(attribute.String("service.name", "relay"), attribute.String("service.version", o.Version))),
	}
	t := &Telemetry{}
	var err error
	if endpoint, ok := tracesEndpoint(o.Getenv); ok {
		exp, xerr := otlptracehttp.New(ctx, otlptracehttp.WithEndpointURL(endpoint))
		err = xerr
		if err == nil {
			opts = append(opts, sdktrace.WithBatcher(exp))
			t.Exporting = true
		} else {
			err = fmt.Errorf("OTEL_EXPORTER_OTLP_ENDPOINT: %w (spans are not exported)", err)
		}
	}
	t.provider = sdktrace.NewTracerProvider(opts...)
	ctx = Continue(ctx, o.Getenv)
	ctx, t.span = t.provider.Tracer(Name).Start(ctx, o.Command, trace.WithSpanKind(trace.SpanKindServer), trace.WithAttributes(o.Attributes...))
	return ctx, t, err
}

// End ends the command's span, marking it failed when err is set, and flushes the
// exporter, bounded: a collector that does not answer must not hold the job.
func (t *Telemetry) End(ctx context.Context, err error) {
	if err != nil {
		t.span.RecordError(err)
		t.span.SetStatus(codes.Error, err.Error())
		t.span.SetAttributes(attribute.String("cicd.pipeline.result", "failure"))
	} else {
		t.span.SetAttributes(attribute.String("cicd.pipeline.result", "success"))
	}
	t.span.End()
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	t.provider.Shutdown(ctx)
}

// tracesEndpoint is where OTLP/HTTP traces go: OTEL_EXPORTER_OTLP_TRACES_ENDPOINT as is,
// else OTEL_EXPORTER_OTLP_ENDPOINT with /v1/traces.
func tracesEndpoint(getenv func(string) string) (string, bool) {
	if e := getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"); e != "" {
		return e, true
	}
	e := getenv("OTEL_EXPORTER_OTLP_ENDPOINT")
	if e == "" {
		return "", false
	}
	u, err := url.Parse(e)
	if err != nil {
		return e, true // the exporter says what is wrong with it
	}
	u.Path = strings.TrimSuffix(u.Path, "/") + "/v1/traces"
	return u.String(), true
}

// Continue puts the remote span TRACEPARENT (and TRACESTATE) name into ctx.
func Continue(ctx context.Context, getenv func(string) string) context.Context {
	carrier := propagation.MapCarrier{}
	if tp := getenv("TRACEPARENT"); tp != "" {
		carrier["traceparent"] = tp
		carrier["tracestate"] = getenv("TRACESTATE")
	}
	return propagation.TraceContext{}.Extract(ctx, carrier)
}

// Tracer is relay's tracer for the span in ctx (a no-op one when there is none).
func Tracer(ctx context.Context) trace.Tracer {
	return trace.SpanFromContext(ctx).TracerProvider().Tracer(Name)
}

// Inject writes ctx's span as W3C trace context headers (traceparent, tracestate).
func Inject(ctx context.Context, set func(key, value string)) {
	propagation.TraceContext{}.Inject(ctx, setter(set))
}

// Environ is ctx's span as TRACEPARENT (and TRACESTATE) for a child process.
func Environ(ctx context.Context) []string {
	var env []string
	Inject(ctx, func(k, v string) { env = append(env, strings.ToUpper(k)+"="+v) })
	return env
}

type setter func(key, value string)

func (s setter) Get(string) string     { return "" }
func (s setter) Set(key, value string) { s(key, value) }
func (s setter) Keys() []string        { return nil }

// ErrBadParent is reported when TRACEPARENT is set but not W3C trace context.
var ErrBadParent = errors.New("TRACEPARENT is not W3C trace context (00-<32 hex>-<16 hex>-<2 hex>): starting a new trace")

// CheckParent says whether TRACEPARENT, when set, was understood.
func CheckParent(ctx context.Context, getenv func(string) string) error {
	if getenv("TRACEPARENT") == "" {
		return nil
	}
	// Whatever span ctx carries is set aside: only TRACEPARENT may make the result valid.
	if !trace.SpanContextFromContext(Continue(trace.ContextWithSpanContext(ctx, trace.SpanContext{}), getenv)).IsValid() {
		return ErrBadParent
	}
	return nil
}
