package relay

import (
	"context"

	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/seghub/seghub/pkg/natsbus"
)

// TracerScope names the relay's spans.
const TracerScope = "seghub/eventrelay"

// One event is one trace: its ingest request's span is the parent of
// "events.store", whose context every stored message carries in its
// headers; each sink records a "sink.deliver" span per attempt in that trace
// (linked to the "sink.batch" span that holds the HTTP calls, as one batch
// carries many events' traces), and a "sink.dead_letter" span when it gives
// up.
const (
	SpanStore      = "events.store"
	SpanSinkBatch  = "sink.batch"
	SpanDeliver    = "sink.deliver"
	SpanDeadLetter = "sink.dead_letter"
	SpanReplay     = "events.replay"
)

// maxBatchLinks bounds the links of one batch span (the SDK keeps 128 by
// default; more would be dropped anyway).
const maxBatchLinks = 128

func tracerOr(t trace.Tracer) trace.Tracer {
	if t != nil {
		return t
	}
	return otel.Tracer(TracerScope)
}

// traceHeader is ctx's trace context as message headers, computed once per
// published batch and shared by its messages (nil when ctx has no trace).
func traceHeader(ctx context.Context) nats.Header {
	h := nats.Header{}
	natsbus.InjectTrace(ctx, h)
	if len(h) == 0 {
		return nil
	}
	return h
}

// withTrace adds th's values to m's headers.
func withTrace(m *nats.Msg, th nats.Header) {
	for k, v := range th {
		m.Header[k] = v
	}
}

// startStore starts the span that stores n events.
func (p *Publisher) startStore(ctx context.Context, n int) (context.Context, trace.Span) {
	return tracerOr(p.tracer).Start(ctx, SpanStore, trace.WithSpanKind(trace.SpanKindProducer),
		trace.WithAttributes(attribute.Int("messaging.batch.message_count", n), attribute.String("messaging.destination.name", p.l.Stream)))
}

func endWithError(span trace.Span, err error) {
	if err != nil {
		span.SetStatus(codes.Error, err.Error())
	}
	span.End()
}

// delivery is the tracing of one batch a sink sends.
type delivery struct {
	batch  trace.Span
	events [][]trace.Span // per UserEvents, per event; nil where untraced
}

// startDelivery opens the batch span (linked to each event's trace) and,
// for each event stored in a trace, its deliver span in that trace; the
// event's span becomes the context its own requests run in (deliverEach).
func (s *Sink) startDelivery(ctx context.Context, b *sent) (context.Context, *delivery) {
	t := tracerOr(s.o.Tracer)
	var links []trace.Link
	n := 0
	for _, hs := range b.held {
		for _, h := range hs {
			n++
			if h.parent.IsSampled() && len(links) < maxBatchLinks {
				links = append(links, trace.Link{SpanContext: h.parent})
			}
		}
	}
	sinkAttrs := []attribute.KeyValue{attribute.String("sink.connection_id", s.o.ConnectionID), attribute.String("sink.type", s.o.Type)}
	ctx, batch := t.Start(ctx, SpanSinkBatch, trace.WithNewRoot(), trace.WithLinks(links...),
		trace.WithAttributes(append(sinkAttrs, attribute.Int("messaging.batch.message_count", n))...))
	d := &delivery{batch: batch, events: make([][]trace.Span, len(b.held))}
	batchLink := trace.Link{SpanContext: batch.SpanContext()}
	for i, hs := range b.held {
		d.events[i] = make([]trace.Span, len(hs))
		for j, h := range hs {
			h.env.span = nil
			// An unsampled event's spans would record nothing: skip them
			// rather than pay for one per event.
			if !h.parent.IsSampled() {
				continue
			}
			_, sp := t.Start(trace.ContextWithRemoteSpanContext(ctx, h.parent), SpanDeliver, trace.WithSpanKind(trace.SpanKindConsumer),
				trace.WithLinks(batchLink), trace.WithAttributes(append(sinkAttrs, attribute.String("event.id", h.env.ID))...))
			d.events[i][j], h.env.span = sp, sp
		}
	}
	return ctx, d
}

// end records each event's outcome and closes the spans.
func (d *delivery) end(results []Result) {
	failed := 0
	for i, spans := range d.events {
		res := Result{Err: sinkError("no result")}
		if i < len(results) {
			res = results[i]
		}
		for j, sp := range spans {
			if j >= res.Delivered {
				failed++
			}
			if sp == nil {
				continue
			}
			if j < res.Delivered {
				sp.SetAttributes(attribute.String("delivery.outcome", "delivered"))
			} else {
				sp.SetAttributes(attribute.String("delivery.outcome", "failed"))
				if res.RetryAfter > 0 {
					sp.SetAttributes(attribute.Float64("retry_after.seconds", res.RetryAfter.Seconds()))
				}
				if res.Err != nil {
					sp.SetStatus(codes.Error, res.Err.Error())
				}
			}
			sp.End()
		}
	}
	d.batch.SetAttributes(attribute.Int("delivery.failed", failed))
	if failed > 0 {
		d.batch.SetStatus(codes.Error, "some events not delivered")
	}
	d.batch.End()
}

// eventContext is the context one event's own destination requests run in:
// its deliver span when it is traced, else ctx (the batch's).
func eventContext(ctx context.Context, e *Envelope) context.Context {
	if e.span == nil {
		return ctx
	}
	return trace.ContextWithSpan(ctx, e.span)
}

// traceDeadLetter records in the event's trace that the sink gave up on it:
// the returned context carries that span (the dead letter keeps its
// traceparent) and end closes it with the recording's outcome.
func (s *Sink) traceDeadLetter(ctx context.Context, h *held, reason string, attempts int) (context.Context, func(error)) {
	if !h.parent.IsValid() {
		return ctx, func(error) {}
	}
	ctx, sp := tracerOr(s.o.Tracer).Start(trace.ContextWithRemoteSpanContext(ctx, h.parent), SpanDeadLetter,
		trace.WithAttributes(attribute.String("sink.connection_id", s.o.ConnectionID), attribute.String("event.id", h.env.ID),
			attribute.Int("delivery.attempts", attempts), attribute.String("dead_letter.reason", reason)))
	return ctx, func(err error) {
		if err != nil {
			sp.SetStatus(codes.Error, "dead letter not recorded: "+err.Error())
		}
		sp.End()
	}
}

// TraceParent is ctx's span context as a W3C traceparent ("" without one).
func TraceParent(ctx context.Context) string {
	m := propagation.MapCarrier{}
	propagation.TraceContext{}.Inject(ctx, m)
	return m["traceparent"]
}

// startReplay starts the span that republishes a dead letter for sink: in
// the event's trace (traceParent) when there is one, linked to the replay
// request; else under the request.
func (p *Publisher) startReplay(ctx context.Context, traceParent, sink string) (context.Context, trace.Span) {
	opts := []trace.SpanStartOption{trace.WithSpanKind(trace.SpanKindProducer), trace.WithAttributes(attribute.String("sink.connection_id", sink))}
	if traceParent != "" {
		event := trace.SpanContextFromContext(propagation.TraceContext{}.Extract(context.Background(), propagation.MapCarrier{"traceparent": traceParent}))
		if event.IsValid() {
			if req := trace.SpanContextFromContext(ctx); req.IsValid() {
				opts = append(opts, trace.WithLinks(trace.Link{SpanContext: req}))
			}
			ctx = trace.ContextWithRemoteSpanContext(ctx, event)
		}
	}
	return tracerOr(p.tracer).Start(ctx, SpanReplay, opts...)
}
