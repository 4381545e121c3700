package syncengine

import (
	"context"
	"encoding/json"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
)

// A run is a trace of its own (a long run must not hang under a request
// that ended long ago), linked to the request that queued it: the job
// carries that request's trace context in its metadata, and the run's
// root span links to it.

// jobPropagator writes what jobMetadata reads, whatever the process's
// global propagator is.
var jobPropagator = propagation.TraceContext{}

// jobMetadata is the River job metadata carrying ctx's trace context (nil
// when ctx has none).
func jobMetadata(ctx context.Context) []byte {
	if !trace.SpanContextFromContext(ctx).IsValid() {
		return nil
	}
	m := propagation.MapCarrier{}
	jobPropagator.Inject(ctx, m)
	b, err := json.Marshal(map[string]map[string]string{"trace": m})
	if err != nil {
		return nil
	}
	return b
}

// queuedBy is the span context a job's metadata carries (invalid when none).
func queuedBy(metadata []byte) trace.SpanContext {
	var m struct {
		Trace map[string]string `json:"trace"`
	}
	if len(metadata) == 0 || json.Unmarshal(metadata, &m) != nil || len(m.Trace) == 0 {
		return trace.SpanContext{}
	}
	return trace.SpanContextFromContext(jobPropagator.Extract(context.Background(), propagation.MapCarrier(m.Trace)))
}

type queuedByKey struct{}

// withQueuedBy hands Execute the span context of the request that queued
// the run.
func withQueuedBy(ctx context.Context, sc trace.SpanContext) context.Context {
	if !sc.IsValid() {
		return ctx
	}
	return context.WithValue(ctx, queuedByKey{}, sc)
}

// runSpanOptions start a run's root span, linked to its queuing request.
func runSpanOptions(ctx context.Context, attrs ...attribute.KeyValue) []trace.SpanStartOption {
	opts := []trace.SpanStartOption{trace.WithNewRoot(), trace.WithAttributes(attrs...)}
	if sc, ok := ctx.Value(queuedByKey{}).(trace.SpanContext); ok {
		opts = append(opts, trace.WithLinks(trace.Link{SpanContext: sc, Attributes: []attribute.KeyValue{attribute.String("link.kind", "queued_by")}}))
	}
	return opts
}
