package destinations

import (
	"context"
	"errors"
	"net/http"
	"strconv"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
)

// TracerScope names the instrumentation scope of destination requests.
const TracerScope = "github.com/seghub/seghub/pkg/destinations"

// outboundPropagator writes only traceparent/tracestate on requests to
// destinations: baggage may carry our own context and is not a third party's
// business.
var outboundPropagator = propagation.TraceContext{}

// Span events a destination request adds to the span it runs under (a sync
// batch, a sink delivery): the operator's answer to "why was this slow".
const (
	EventRateLimitWait = "destination.rate_limit.wait"
	EventRetry         = "destination.retry"
)

// startRequestSpan starts the client span of one attempt of r to req's
// host, and writes its context into req's headers.
func (h *httpClient) startRequestSpan(ctx context.Context, req *http.Request, attempt, reqBytes int) (context.Context, trace.Span) {
	attrs := []attribute.KeyValue{
		attribute.String("http.request.method", req.Method),
		attribute.String("server.address", req.URL.Hostname()),
		attribute.String("url.full", req.URL.Scheme+"://"+req.URL.Host+req.URL.Path),
		attribute.Int("http.request.body.size", reqBytes),
		attribute.Int("destination.attempt", attempt),
	}
	if p := req.URL.Port(); p != "" {
		if n, err := strconv.Atoi(p); err == nil {
			attrs = append(attrs, attribute.Int("server.port", n))
		}
	}
	if attempt > 1 {
		attrs = append(attrs, attribute.Int("http.request.resend_count", attempt-1))
	}
	ctx, span := h.c.Tracer.Start(ctx, req.Method, trace.WithSpanKind(trace.SpanKindClient), trace.WithAttributes(attrs...))
	outboundPropagator.Inject(ctx, propagation.HeaderCarrier(req.Header))
	return ctx, span
}

// endRequestSpan records an attempt's answer (or the error that stopped it).
func endRequestSpan(span trace.Span, status, respBytes int, err error) {
	switch {
	case err != nil:
		span.SetAttributes(attribute.String("error.type", errorType(err)))
		span.SetStatus(codes.Error, NetworkProblem(err))
	default:
		span.SetAttributes(attribute.Int("http.response.status_code", status), attribute.Int("http.response.body.size", respBytes))
		if status >= 400 {
			span.SetAttributes(attribute.String("error.type", strconv.Itoa(status)))
			span.SetStatus(codes.Error, http.StatusText(status))
		}
	}
	span.End()
}

func errorType(err error) string {
	var refused *RefusedError
	if errors.As(err, &refused) {
		return "egress_refused"
	}
	return "network"
}

// noteRateLimitWait records, on the span of ctx, time spent waiting for the
// connection's token bucket (only a wait worth noting).
func noteRateLimitWait(ctx context.Context, waited time.Duration, attempt int) {
	if waited < time.Millisecond {
		return
	}
	span := trace.SpanFromContext(ctx)
	if !span.IsRecording() {
		return
	}
	span.AddEvent(EventRateLimitWait, trace.WithAttributes(attribute.Float64("wait.seconds", waited.Seconds()), attribute.Int("destination.attempt", attempt)))
}

// noteRetry records, on the span of ctx, that attempt failed retryably and
// the next comes after wait (the destination's Retry-After when it sent one).
func noteRetry(ctx context.Context, attempt int, wait, retryAfter time.Duration, err error) {
	span := trace.SpanFromContext(ctx)
	if !span.IsRecording() {
		return
	}
	attrs := []attribute.KeyValue{attribute.Int("destination.attempt", attempt), attribute.Float64("wait.seconds", wait.Seconds())}
	var de *Error
	if errors.As(err, &de) {
		if de.Status > 0 {
			attrs = append(attrs, attribute.Int("http.response.status_code", de.Status))
		}
		attrs = append(attrs, attribute.String("reason", de.Message))
	}
	if retryAfter > 0 {
		attrs = append(attrs, attribute.Float64("retry_after.seconds", retryAfter.Seconds()))
	}
	span.AddEvent(EventRetry, trace.WithAttributes(attrs...))
}

// defaultTracer is the process's tracer provider's (telemetry.Setup installs
// it); the global delegates, so a provider set later is still used.
func defaultTracer() trace.Tracer { return otel.Tracer(TracerScope) }
