// Package app wires what every seghub process shares: configuration, logs,
// telemetry, the store, JetStream, the secret box, authentication and the
// gRPC connections services use to reach one another. The all-in-one binary
// and each split-mode binary build one Platform and hand it to the services.
package app

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"sync"

	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/seghub/seghub/pkg/admin"
	"github.com/seghub/seghub/pkg/auth"
	"github.com/seghub/seghub/pkg/config"
	"github.com/seghub/seghub/pkg/destinations"
	"github.com/seghub/seghub/pkg/grpcserver"
	"github.com/seghub/seghub/pkg/natsbus"
	"github.com/seghub/seghub/pkg/secretbox"
	"github.com/seghub/seghub/pkg/store"
	"github.com/seghub/seghub/pkg/telemetry"
)

// Service names, used for addresses and logs.
const (
	Admin       = "admin"
	Connector   = "connector"
	SegmentSync = "segmentsync"
	EventRelay  = "eventrelay"
	Targeting   = "targeting"
	Gateway     = "gateway"
)

// Service is what each seghub service gives the process that hosts it.
type Service interface {
	// Register adds the service's gRPC servers.
	Register(s *grpcserver.Server)
	// Run does background work until ctx ends; return nil at once if none.
	Run(ctx context.Context) error
}

// Platform is the shared wiring of one process.
type Platform struct {
	Config      *config.Config
	Logger      *slog.Logger
	Telemetry   *telemetry.Telemetry
	DB          *store.DB
	Bus         *natsbus.Bus
	Secrets     *secretbox.Box
	InternalKey string
	Auth        *auth.Authenticator
	Admin       *admin.Store
	// Egress is the one outbound policy (and HTTP client) for every
	// request to a destination.
	Egress *destinations.Egress

	// SelfAddr is where this process's gRPC server listens (set by Listen).
	SelfAddr string

	// tlsPeers verifies the services this process calls when TLS is on.
	tlsPeers *peerTLS

	mu    sync.Mutex
	conns map[string]*grpc.ClientConn
	local map[string]grpc.ClientConnInterface
	close []func()
}

// Options select which parts a process needs.
type Options struct {
	Name      string
	LogOutput io.Writer
	// NeedBus starts/connects JetStream.
	NeedBus bool
	// SpanExporter, if set, receives spans beside any OTLP endpoint; with
	// it, requests start sampled traces as when spans are exported.
	SpanExporter sdktrace.SpanExporter
}

// NewPlatform opens everything a process needs. Close releases it.
func NewPlatform(ctx context.Context, cfg *config.Config, o Options) (*Platform, error) {
	tel, shutdown, err := telemetry.Setup(ctx, telemetry.Options{ServiceName: "seghub-" + o.Name, OTLPEndpoint: cfg.OTLPEndpoint, TraceSample: cfg.TraceSample, LogLevel: cfg.LogLevel, LogFormat: cfg.LogFormat, LogOutput: o.LogOutput, SpanExporter: o.SpanExporter})
	if err != nil {
		return nil, fmt.Errorf("telemetry: %w", err)
	}
	p := &Platform{Config: cfg, Logger: tel.Logger.With("service", o.Name), Telemetry: tel, conns: map[string]*grpc.ClientConn{}}
	p.close = append(p.close, func() { _ = shutdown(context.Background()) })
	fail := func(err error) (*Platform, error) { p.Close(); return nil, err }
	if p.Egress, err = destinations.NewEgress(cfg.DestinationAllow); err != nil {
		return fail(err)
	}
	// Destination requests are traced by this process's provider, not
	// whichever one was installed globally last (tests run several).
	p.Egress.SetTracer(tel.Tracer.Tracer(destinations.TracerScope))

	secretKey := cfg.SecretKey
	if secretKey == "" {
		if secretKey, err = secretbox.LoadOrCreateFile(filepath.Join(cfg.DataDir, "secret.key"), 32); err != nil {
			return fail(fmt.Errorf("secret key: %w", err))
		}
	}
	key, err := secretbox.ParseKey(secretKey)
	if err != nil {
		return fail(fmt.Errorf("SEGHUB_SECRET_KEY: %w", err))
	}
	if p.Secrets, err = secretbox.New(key); err != nil {
		return fail(err)
	}
	if cfg.TLSCert != "" {
		if p.tlsPeers, err = loadPeerTLS(cfg.TLSCert, cfg.TLSKey, cfg.TLSCA); err != nil {
			return fail(err)
		}
	} else if cfg.AdminAddr+cfg.ConnectorAddr+cfg.SegmentSyncAddr+cfg.EventRelayAddr+cfg.TargetingAddr != "" {
		p.Logger.Warn("split mode without TLS: the internal key and every request travel in plaintext between services; run it on a private network only, or set SEGHUB_TLS_CERT / SEGHUB_TLS_KEY / SEGHUB_TLS_CA")
	}
	p.InternalKey = cfg.InternalKey
	if p.InternalKey == "" {
		if p.InternalKey, err = secretbox.LoadOrCreateFile(filepath.Join(cfg.DataDir, "internal.key"), 32); err != nil {
			return fail(fmt.Errorf("internal key: %w", err))
		}
	}

	url := cfg.DatabaseURL
	if url == "" {
		url = cfg.SQLitePath()
	}
	if p.DB, err = store.Open(ctx, url); err != nil {
		return fail(err)
	}
	p.close = append(p.close, func() { p.DB.Close() })
	if err := admin.Migrate(ctx, p.DB); err != nil {
		return fail(err)
	}
	p.Admin = admin.NewStore(p.DB)
	p.Auth = auth.NewAuthenticator(p.Admin, p.InternalKey)

	if o.NeedBus {
		if p.Bus, err = natsbus.Connect(ctx, natsbus.Options{URL: cfg.NATSURL, StoreDir: filepath.Join(cfg.DataDir, "nats"), Name: "seghub-" + o.Name}); err != nil {
			return fail(err)
		}
		p.close = append(p.close, p.Bus.Close)
	}
	return p, nil
}

// Close releases what NewPlatform opened, in reverse order.
func (p *Platform) Close() {
	p.mu.Lock()
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = map[string]*grpc.ClientConn{}
	p.mu.Unlock()
	for i := len(p.close) - 1; i >= 0; i-- {
		p.close[i]()
	}
	p.close = nil
}

// NewGRPCServer returns a gRPC server with the standard chain.
func (p *Platform) NewGRPCServer() (*grpcserver.Server, error) {
	o := grpcserver.Options{Logger: p.Logger, Authenticator: p.Auth, MeterProvider: p.Telemetry.Meter, TracerProvider: p.Telemetry.Tracer, RootSpansSampled: p.Telemetry.RootSpansSampled, MaxRecvMsgSize: int(p.Config.GRPCMaxMessage)}
	if p.Config.TLSCert != "" {
		c, err := credentials.NewServerTLSFromFile(p.Config.TLSCert, p.Config.TLSKey)
		if err != nil {
			return nil, fmt.Errorf("tls: %w", err)
		}
		o.TLS = c
	}
	s := grpcserver.New(o)
	p.addPlatformChecks(s.Ready)
	return s, nil
}

// Listen opens the gRPC listener and records its address for self-dialing.
func (p *Platform) Listen(addr string) (net.Listener, error) {
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen %s: %w", addr, err)
	}
	_, port, _ := net.SplitHostPort(lis.Addr().String())
	p.SelfAddr = net.JoinHostPort("127.0.0.1", port)
	return lis, nil
}

// AddrOf returns the gRPC address of a service: the configured split-mode
// address, or this process.
func (p *Platform) AddrOf(service string) string {
	var a string
	switch service {
	case Admin:
		a = p.Config.AdminAddr
	case Connector:
		a = p.Config.ConnectorAddr
	case SegmentSync:
		a = p.Config.SegmentSyncAddr
	case EventRelay:
		a = p.Config.EventRelayAddr
	case Targeting:
		a = p.Config.TargetingAddr
	}
	if a == "" {
		a = p.SelfAddr
	}
	return a
}

func (p *Platform) transport(addr string) credentials.TransportCredentials {
	if p.tlsPeers == nil {
		return insecure.NewCredentials()
	}
	return credentials.NewTLS(p.tlsPeers.config(addr == p.SelfAddr))
}

// Conn returns a client connection to service carrying the internal key; the
// environment is taken from each call's context (auth.ForEnvironment or the
// request's principal).
func (p *Platform) Conn(service string) (*grpc.ClientConn, error) {
	return p.conn("internal:"+service, p.AddrOf(service), grpc.WithPerRPCCredentials(auth.InternalCredentials{Key: p.InternalKey, Insecure: p.Config.TLSCert == ""}))
}

// SetLocal records that service is served by this process, reachable through
// cc without the network (grpcserver.Server.InProcess).
func (p *Platform) SetLocal(service string, cc grpc.ClientConnInterface) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.local == nil {
		p.local = map[string]grpc.ClientConnInterface{}
	}
	p.local[service] = cc
}

// Local returns the in-process connection to service, or nil when service
// is not served by this process (or not set up for in-process calls). Like
// PlainConn it carries no credentials: callers forward their own.
func (p *Platform) Local(service string) grpc.ClientConnInterface {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.local[service]
}

// PlainConn returns a client connection to service without credentials; the
// gateway uses it to forward callers' own keys.
func (p *Platform) PlainConn(service string) (*grpc.ClientConn, error) {
	return p.conn("plain:"+service, p.AddrOf(service))
}

func (p *Platform) conn(key, addr string, extra ...grpc.DialOption) (*grpc.ClientConn, error) {
	if addr == "" {
		return nil, errors.New("no address known for " + key + " (start the gRPC server first or set its SEGHUB_*_ADDR)")
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if c, ok := p.conns[key]; ok {
		return c, nil
	}
	opts := append([]grpc.DialOption{
		grpc.WithTransportCredentials(p.transport(addr)),
		grpc.WithStatsHandler(otelgrpc.NewClientHandler(otelgrpc.WithTracerProvider(p.Telemetry.Tracer), otelgrpc.WithMeterProvider(p.Telemetry.Meter))),
		// A message the receiving server would refuse fails here, unsent.
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(64<<20), grpc.MaxCallSendMsgSize(int(p.Config.GRPCMaxMessage))),
	}, extra...)
	c, err := grpc.NewClient(addr, opts...)
	if err != nil {
		return nil, err
	}
	p.conns[key] = c
	return c, nil
}
