package grpcserver

import (
	"context"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/propagation"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/semconv/v1.43.0/rpcconv"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/stats"
	"google.golang.org/grpc/status"
)

// rpcStats is the server's stats handler. A call that is traced (its caller's
// span is sampled, or root spans may be sampled) goes through otelgrpc, which
// records its span and the rpc.server.call.duration histogram. Every other
// call records only that histogram, with an attribute set built once per
// method and status: otelgrpc's per-call method parsing, span start and
// attribute hashing were ~30 % of a CheckMembership's server CPU.
type rpcStats struct {
	otel        stats.Handler
	served      *servedMethods
	rootSampled bool
	propagator  propagation.TextMapPropagator
	duration    metric.Float64Histogram
	// fast is false when otelgrpc is asked for the old or both semantic
	// conventions (OTEL_SEMCONV_STABILITY_OPT_IN): it alone knows them.
	fast bool
	sets sync.Map // setKey -> attribute.Set
	// unserved marks calls of methods this server does not serve.
	unserved *fastRPC
}

type setKey struct {
	method string
	code   codes.Code
}

// fastRPC is the state of an untraced call.
type fastRPC struct{ method string }

type fastKey struct{}

func newRPCStats(o Options, served *servedMethods, propagator propagation.TextMapPropagator) *rpcStats {
	var otelOpts []otelgrpc.Option
	mp := o.MeterProvider
	if mp != nil {
		otelOpts = append(otelOpts, otelgrpc.WithMeterProvider(mp))
	}
	if o.TracerProvider != nil {
		otelOpts = append(otelOpts, otelgrpc.WithTracerProvider(o.TracerProvider))
	}
	otelOpts = append(otelOpts, otelgrpc.WithPropagators(propagator))
	// Any caller can name any method: only methods served here become metric
	// series and spans.
	otelOpts = append(otelOpts, otelgrpc.WithFilter(func(info *stats.RPCTagInfo) bool { return served.has(info.FullMethodName) }))
	s := &rpcStats{otel: otelgrpc.NewServerHandler(otelOpts...), served: served, rootSampled: o.RootSpansSampled, propagator: propagator, unserved: &fastRPC{}}
	mode := os.Getenv("OTEL_SEMCONV_STABILITY_OPT_IN")
	s.fast = !strings.Contains(mode, "rpc/old") && !strings.Contains(mode, "rpc/dup")
	if mp == nil {
		mp = noop.NewMeterProvider()
	}
	// The same instrument otelgrpc records (same scope, name and buckets), so
	// fast and traced calls land in one series.
	meter := mp.Meter("go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc",
		metric.WithInstrumentationVersion(otelgrpc.Version), metric.WithSchemaURL(semconv.SchemaURL))
	d, err := rpcconv.NewServerCallDuration(meter, metric.WithExplicitBucketBoundaries(0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10))
	if err != nil {
		s.fast = false
	}
	s.duration = d.Inst()
	return s
}

// traced reports whether a call with this context may record a span.
func (s *rpcStats) traced(ctx context.Context) bool {
	if !s.fast || s.rootSampled {
		return true
	}
	if trace.SpanContextFromContext(ctx).IsSampled() {
		return true // in-process call under a sampled span
	}
	// Only a caller that sent trace context can have a sampled parent.
	if len(metadata.ValueFromIncomingContext(ctx, "traceparent")) == 0 {
		return false
	}
	return trace.SpanContextFromContext(s.propagator.Extract(ctx, mdCarrier{ctx})).IsSampled()
}

// TagRPC implements stats.Handler.
func (s *rpcStats) TagRPC(ctx context.Context, info *stats.RPCTagInfo) context.Context {
	if s.traced(ctx) {
		return s.otel.TagRPC(ctx, info)
	}
	if !s.served.has(info.FullMethodName) {
		// Any caller can name any method: no series for unserved ones.
		return context.WithValue(ctx, fastKey{}, s.unserved)
	}
	return context.WithValue(ctx, fastKey{}, &fastRPC{method: info.FullMethodName})
}

// HandleRPC implements stats.Handler.
func (s *rpcStats) HandleRPC(ctx context.Context, rs stats.RPCStats) {
	f, ok := ctx.Value(fastKey{}).(*fastRPC)
	if !ok {
		s.otel.HandleRPC(ctx, rs)
		return
	}
	if end, ok := rs.(*stats.End); ok && f != s.unserved {
		s.record(ctx, f.method, status.Code(end.Error), end.EndTime.Sub(end.BeginTime))
	}
}

func (s *rpcStats) record(ctx context.Context, method string, code codes.Code, d time.Duration) {
	if !s.duration.Enabled(ctx) {
		return
	}
	k := setKey{method, code}
	v, ok := s.sets.Load(k)
	if !ok {
		attrs := []attribute.KeyValue{semconv.RPCMethod(strings.TrimPrefix(method, "/")), semconv.RPCSystemNameGRPC, semconv.RPCResponseStatusCode(canonicalCode(code))}
		switch code {
		case codes.Unknown, codes.DeadlineExceeded, codes.Unimplemented, codes.Internal, codes.Unavailable, codes.DataLoss:
			attrs = append(attrs, semconv.ErrorTypeKey.String(canonicalCode(code)))
		}
		// Only served methods get here, so the map stays as small as the
		// contract (methods × codes).
		v, _ = s.sets.LoadOrStore(k, attribute.NewSet(attrs...))
	}
	set := v.(attribute.Set)
	s.duration.Record(ctx, d.Seconds(), metric.WithAttributeSet(set))
}

// TagConn implements stats.Handler.
func (s *rpcStats) TagConn(ctx context.Context, info *stats.ConnTagInfo) context.Context {
	return s.otel.TagConn(ctx, info)
}

// HandleConn implements stats.Handler.
func (s *rpcStats) HandleConn(ctx context.Context, cs stats.ConnStats) { s.otel.HandleConn(ctx, cs) }

// mdCarrier reads trace context from incoming metadata without copying it.
type mdCarrier struct{ ctx context.Context }

func (c mdCarrier) Get(k string) string {
	if v := metadata.ValueFromIncomingContext(c.ctx, k); len(v) > 0 {
		return v[0]
	}
	return ""
}
func (mdCarrier) Set(string, string) {}
func (c mdCarrier) Keys() []string {
	md, _ := metadata.FromIncomingContext(c.ctx)
	out := make([]string, 0, len(md))
	for k := range md {
		out = append(out, k)
	}
	return out
}

// canonicalCode is the status code as the semantic conventions spell it.
func canonicalCode(c codes.Code) string {
	switch c {
	case codes.OK:
		return "OK"
	case codes.Canceled:
		return "CANCELLED"
	case codes.Unknown:
		return "UNKNOWN"
	case codes.InvalidArgument:
		return "INVALID_ARGUMENT"
	case codes.DeadlineExceeded:
		return "DEADLINE_EXCEEDED"
	case codes.NotFound:
		return "NOT_FOUND"
	case codes.AlreadyExists:
		return "ALREADY_EXISTS"
	case codes.PermissionDenied:
		return "PERMISSION_DENIED"
	case codes.ResourceExhausted:
		return "RESOURCE_EXHAUSTED"
	case codes.FailedPrecondition:
		return "FAILED_PRECONDITION"
	case codes.Aborted:
		return "ABORTED"
	case codes.OutOfRange:
		return "OUT_OF_RANGE"
	case codes.Unimplemented:
		return "UNIMPLEMENTED"
	case codes.Internal:
		return "INTERNAL"
	case codes.Unavailable:
		return "UNAVAILABLE"
	case codes.DataLoss:
		return "DATA_LOSS"
	case codes.Unauthenticated:
		return "UNAUTHENTICATED"
	}
	return "CODE(" + strconv.Itoa(int(c)) + ")"
}
