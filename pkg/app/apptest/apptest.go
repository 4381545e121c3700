// Package apptest runs a real seghub process in a test: a Platform on a temp
// data dir (SQLite or a fresh PostgreSQL database; embedded JetStream), a gRPC
// server on a loopback port with the production interceptor chain, and keys
// of every role in two environments.
package apptest

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	adminv1 "github.com/seghub/seghub/gen/seghub/admin/v1"
	authv1 "github.com/seghub/seghub/gen/seghub/auth/v1"
	"github.com/seghub/seghub/pkg/admin"
	"github.com/seghub/seghub/pkg/app"
	"github.com/seghub/seghub/pkg/config"
	"github.com/seghub/seghub/pkg/grpcserver"
	"github.com/seghub/seghub/pkg/store/storetest"
)

// Options select the backends.
type Options struct {
	// Postgres runs on a fresh PostgreSQL database (skips or fails like storetest).
	Postgres bool
	// NeedBus starts embedded JetStream (or uses SEGHUB_NATS_URL in Config).
	NeedBus bool
	// ExternalNATS uses the external JetStream (skips or fails like
	// storetest), under a bus namespace of its own.
	ExternalNATS bool
	// DataDir reuses a directory (restart tests); empty means t.TempDir().
	DataDir string
	// DatabaseURL reuses a database (restart tests); wins over Postgres.
	DatabaseURL string
	// Configure adjusts the config before the platform opens.
	Configure func(*config.Config)
	// LogOutput receives the process's logs (default stderr).
	LogOutput io.Writer
	// TraceRequests samples requests' root spans as a process exporting
	// spans does (tests that record spans with a span processor).
	TraceRequests bool
}

// Keys of one environment.
type Keys struct {
	EnvironmentID          string
	Admin, Member, Service string
}

// Env is a running test process.
type Env struct {
	T        testing.TB
	P        *app.Platform
	Server   *grpcserver.Server
	Config   *config.Config
	Addr     string
	A, B     Keys // two environments, for isolation tests
	lis      net.Listener
	cancel   context.CancelFunc
	done     chan error
	started  bool
	services []app.Service
}

// New opens the platform and creates keys; register services on e.Server (or
// with Add), then call Start.
func New(t testing.TB, o Options) *Env {
	t.Helper()
	cfg := config.Defaults()
	cfg.DataDir = o.DataDir
	if cfg.DataDir == "" {
		cfg.DataDir = t.TempDir()
	}
	cfg.DatabaseURL = o.DatabaseURL
	if cfg.DatabaseURL == "" && o.Postgres {
		cfg.DatabaseURL = storetest.PostgresURL(t)
	}
	cfg.GRPCAddr = "127.0.0.1:0"
	cfg.HTTPAddr = "127.0.0.1:0"
	cfg.LogLevel = "warn"
	// Tests' destinations (simulators, httptest servers) listen on loopback,
	// which the egress policy refuses unless allowed.
	cfg.DestinationAllow = "127.0.0.0/8,::1"
	if o.ExternalNATS {
		o.NeedBus = true
		cfg.NATSURL = ExternalNATSURL(t)
		cfg.BusNamespace = fmt.Sprintf("t%d", time.Now().UnixNano())
	}
	if o.Configure != nil {
		o.Configure(cfg)
	}
	ctx := context.Background()
	var logOut io.Writer = os.Stderr
	if o.LogOutput != nil {
		logOut = o.LogOutput
		cfg.LogLevel = "debug"
	} else if testing.Verbose() {
		cfg.LogLevel = "info"
	}
	p, err := app.NewPlatform(ctx, cfg, app.Options{Name: "test", LogOutput: logOut, NeedBus: o.NeedBus, SpanExporter: spanExporter(o.TraceRequests)})
	if err != nil {
		t.Fatalf("platform: %v", err)
	}
	e := &Env{T: t, P: p, Config: cfg}
	t.Cleanup(e.Stop)
	e.A = e.keys(ctx, "env-a")
	e.B = e.keys(ctx, "env-b")
	e.lis, err = p.Listen(cfg.GRPCAddr)
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	e.Addr = p.SelfAddr
	e.Server, err = p.NewGRPCServer()
	if err != nil {
		t.Fatalf("grpc server: %v", err)
	}
	adminv1.RegisterAdminServiceServer(e.Server.Server, admin.NewServer(p.Admin, p.Auth.Forget))
	return e
}

// ExternalNATSURL is the external NATS JetStream the tests use
// (SEGHUB_TEST_NATS_URL, default nats://127.0.0.1:4222). Unreachable, it
// skips the test, or fails it under CI=true.
func ExternalNATSURL(t testing.TB) string {
	t.Helper()
	u := os.Getenv("SEGHUB_TEST_NATS_URL")
	if u == "" {
		u = "nats://127.0.0.1:4222"
	}
	c, err := net.DialTimeout("tcp", strings.TrimPrefix(u, "nats://"), 2*time.Second)
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("external NATS at %s unreachable and CI=true requires it: %v", u, err)
		}
		t.Skipf("skipping: external NATS at %s unreachable (start nats-server -js or set SEGHUB_TEST_NATS_URL): %v", u, err)
	}
	c.Close()
	return u
}

// keys finds or creates environment name and one key of each role.
func (e *Env) keys(ctx context.Context, name string) Keys {
	env, err := e.P.Admin.CreateEnvironment(ctx, name+"-"+filepath.Base(e.T.TempDir()), "")
	if err != nil {
		e.T.Fatalf("create environment: %v", err)
	}
	k := Keys{EnvironmentID: env.ID, Admin: admin.NewSecret(), Member: admin.NewSecret(), Service: admin.NewSecret()}
	for role, secret := range map[authv1.Role]string{authv1.Role_ROLE_ADMIN: k.Admin, authv1.Role_ROLE_MEMBER: k.Member, authv1.Role_ROLE_SERVICE: k.Service} {
		if _, err := e.P.Admin.CreateKey(ctx, env.ID, role.String(), role, secret); err != nil {
			e.T.Fatalf("create key: %v", err)
		}
	}
	return k
}

// Add registers services and remembers them so Start runs their background work.
func (e *Env) Add(ss ...app.Service) {
	for _, s := range ss {
		s.Register(e.Server)
		e.services = append(e.services, s)
	}
}

// Start serves gRPC and runs the added services' background work.
func (e *Env) Start() {
	ctx, cancel := context.WithCancel(context.Background())
	e.cancel = cancel
	e.done = make(chan error, 1+len(e.services))
	e.started = true
	go func() { e.done <- e.Server.Serve(ctx, e.lis) }()
	for _, s := range e.services {
		go func() { e.done <- s.Run(ctx) }()
	}
}

// Stop ends the process (idempotent); Cleanup calls it.
func (e *Env) Stop() {
	if e.cancel != nil {
		e.cancel()
		timeout := time.After(15 * time.Second)
		for i := 0; i < 1+len(e.services); i++ {
			select {
			case <-e.done:
			case <-timeout:
				e.T.Errorf("apptest: services did not stop within 15s")
				i = len(e.services) + 1
			}
		}
		e.cancel = nil
	} else if e.lis != nil && !e.started {
		e.lis.Close()
	}
	if e.P != nil {
		e.P.Close()
		e.P = nil
	}
}

// Dial returns a client connection sending key as the bearer token ("" for none).
func (e *Env) Dial(key string) *grpc.ClientConn {
	e.T.Helper()
	opts := []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}
	if key != "" {
		opts = append(opts, grpc.WithPerRPCCredentials(bearer(key)))
	}
	c, err := grpc.NewClient(e.Addr, opts...)
	if err != nil {
		e.T.Fatalf("dial: %v", err)
	}
	e.T.Cleanup(func() { c.Close() })
	return c
}

type bearer string

func (b bearer) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + string(b)}, nil
}
func (bearer) RequireTransportSecurity() bool { return false }

// Context returns a context that ends with the test, bounded by d.
func Context(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// LogBuffer collects a process's output safely across goroutines.
type LogBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *LogBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *LogBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// spanExporter marks a test process as exporting spans (to nowhere), so its
// requests start sampled traces that span processors the test registers see.
func spanExporter(traced bool) sdktrace.SpanExporter {
	if !traced {
		return nil
	}
	return tracetest.NewNoopExporter()
}
