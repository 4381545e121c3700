package natsbus_test

import (
	"context"
	"testing"

	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"

	"github.com/seghub/seghub/pkg/natsbus"
)

// A message published in a trace carries it: the consumer's context holds
// the publisher's span as its remote parent, and a message published
// outside any trace carries no trace header at all.
func TestTraceContextInHeaders(t *testing.T) {
	otel.SetTextMapPropagator(propagation.TraceContext{})
	tp := sdktrace.NewTracerProvider()
	ctx, span := tp.Tracer("test").Start(context.Background(), "publish")
	defer span.End()
	h := nats.Header{}
	natsbus.InjectTrace(ctx, h)
	got := trace.SpanContextFromContext(natsbus.ExtractTrace(context.Background(), h))
	if !got.IsRemote() || got.TraceID() != span.SpanContext().TraceID() || got.SpanID() != span.SpanContext().SpanID() || !got.IsSampled() {
		t.Fatalf("extracted %v from %v, want the publisher's span %v", got, h, span.SpanContext())
	}
	empty := nats.Header{}
	natsbus.InjectTrace(context.Background(), empty)
	if len(empty) != 0 {
		t.Fatalf("untraced publish wrote headers %v", empty)
	}
	if sc := trace.SpanContextFromContext(natsbus.ExtractTrace(context.Background(), empty)); sc.IsValid() {
		t.Fatalf("extracted %v from no headers", sc)
	}
}
