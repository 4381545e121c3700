// Package grpcserver builds seghub's gRPC servers: one ordered interceptor
// chain (recovery → error mapping → logging → auth → validation), OpenTelemetry
// stats, health and reflection, and graceful shutdown.
package grpcserver

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"runtime"
	"runtime/debug"
	"sync"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/reflection"
	"google.golang.org/grpc/status"

	"github.com/seghub/seghub/pkg/apperr"
	"github.com/seghub/seghub/pkg/auth"
)

// Options configure New.
type Options struct {
	Logger        *slog.Logger
	Authenticator *auth.Authenticator
	MeterProvider metric.MeterProvider
	// TracerProvider may be nil for the global provider.
	TracerProvider trace.TracerProvider
	// TLS, when set, serves gRPC over TLS.
	TLS credentials.TransportCredentials
	// Propagator reads callers' trace context; nil means the global one.
	Propagator propagation.TextMapPropagator
	// RootSpansSampled is whether a call without a sampled parent may start
	// a sampled trace (telemetry.Telemetry.RootSpansSampled). When false,
	// calls without a sampled parent record metrics only.
	RootSpansSampled bool
	// MaxRecvMsgSize bounds each received message (a larger one is refused
	// ResourceExhausted before it is decoded); 0 means 16 MiB.
	MaxRecvMsgSize int
}

// Server is a gRPC server with seghub's bootstrap.
type Server struct {
	*grpc.Server
	Health *health.Server
	// Ready holds the dependency checks a health check of a service runs.
	Ready *Readiness
	log   *slog.Logger
	// stats and unary are what every call runs through; InProcess calls
	// run them too.
	stats *rpcStats
	unary grpc.UnaryServerInterceptor
	ids   *identifierChecks

	mu    sync.RWMutex
	local map[string]localMethod // full method name -> handler, for InProcess
}

// New returns a server with the standard chain, health and reflection.
// Register services on it, then call Serve.
func New(o Options) *Server {
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.MaxRecvMsgSize == 0 {
		o.MaxRecvMsgSize = 16 << 20
	}
	served := &servedMethods{}
	if o.Propagator == nil {
		o.Propagator = otel.GetTextMapPropagator()
	}
	st := newRPCStats(o, served, o.Propagator)
	// Recovery, error mapping and logging are one interceptor (in that order,
	// outermost first): fewer frames on every call's stack.
	unary := []grpc.UnaryServerInterceptor{standardUnary(o.Logger)}
	stream := []grpc.StreamServerInterceptor{recoverStream(o.Logger), mapErrorsStream(o.Logger), logStream(o.Logger)}
	if o.Authenticator != nil {
		unary = append(unary, o.Authenticator.UnaryServerInterceptor())
		stream = append(stream, o.Authenticator.StreamServerInterceptor())
	}
	ids := &identifierChecks{}
	unary = append(unary, ids.validateUnary)
	stream = append(stream, ids.validateStream)
	opts := []grpc.ServerOption{
		grpc.StatsHandler(st),
		grpc.ChainUnaryInterceptor(unary...),
		grpc.ChainStreamInterceptor(stream...),
		grpc.MaxRecvMsgSize(o.MaxRecvMsgSize),
		// Reused workers keep their grown stacks; a fresh goroutine per RPC
		// grows its stack through the interceptor chain. A call finding every
		// worker busy gets a fresh goroutine, so there are enough workers for
		// a few hundred concurrent calls (idle ones cost their stack only).
		grpc.NumStreamWorkers(uint32(max(256, 32*runtime.GOMAXPROCS(0)))),
	}
	if o.TLS != nil {
		opts = append(opts, grpc.Creds(o.TLS))
	}
	s := &Server{Server: grpc.NewServer(opts...), Health: health.NewServer(), Ready: &Readiness{}, log: o.Logger, stats: st, unary: chainUnary(unary), ids: ids, local: map[string]localMethod{}}
	served.srv = s.Server
	healthpb.RegisterHealthServer(s.Server, readyHealth{s.Health, s.Ready})
	reflection.Register(s.Server)
	return s
}

// Serve serves on lis until ctx is cancelled, then stops gracefully (bounded
// by 10 s, after which open streams are cut).
func (s *Server) Serve(ctx context.Context, lis net.Listener) error {
	errc := make(chan error, 1)
	go func() { errc <- s.Server.Serve(lis) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	s.Health.Shutdown()
	done := make(chan struct{})
	go func() { s.GracefulStop(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		s.Stop()
	}
	return nil
}

// standardUnary recovers from a handler's panic (Internal), maps the
// handler's error to a status (MapError) and logs the call with the error
// as the handler returned it.
func standardUnary(log *slog.Logger) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (resp any, err error) {
		defer func() {
			if r := recover(); r != nil {
				log.ErrorContext(ctx, "panic in handler", "method", info.FullMethod, "panic", fmt.Sprint(r), "stack", string(debug.Stack()))
				resp, err = nil, status.Error(codes.Internal, "internal error")
			}
		}()
		start := time.Now()
		resp, err = h(ctx, req)
		logCall(ctx, log, info.FullMethod, start, err)
		if err != nil {
			return nil, MapError(ctx, log, info.FullMethod, err)
		}
		return resp, nil
	}
}

// chainUnary is grpc.ChainUnaryInterceptor's chain as one interceptor, for
// InProcess calls.
func chainUnary(is []grpc.UnaryServerInterceptor) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		return is[0](ctx, req, info, next(is, 0, info, h))
	}
}

func next(is []grpc.UnaryServerInterceptor, i int, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) grpc.UnaryHandler {
	if i == len(is)-1 {
		return h
	}
	return func(ctx context.Context, req any) (any, error) {
		return is[i+1](ctx, req, info, next(is, i+1, info, h))
	}
}

func recoverStream(log *slog.Logger) grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) (err error) {
		defer func() {
			if r := recover(); r != nil {
				log.ErrorContext(ss.Context(), "panic in handler", "method", info.FullMethod, "panic", fmt.Sprint(r), "stack", string(debug.Stack()))
				err = status.Error(codes.Internal, "internal error")
			}
		}()
		return h(srv, ss)
	}
}

// MapError turns any handler error into a gRPC status. Domain errors keep
// their code and message; unknown errors are logged in full and answered as
// Internal without their text, which may hold SQL or secrets.
func MapError(ctx context.Context, log *slog.Logger, method string, err error) error {
	if err == nil {
		return nil
	}
	var ae *apperr.Error
	if errors.As(err, &ae) {
		if ae.Code == codes.Internal || ae.Code == codes.Unknown {
			log.ErrorContext(ctx, "internal error", "method", method, "error", err.Error())
		}
		return ae.GRPCStatus().Err()
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	switch {
	case errors.Is(err, context.Canceled):
		return status.Error(codes.Canceled, "request cancelled")
	case errors.Is(err, context.DeadlineExceeded):
		return status.Error(codes.DeadlineExceeded, "deadline exceeded")
	}
	// The reference the caller can quote: the trace id, or (for a call that
	// is not traced) a random one, logged with the error.
	var ref string
	if sc := trace.SpanContextFromContext(ctx); sc.HasTraceID() {
		ref = sc.TraceID().String()
		log.ErrorContext(ctx, "internal error", "method", method, "error", err.Error())
	} else {
		ref = rand.Text()
		log.ErrorContext(ctx, "internal error", "method", method, "error", err.Error(), "ref", ref)
	}
	return status.Errorf(codes.Internal, "internal error (trace %s)", ref)
}

func mapErrorsStream(log *slog.Logger) grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
		return MapError(ss.Context(), log, info.FullMethod, h(srv, ss))
	}
}

func logStream(log *slog.Logger) grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
		start := time.Now()
		err := h(srv, ss)
		logCall(ss.Context(), log, info.FullMethod, start, err)
		return err
	}
}

func logCall(ctx context.Context, log *slog.Logger, method string, start time.Time, err error) {
	code := apperr.Code(err)
	switch {
	case err == nil:
		code = codes.OK
	case errors.Is(err, context.Canceled):
		code = codes.Canceled
	case errors.Is(err, context.DeadlineExceeded):
		code = codes.DeadlineExceeded
	}
	level := slog.LevelDebug
	if code != codes.OK {
		level = slog.LevelInfo
	}
	if code == codes.Internal || code == codes.Unknown {
		level = slog.LevelError
	}
	if !log.Enabled(ctx, level) {
		return
	}
	attrs := []slog.Attr{slog.String("method", method), slog.String("code", code.String()), slog.Duration("duration", time.Since(start))}
	if err != nil {
		attrs = append(attrs, slog.String("error", status.Convert(err).Message()))
	}
	log.LogAttrs(ctx, level, "rpc", attrs...)
}

// validator is implemented by request messages that check themselves.
type validator interface{ Validate() error }

func (c *identifierChecks) validateUnary(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	if err := c.checkRequest(ctx, req); err != nil {
		return nil, err
	}
	if v, ok := req.(validator); ok {
		if err := v.Validate(); err != nil {
			return nil, err
		}
	}
	return h(ctx, req)
}

// servedMethods is the set of full method names registered on a server, read
// once at the first call (services are registered before Serve).
type servedMethods struct {
	srv     *grpc.Server
	once    sync.Once
	methods map[string]bool
}

func (m *servedMethods) has(fullMethod string) bool {
	m.once.Do(func() {
		m.methods = map[string]bool{}
		for svc, info := range m.srv.GetServiceInfo() {
			for _, md := range info.Methods {
				m.methods["/"+svc+"/"+md.Name] = true
			}
		}
	})
	return m.methods[fullMethod]
}
