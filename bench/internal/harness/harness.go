// Package harness starts seghub services in-process for load tools: a real
// platform (SQLite + embedded JetStream in a temp dir), the production gRPC
// chain on a loopback port, and an admin/member key.
package harness

import (
	"context"
	"fmt"
	"os"
	"sort"
	"strconv"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	authv1 "github.com/seghub/seghub/gen/seghub/auth/v1"
	segmentsyncv1 "github.com/seghub/seghub/gen/seghub/segmentsync/v1"
	"github.com/seghub/seghub/pkg/admin"
	"github.com/seghub/seghub/pkg/app"
	"github.com/seghub/seghub/pkg/config"
)

// Process is a running in-process seghub.
type Process struct {
	P         *app.Platform
	Addr      string
	MemberKey string
	AdminKey  string
	dir       string
	cancel    context.CancelFunc
}

// Start opens a platform and serves the given services until Stop.
func Start(ctx context.Context, configure func(*config.Config), newServices ...func(context.Context, *app.Platform) (app.Service, error)) (*Process, error) {
	dir, err := os.MkdirTemp("", "seghub-bench")
	if err != nil {
		return nil, err
	}
	cfg := config.Defaults()
	cfg.DataDir = dir
	cfg.LogLevel = "error"
	// The benchmarks' destinations listen on loopback.
	cfg.DestinationAllow = "127.0.0.0/8,::1"
	if configure != nil {
		configure(cfg)
	}
	p, err := app.NewPlatform(ctx, cfg, app.Options{Name: "bench", LogOutput: os.Stderr, NeedBus: true})
	if err != nil {
		return nil, err
	}
	env, adminKey, err := p.Admin.Bootstrap(ctx, "")
	if err != nil {
		return nil, err
	}
	member := admin.NewSecret()
	if _, err := p.Admin.CreateKey(ctx, env.ID, "bench", authv1.Role_ROLE_MEMBER, member); err != nil {
		return nil, err
	}
	lis, err := p.Listen("127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	srv, err := p.NewGRPCServer()
	if err != nil {
		return nil, err
	}
	rctx, cancel := context.WithCancel(context.Background())
	var svcs []app.Service
	for _, n := range newServices {
		s, err := n(ctx, p)
		if err != nil {
			cancel()
			return nil, err
		}
		s.Register(srv)
		svcs = append(svcs, s)
	}
	go func() { _ = srv.Serve(rctx, lis) }()
	for _, s := range svcs {
		go func() { _ = s.Run(rctx) }()
	}
	return &Process{P: p, Addr: p.SelfAddr, MemberKey: member, AdminKey: adminKey, dir: dir, cancel: cancel}, nil
}

// Stop ends the process and removes its data.
func (p *Process) Stop() {
	p.cancel()
	time.Sleep(100 * time.Millisecond)
	p.P.Close()
	os.RemoveAll(p.dir)
}

// Dial connects with the member key.
func (p *Process) Dial() (*grpc.ClientConn, error) {
	return grpc.NewClient(p.Addr, grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithPerRPCCredentials(Bearer(p.MemberKey)),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(256<<20), grpc.MaxCallSendMsgSize(256<<20)))
}

// DialAdmin connects with the admin key.
func (p *Process) DialAdmin() (*grpc.ClientConn, error) {
	return grpc.NewClient(p.Addr, grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithPerRPCCredentials(Bearer(p.AdminKey)),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(256<<20), grpc.MaxCallSendMsgSize(256<<20)))
}

// Latencies summarises a latency sample.
type Latencies []time.Duration

// Quantile returns the q-quantile (0..1).
func (l Latencies) Quantile(q float64) time.Duration {
	if len(l) == 0 {
		return 0
	}
	s := append(Latencies(nil), l...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[min(len(s)-1, int(q*float64(len(s))))]
}

// String formats p50/p99.
func (l Latencies) String() string {
	return fmt.Sprintf("p50 %v p99 %v", l.Quantile(0.5), l.Quantile(0.99))
}

// Replace sets segment sid to the users prefix+from .. prefix+(to-1) with one
// ReplaceMembers stream of 20 000-id messages.
func Replace(ctx context.Context, c segmentsyncv1.SegmentSyncServiceClient, sid, prefix string, from, to int) (*segmentsyncv1.ReplaceMembersResponse, error) {
	st, err := c.ReplaceMembers(ctx)
	if err != nil {
		return nil, err
	}
	for i := from; i < to || i == from; i += 20000 {
		req := &segmentsyncv1.ReplaceMembersRequest{}
		if i == from {
			req.SegmentId = sid
		}
		for j := i; j < min(i+20000, to); j++ {
			req.UserIds = append(req.UserIds, prefix+strconv.Itoa(j))
		}
		if err := st.Send(req); err != nil {
			return nil, err
		}
	}
	return st.CloseAndRecv()
}
