// Package telemetry sets up OpenTelemetry traces and metrics (metrics served
// in Prometheus text format on /metrics) and slog JSON logs carrying trace ids.
package telemetry

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	otelprom "go.opentelemetry.io/otel/exporters/prometheus"
	"go.opentelemetry.io/otel/propagation"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.37.0"
	"go.opentelemetry.io/otel/trace"

	"github.com/seghub/seghub/pkg/telemetry/metrics"
)

// Telemetry holds the providers of one process.
type Telemetry struct {
	Tracer   *sdktrace.TracerProvider
	Meter    *sdkmetric.MeterProvider
	Registry *prometheus.Registry
	Logger   *slog.Logger
	// RootSpansSampled is whether a request without a sampled parent may
	// start a sampled trace: only when spans are exported (and TraceSample >
	// 0). Servers skip span work for the rest.
	RootSpansSampled bool
	// Metrics are the domain instruments (syncs, destinations, events,
	// targeting), one set for every service of the process.
	Metrics *metrics.Set
}

// Options configure Setup.
type Options struct {
	ServiceName  string
	OTLPEndpoint string
	// TraceSample is the share of root traces sampled.
	TraceSample float64
	LogLevel    string
	LogFormat   string
	LogOutput   io.Writer
	// SpanExporter, if set, receives spans (tests use an in-memory one).
	SpanExporter sdktrace.SpanExporter
}

// Setup creates the providers and installs them as the OpenTelemetry globals
// (the libraries we use read those) and returns a shutdown func.
func Setup(ctx context.Context, o Options) (*Telemetry, func(context.Context) error, error) {
	res := resource.NewSchemaless(semconv.ServiceName(o.ServiceName))
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	exp, err := otelprom.New(otelprom.WithRegisterer(reg))
	if err != nil {
		return nil, nil, err
	}
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(exp), sdkmetric.WithResource(res))
	set, err := metrics.New(mp.Meter("seghub"))
	if err != nil {
		return nil, nil, err
	}

	exporting := o.SpanExporter != nil || o.OTLPEndpoint != ""
	tpOpts := []sdktrace.TracerProviderOption{sdktrace.WithResource(res), sdktrace.WithSampler(Sampler(o.TraceSample, exporting))}
	if o.SpanExporter != nil {
		tpOpts = append(tpOpts, sdktrace.WithSyncer(o.SpanExporter))
	}
	if o.OTLPEndpoint != "" {
		te, err := otlptracegrpc.New(ctx, otlptracegrpc.WithEndpoint(o.OTLPEndpoint), otlptracegrpc.WithInsecure())
		if err != nil {
			return nil, nil, err
		}
		tpOpts = append(tpOpts, sdktrace.WithBatcher(te))
	}
	tp := sdktrace.NewTracerProvider(tpOpts...)
	otel.SetTracerProvider(tp)
	otel.SetMeterProvider(mp)
	otel.SetTextMapPropagator(propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{}))

	t := &Telemetry{Tracer: tp, Meter: mp, Registry: reg, Logger: NewLogger(o.LogOutput, o.LogLevel, o.LogFormat), RootSpansSampled: exporting && o.TraceSample > 0, Metrics: set}
	shutdown := func(ctx context.Context) error {
		return errors.Join(tp.Shutdown(ctx), mp.Shutdown(ctx))
	}
	return t, shutdown, nil
}

// Sampler is the root sampler: a span with a sampled parent is always
// sampled, one with an unsampled parent never. A root span is sampled at
// ratio, except a request's (server kind) root span when nothing exports
// spans: every lookup would record a span no one reads. Background work's
// roots (a sync run's trace) keep the ratio, so a span processor added later
// (tests) still sees them.
func Sampler(ratio float64, exporting bool) sdktrace.Sampler {
	root := sdktrace.TraceIDRatioBased(ratio)
	if !exporting {
		root = requestsUnsampled{root}
	}
	return sdktrace.ParentBased(root)
}

// requestsUnsampled drops server-kind roots and asks next about the rest.
type requestsUnsampled struct{ next sdktrace.Sampler }

func (s requestsUnsampled) ShouldSample(p sdktrace.SamplingParameters) sdktrace.SamplingResult {
	if p.Kind == trace.SpanKindServer {
		return sdktrace.SamplingResult{Decision: sdktrace.Drop, Tracestate: trace.SpanContextFromContext(p.ParentContext).TraceState()}
	}
	return s.next.ShouldSample(p)
}

func (s requestsUnsampled) Description() string {
	return "RequestsUnsampled{" + s.next.Description() + "}"
}

// MetricsHandler serves /metrics in Prometheus text format.
func (t *Telemetry) MetricsHandler() http.Handler {
	return promhttp.HandlerFor(t.Registry, promhttp.HandlerOpts{})
}

// NewLogger returns a slog logger whose records carry trace_id and span_id.
func NewLogger(w io.Writer, level, format string) *slog.Logger {
	if w == nil {
		w = io.Discard
	}
	var lv slog.Level
	switch strings.ToLower(level) {
	case "debug":
		lv = slog.LevelDebug
	case "warn":
		lv = slog.LevelWarn
	case "error":
		lv = slog.LevelError
	default:
		lv = slog.LevelInfo
	}
	opts := &slog.HandlerOptions{Level: lv}
	var h slog.Handler
	if format == "text" {
		h = slog.NewTextHandler(w, opts)
	} else {
		h = slog.NewJSONHandler(w, opts)
	}
	return slog.New(traceHandler{h})
}

// traceHandler adds the active span's ids to each record.
type traceHandler struct{ slog.Handler }

func (h traceHandler) Handle(ctx context.Context, r slog.Record) error {
	if sc := trace.SpanContextFromContext(ctx); sc.IsValid() {
		r.AddAttrs(slog.String("trace_id", sc.TraceID().String()), slog.String("span_id", sc.SpanID().String()))
	}
	return h.Handler.Handle(ctx, r)
}

func (h traceHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return traceHandler{h.Handler.WithAttrs(as)}
}

func (h traceHandler) WithGroup(name string) slog.Handler {
	return traceHandler{h.Handler.WithGroup(name)}
}
