package grpcserver

import (
	"context"
	"errors"
	"net"
	"regexp"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel/propagation"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	authv1 "github.com/seghub/seghub/gen/seghub/auth/v1"
	targetingv1 "github.com/seghub/seghub/gen/seghub/targeting/v1"
	"github.com/seghub/seghub/pkg/auth"
	"github.com/seghub/seghub/pkg/telemetry"
)

type keys map[string]auth.Principal

func (k keys) ResolveKeyHash(_ context.Context, hash string) (auth.Principal, error) {
	for secret, p := range k {
		if auth.HashSecret(secret) == hash {
			return p, nil
		}
	}
	return auth.Principal{}, auth.ErrUnknownKey
}

// lookups answers is_member = "the caller's environment is env_a"; user ids
// "fail" and "panic" make it fail.
type lookups struct {
	targetingv1.UnimplementedTargetingServiceServer
}

func (lookups) CheckMembership(ctx context.Context, req *targetingv1.CheckMembershipRequest) (*targetingv1.CheckMembershipResponse, error) {
	switch req.GetUserId() {
	case "fail":
		return nil, errors.New("pq: password=hunter2")
	case "panic":
		panic("boom")
	}
	return &targetingv1.CheckMembershipResponse{IsMember: auth.MustEnvironment(ctx) == "env_a", IndexVersion: 7}, nil
}

type probe struct {
	srv     *Server
	logs    *syncBuffer
	spans   *tracetest.SpanRecorder
	tp      *sdktrace.TracerProvider
	metrics *sdkmetric.ManualReader
}

func newProbe(t *testing.T) *probe {
	p := &probe{logs: &syncBuffer{}, spans: tracetest.NewSpanRecorder(), metrics: sdkmetric.NewManualReader()}
	// As the all-in-one without an exporter: roots are not sampled, sampled
	// parents are followed.
	p.tp = sdktrace.NewTracerProvider(sdktrace.WithSampler(telemetry.Sampler(1, false)), sdktrace.WithSpanProcessor(p.spans))
	p.srv = New(Options{
		Logger:         telemetry.NewLogger(p.logs, "debug", "json"),
		Authenticator:  auth.NewAuthenticator(keys{"key-a-member-0123": {EnvironmentID: "env_a", KeyID: "k1", Role: authv1.Role_ROLE_MEMBER}, "key-b-member-0123": {EnvironmentID: "env_b", KeyID: "k2", Role: authv1.Role_ROLE_MEMBER}}, ""),
		TracerProvider: p.tp,
		Propagator:     propagation.TraceContext{},
		MeterProvider:  sdkmetric.NewMeterProvider(sdkmetric.WithReader(p.metrics)),
	})
	targetingv1.RegisterTargetingServiceServer(p.srv, lookups{})
	return p
}

func withKey(ctx context.Context, key string) context.Context {
	return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+key)
}

// durationPoints counts rpc.server.call.duration observations by status.
func (p *probe) durationPoints(t *testing.T) map[string]uint64 {
	var rm metricdata.ResourceMetrics
	if err := p.metrics.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	out := map[string]uint64{}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			h, ok := m.Data.(metricdata.Histogram[float64])
			if m.Name != "rpc.server.call.duration" || !ok {
				continue
			}
			for _, dp := range h.DataPoints {
				method, _ := dp.Attributes.Value("rpc.method")
				code, _ := dp.Attributes.Value("rpc.response.status_code")
				out[method.AsString()+" "+code.AsString()] += dp.Count
			}
		}
	}
	return out
}

// An in-process call is checked exactly like one over the network: auth and
// the caller's environment, identifier validation, error mapping and
// masking, panics, metrics; and a call under a sampled span gets its own
// span in that trace.
func TestInProcessRunsTheServerChain(t *testing.T) {
	p := newProbe(t)
	c := targetingv1.NewTargetingServiceClient(p.srv.InProcess())
	ctx := context.Background()
	check := func(ctx context.Context, user string) (*targetingv1.CheckMembershipResponse, error) {
		return c.CheckMembership(ctx, &targetingv1.CheckMembershipRequest{SegmentId: "seg_1", UserId: user})
	}

	if _, err := check(ctx, "u1"); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("no key: %v, want Unauthenticated", err)
	}
	if _, err := check(withKey(ctx, "not-a-key-0123456"), "u1"); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("unknown key: %v, want Unauthenticated", err)
	}
	r, err := check(withKey(ctx, "key-a-member-0123"), "u1")
	if err != nil || !r.GetIsMember() || r.GetIndexVersion() != 7 {
		t.Fatalf("env A: %v, %v", r, err)
	}
	r, err = check(withKey(ctx, "key-b-member-0123"), "u1")
	if err != nil || r.GetIsMember() {
		t.Fatalf("env B's key must act for env B: %v, %v", r, err)
	}
	_, err = check(withKey(ctx, "key-a-member-0123"), "u\x01")
	st := status.Convert(err)
	if st.Code() != codes.InvalidArgument || len(st.Details()) == 0 || st.Details()[0].(*errdetails.BadRequest).GetFieldViolations()[0].GetField() != "user_id" {
		t.Fatalf("control character: %v %v, want InvalidArgument on user_id", st.Code(), st.Details())
	}
	_, err = check(withKey(ctx, "key-a-member-0123"), "fail")
	st = status.Convert(err)
	ref := regexp.MustCompile(`internal error \(trace (\w+)\)`).FindStringSubmatch(st.Message())
	if st.Code() != codes.Internal || ref == nil || strings.Contains(st.Message(), "hunter2") {
		t.Fatalf("unknown error: %v, want Internal with a reference and no text", err)
	}
	if !strings.Contains(p.logs.String(), ref[1]) || !strings.Contains(p.logs.String(), "hunter2") {
		t.Fatalf("the reference %s and the error are not in the log:\n%s", ref[1], p.logs)
	}
	if _, err := check(withKey(ctx, "key-a-member-0123"), "panic"); status.Code(err) != codes.Internal {
		t.Fatalf("panic: %v, want Internal", err)
	}
	if len(p.spans.Ended()) != 0 {
		t.Fatalf("untraced calls recorded %d spans", len(p.spans.Ended()))
	}
	got := p.durationPoints(t)
	const m = "seghub.targeting.v1.TargetingService/CheckMembership"
	for code, n := range map[string]uint64{"OK": 2, "UNAUTHENTICATED": 2, "INVALID_ARGUMENT": 1, "INTERNAL": 2} {
		if got[m+" "+code] != n {
			t.Errorf("rpc.server.call.duration{%s} = %d observations, want %d (all: %v)", code, got[m+" "+code], n, got)
		}
	}

	// Under a sampled parent (always sampled here: the parent is given).
	pctx, parent := sdktrace.NewTracerProvider(sdktrace.WithSampler(sdktrace.AlwaysSample())).Tracer("test").Start(ctx, "GET /v1/targeting/...")
	if _, err := check(withKey(pctx, "key-a-member-0123"), "u1"); err != nil {
		t.Fatal(err)
	}
	parent.End()
	spans := p.spans.Ended()
	if len(spans) != 1 || spans[0].Name() != m || spans[0].Parent().SpanID() != parent.SpanContext().SpanID() || spans[0].SpanContext().TraceID() != parent.SpanContext().TraceID() {
		t.Fatalf("traced call: spans %v, want one %s child of the caller's span", spans, m)
	}
	if got := p.durationPoints(t)[m+" OK"]; got != 3 {
		t.Errorf("traced call not counted: %d OK observations, want 3", got)
	}
}

// Over the network, a caller's sampled trace context is followed and an
// unsampled one is not.
func TestRemoteParentSampling(t *testing.T) {
	p := newProbe(t)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- p.srv.Serve(ctx, lis) }()
	defer func() { cancel(); <-done }()
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	c := targetingv1.NewTargetingServiceClient(conn)
	const traceID = "4bf92f3577b34da6a3ce929d0e0e4736"
	for _, flags := range []string{"00", "01"} {
		ctx := metadata.AppendToOutgoingContext(withKey(context.Background(), "key-a-member-0123"), "traceparent", "00-"+traceID+"-00f067aa0ba902b7-"+flags)
		if _, err := c.CheckMembership(ctx, &targetingv1.CheckMembershipRequest{SegmentId: "s", UserId: "u"}); err != nil {
			t.Fatal(err)
		}
	}
	// The server records a call after its response is on the wire: wait for
	// both calls to be counted before reading.
	for deadline := time.Now().Add(5 * time.Second); p.durationPoints(t)["seghub.targeting.v1.TargetingService/CheckMembership OK"] < 2 || len(p.spans.Ended()) < 1; {
		if time.Now().After(deadline) {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	spans := p.spans.Ended()
	if len(spans) != 1 || spans[0].SpanContext().TraceID().String() != traceID || spans[0].SpanKind() != trace.SpanKindServer {
		t.Fatalf("spans %v: want one server span in the sampled caller's trace", spans)
	}

	// A method no one serves makes no series (any caller can name one).
	err = conn.Invoke(withKey(context.Background(), "key-a-member-0123"), "/evil.Service/Method"+strings.Repeat("x", 10), &targetingv1.CheckMembershipRequest{}, &targetingv1.CheckMembershipResponse{})
	if status.Code(err) != codes.Unimplemented {
		t.Fatalf("unknown method: %v", err)
	}
	if got := p.durationPoints(t); len(got) != 1 || got["seghub.targeting.v1.TargetingService/CheckMembership OK"] != 2 {
		t.Fatalf("series %v: want only CheckMembership OK (2 calls)", got)
	}
}
