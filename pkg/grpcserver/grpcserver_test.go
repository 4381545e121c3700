package grpcserver

import (
	"bytes"
	"context"
	"errors"
	"net"
	"strings"
	"sync"
	"testing"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/seghub/seghub/pkg/apperr"
	"github.com/seghub/seghub/pkg/telemetry"
)

// syncBuffer is a log sink safe for the server's goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestInterceptors(t *testing.T) {
	logs := &syncBuffer{}
	log := telemetry.NewLogger(logs, "info", "json")
	srv := New(Options{Logger: log, TracerProvider: sdktrace.NewTracerProvider(), RootSpansSampled: true})
	var fn func() error
	desc := grpc.ServiceDesc{
		ServiceName: "test.Probe",
		HandlerType: (*any)(nil),
		Methods: []grpc.MethodDesc{{
			MethodName: "Call",
			Handler: func(_ any, ctx context.Context, dec func(any) error, ic grpc.UnaryServerInterceptor) (any, error) {
				in := new(emptypb.Empty)
				if err := dec(in); err != nil {
					return nil, err
				}
				h := func(ctx context.Context, req any) (any, error) {
					if err := fn(); err != nil {
						return nil, err
					}
					return &emptypb.Empty{}, nil
				}
				return ic(ctx, in, &grpc.UnaryServerInfo{FullMethod: "/test.Probe/Call"}, h)
			},
		}},
	}
	srv.RegisterService(&desc, struct{}{})
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- srv.Serve(ctx, lis) }()
	defer func() { cancel(); <-done }()
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()

	cases := []struct {
		name    string
		fn      func() error
		code    codes.Code
		msg     string
		hideMsg string
	}{
		{"ok", func() error { return nil }, codes.OK, "", ""},
		{"domain error keeps code and message", func() error { return apperr.NotFound("segment %q not found", "seg_1") }, codes.NotFound, `segment "seg_1" not found`, ""},
		{"field violation", func() error { return apperr.Invalid("name", "must not be blank") }, codes.InvalidArgument, "name: must not be blank", ""},
		{"unknown error is masked", func() error { return errors.New("pq: password=hunter2 syntax error") }, codes.Internal, "internal error", "hunter2"},
		{"panic becomes Internal", func() error { panic("boom") }, codes.Internal, "internal error", "boom"},
	}
	for _, c := range cases {
		fn = c.fn
		err := conn.Invoke(context.Background(), "/test.Probe/Call", &emptypb.Empty{}, &emptypb.Empty{})
		st := status.Convert(err)
		if st.Code() != c.code {
			t.Fatalf("%s: code = %v (%v), want %v", c.name, st.Code(), err, c.code)
		}
		if !strings.Contains(st.Message(), c.msg) {
			t.Errorf("%s: message %q lacks %q", c.name, st.Message(), c.msg)
		}
		if c.hideMsg != "" && strings.Contains(st.Message(), c.hideMsg) {
			t.Errorf("%s: message leaks %q: %q", c.name, c.hideMsg, st.Message())
		}
	}
	out := logs.String()
	if !strings.Contains(out, `"stack"`) || !strings.Contains(out, "boom") {
		t.Errorf("panic not logged with stack:\n%s", out)
	}
	if !strings.Contains(out, "hunter2") {
		t.Errorf("internal error not logged in full for operators:\n%s", out)
	}
	if !strings.Contains(out, `"trace_id"`) {
		t.Errorf("logs carry no trace ids:\n%s", out)
	}

	hc := healthpb.NewHealthClient(conn)
	resp, err := hc.Check(context.Background(), &healthpb.HealthCheckRequest{})
	if err != nil || resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("health = %v, %v", resp, err)
	}
}
