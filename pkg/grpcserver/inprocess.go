package grpcserver

import (
	"context"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/stats"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// RegisterService implements grpc.ServiceRegistrar: the service is served over
// the network and remembered for InProcess calls.
func (s *Server) RegisterService(desc *grpc.ServiceDesc, impl any) {
	s.Server.RegisterService(desc, impl)
	s.mu.Lock()
	defer s.mu.Unlock()
	for i := range desc.Methods {
		m := &desc.Methods[i]
		s.local["/"+desc.ServiceName+"/"+m.MethodName] = localMethod{impl: impl, handler: m.Handler}
	}
}

type localMethod struct {
	impl    any
	handler grpc.MethodHandler
}

// InProcess returns a connection to this server's unary methods that skips the
// network: a call runs the same stats handler (metrics, spans of sampled
// calls) and the same interceptor chain (recovery, error mapping, logging,
// auth, validation) as one that arrived over gRPC, with the caller's outgoing
// metadata as the incoming metadata. The gateway uses it when it shares a
// process with a service, so a REST lookup is not also an HTTP/2 round trip.
// Streaming methods are refused (Unimplemented): callers stream over the
// network.
func (s *Server) InProcess() grpc.ClientConnInterface { return inProcess{s} }

type inProcess struct{ s *Server }

// Invoke implements grpc.ClientConnInterface.
func (c inProcess) Invoke(ctx context.Context, method string, args, reply any, opts ...grpc.CallOption) error {
	c.s.mu.RLock()
	m, ok := c.s.local[method]
	c.s.mu.RUnlock()
	if !ok {
		return status.Errorf(codes.Unimplemented, "unknown method %s", method)
	}
	in, ok := args.(proto.Message)
	if !ok {
		return status.Errorf(codes.Internal, "in-process call of %s with a %T", method, args)
	}
	out, ok := reply.(proto.Message)
	if !ok {
		return status.Errorf(codes.Internal, "in-process call of %s answered into a %T", method, reply)
	}
	// What a server sees: the client's metadata as incoming, none outgoing (a
	// handler's own calls must not forward the caller's key).
	md, _ := metadata.FromOutgoingContext(ctx)
	ctx = metadata.NewIncomingContext(metadata.NewOutgoingContext(ctx, nil), md)
	st := &localStream{method: method}
	ctx = grpc.NewContextWithServerTransportStream(ctx, st)

	ctx = c.s.stats.TagRPC(ctx, &stats.RPCTagInfo{FullMethodName: method})
	begin := time.Now()
	c.s.stats.HandleRPC(ctx, &stats.Begin{BeginTime: begin})
	dec := func(v any) error {
		// The handler decodes into a message of its own; the caller keeps
		// (and may reuse) args.
		proto.Merge(v.(proto.Message), in)
		return nil
	}
	resp, err := m.handler(m.impl, ctx, dec, c.s.unary)
	c.s.stats.HandleRPC(ctx, &stats.End{BeginTime: begin, EndTime: time.Now(), Error: err})
	st.deliver(opts)
	if err != nil {
		return err
	}
	r, ok := resp.(proto.Message)
	if !ok {
		return status.Errorf(codes.Internal, "in-process call of %s returned a %T", method, resp)
	}
	proto.Reset(out)
	proto.Merge(out, r)
	return nil
}

// NewStream implements grpc.ClientConnInterface.
func (inProcess) NewStream(_ context.Context, _ *grpc.StreamDesc, method string, _ ...grpc.CallOption) (grpc.ClientStream, error) {
	return nil, status.Errorf(codes.Unimplemented, "%s: streams are not served in-process", method)
}

// localStream collects the headers and trailers a handler sets
// (grpc.SetHeader) for the caller's grpc.Header / grpc.Trailer options.
type localStream struct {
	method          string
	mu              sync.Mutex
	header, trailer metadata.MD
}

func (s *localStream) Method() string { return s.method }

func (s *localStream) SetHeader(md metadata.MD) error {
	s.mu.Lock()
	s.header = metadata.Join(s.header, md)
	s.mu.Unlock()
	return nil
}

func (s *localStream) SendHeader(md metadata.MD) error { return s.SetHeader(md) }

func (s *localStream) SetTrailer(md metadata.MD) error {
	s.mu.Lock()
	s.trailer = metadata.Join(s.trailer, md)
	s.mu.Unlock()
	return nil
}

func (s *localStream) deliver(opts []grpc.CallOption) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, o := range opts {
		switch o := o.(type) {
		case grpc.HeaderCallOption:
			if o.HeaderAddr != nil {
				*o.HeaderAddr = s.header.Copy()
			}
		case grpc.TrailerCallOption:
			if o.TrailerAddr != nil {
				*o.TrailerAddr = s.trailer.Copy()
			}
		}
	}
}

var _ grpc.ServerTransportStream = (*localStream)(nil)
