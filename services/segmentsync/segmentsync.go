// Package segmentsync is the segmentsync service: users and their
// properties, segments and their membership on roaring bitmaps, the
// WatchMembership feed, and (issue 5) syncs to destinations.
package segmentsync

import (
	"context"
	"os"
	"time"

	"github.com/nats-io/nats.go"

	connectorv1 "github.com/seghub/seghub/gen/seghub/connector/v1"
	segmentsyncv1 "github.com/seghub/seghub/gen/seghub/segmentsync/v1"
	"github.com/seghub/seghub/pkg/app"
	"github.com/seghub/seghub/pkg/auth"
	"github.com/seghub/seghub/pkg/destinations"
	"github.com/seghub/seghub/pkg/grpcserver"
	"github.com/seghub/seghub/pkg/ids"
	"github.com/seghub/seghub/pkg/lease"
	"github.com/seghub/seghub/pkg/ratelimit"
	pkgstore "github.com/seghub/seghub/pkg/store"
	"github.com/seghub/seghub/services/segmentsync/internal/computed"
	"github.com/seghub/seghub/services/segmentsync/internal/server"
	"github.com/seghub/seghub/services/segmentsync/internal/store"
	"github.com/seghub/seghub/services/segmentsync/internal/syncengine"
)

// LogRetention is how many change-log entries each environment keeps;
// watchers further behind resume from a fresh snapshot.
const LogRetention = 200_000

// Service is the segmentsync service.
type Service struct {
	p       *app.Platform
	store   *store.Store
	watcher *server.Watcher
	server  *server.Server
	engine  *syncengine.Engine
	queue   *syncengine.JobQueue
	opts    Options
	// computed keeps computed segments live; it runs in the one process
	// holding computedRole's lease, as its durable consumer and event
	// position are the deployment's, not a replica's.
	computed     *computed.Evaluator
	computedRole *lease.Role
}

// ComputedLease names the lease of the computed-segment evaluator.
const ComputedLease = "segmentsync/computed"

// EvaluatesComputed tells whether this process holds the computed-segment
// lease and runs the evaluator.
func (s *Service) EvaluatesComputed() bool { return s.computedRole.Held() }

// Computed exposes the computed-segment evaluator (tests run its window
// pass after moving the clock).
func (s *Service) Computed() *computed.Evaluator { return s.computed }

// Engine exposes the sync engine (tests drive its clock through Tick).
func (s *Service) Engine() *syncengine.Engine { return s.engine }

// connections reaches the connector over gRPC with the internal key.
type connections struct{ p *app.Platform }

func (c connections) client() (connectorv1.ConnectorServiceClient, error) {
	conn, err := c.p.Conn(app.Connector)
	if err != nil {
		return nil, err
	}
	return connectorv1.NewConnectorServiceClient(conn), nil
}

func (c connections) Resolve(ctx context.Context, env, id string) (*connectorv1.ResolveConnectionResponse, error) {
	cl, err := c.client()
	if err != nil {
		return nil, err
	}
	return cl.ResolveConnection(auth.ForEnvironment(ctx, env), &connectorv1.ResolveConnectionRequest{ConnectionId: id})
}

func (c connections) Report(ctx context.Context, env, id string, st connectorv1.ConnectionStatus, msg string) error {
	cl, err := c.client()
	if err != nil {
		return err
	}
	_, err = cl.ReportConnectionStatus(auth.ForEnvironment(ctx, env), &connectorv1.ReportConnectionStatusRequest{ConnectionId: id, Status: st, Message: msg})
	return err
}

// Options adjust the service for tests and benchmarks.
type Options struct {
	// AdapterConfig adjusts destination adapters (e.g. shorter retries).
	AdapterConfig func(*destinations.Config)
	// Now is the clock of the sync engine and of computed segments (their
	// "today" and sliding windows).
	Now func() time.Time
	// NoTick leaves recurring scheduling to explicit Tick calls.
	NoTick bool
	// PollInterval of the job queue.
	PollInterval time.Duration
	// ComputedBatch bounds the events one computed-segment transaction
	// applies (default 5000).
	ComputedBatch int
	// ComputedLeaseTTL is how long the computed-segment evaluator's lease
	// outlives its holder (default lease.TTL).
	ComputedLeaseTTL time.Duration
	// Rate overrides destinations' rate limits.
	Rate func(t destinations.Type) (perMinute, burst int)
}

// New opens the store (migrating it) and builds the server.
func New(ctx context.Context, p *app.Platform) (*Service, error) {
	return NewWithOptions(ctx, p, Options{})
}

// NewWithOptions is New with test and benchmark options.
func NewWithOptions(ctx context.Context, p *app.Platform, o Options) (*Service, error) {
	var nc *nats.Conn
	if p.Bus != nil {
		nc = p.Bus.Conn
	}
	s := &Service{p: p, opts: o}
	st, err := store.Open(ctx, p.DB, func(env string, seq int64) { s.watcher.Notify(env, seq) })
	if err != nil {
		return nil, err
	}
	s.store = st
	if o.Now != nil {
		st.SetClock(o.Now)
	}
	s.watcher = server.NewWatcher(st, nc)
	resolve := func(ctx context.Context, id string) (*connectorv1.ResolveConnectionResponse, error) {
		conn, err := p.Conn(app.Connector)
		if err != nil {
			return nil, err
		}
		// No environment: the webhook names a connection, which names its environment.
		return connectorv1.NewConnectorServiceClient(conn).ResolveConnection(ctx, &connectorv1.ResolveConnectionRequest{ConnectionId: id})
	}
	record := func(conn, result string) {
		p.Telemetry.Metrics.InboundPage(conn, result)
	}
	est, err := syncengine.OpenStore(ctx, p.DB)
	if err != nil {
		return nil, err
	}
	eo := syncengine.Options{BaseURL: p.Config.DestinationURL, Egress: p.Egress, Logger: p.Logger, Tracer: p.Telemetry.Tracer.Tracer("seghub/syncengine"),
		RecurringLimit: func(t destinations.Type) int { return p.Config.RecurringLimit(t.Name, t.RecurringLimit) },
		LeaseTTL:       p.Config.SyncRunLease, SweepInterval: p.Config.SyncRunLease / 5,
		Metrics: p.Telemetry.Metrics}
	if o.AdapterConfig != nil {
		eo.AdapterConfig = o.AdapterConfig
	}
	if o.Now != nil {
		eo.Now = o.Now
	}
	eo.Rate = o.Rate
	if eo.Rate == nil && len(p.Config.DestinationRates) > 0 {
		eo.Rate = func(t destinations.Type) (int, int) { return p.Config.DestinationRate(t.Name, t.RatePerMinute) }
	}
	if err := ratelimit.Migrate(ctx, p.DB); err != nil {
		return nil, err
	}
	s.engine = syncengine.New(est, st, connections{p: p}, eo)
	if s.queue, err = syncengine.NewQueue(ctx, p.DB, s.engine, syncengine.QueueOptions{Logger: p.Logger, NoTick: o.NoTick, PollInterval: o.PollInterval}); err != nil {
		return nil, err
	}
	limits := server.StreamLimits{MaxIDs: p.Config.ReplaceMembersMaxIDs, MaxBytes: p.Config.ReplaceMembersMaxBytes}
	s.server = server.New(st, s.watcher, server.NewInbound(st, resolve, record), s.engine, limits)
	co := computed.Options{Store: st, Namespace: p.Config.BusNamespace, Now: o.Now, Logger: p.Logger, Batch: o.ComputedBatch}
	if p.Bus != nil {
		co.JS, co.Dial = p.Bus.JS, p.Bus.InProcessDialer()
	}
	s.computed = computed.New(co)
	s.server.SetComputed(s.computed)
	if err := lease.Migrate(ctx, p.DB); err != nil {
		return nil, err
	}
	s.computedRole = lease.New(lease.Options{DB: p.DB, Name: ComputedLease, Holder: replicaName(), TTL: o.ComputedLeaseTTL, Logger: p.Logger,
		// An embedded SQLite file is one process's: split mode and replicas need PostgreSQL.
		Alone: p.DB.Dialect == pkgstore.SQLite})
	if err := p.Telemetry.Metrics.ObserveLease(ComputedLease, s.computedRole.Holder(), s.computedRole.Held); err != nil {
		return nil, err
	}
	return s, nil
}

// replicaName names this process in leases: its host, for the operator,
// and a random part, as a restarted process is a new holder.
func replicaName() string {
	h, _ := os.Hostname()
	if h == "" {
		h = "segmentsync"
	}
	return h + "/" + ids.Random(8)
}

// Register implements app.Service.
func (s *Service) Register(g *grpcserver.Server) {
	segmentsyncv1.RegisterSegmentSyncServiceServer(g.Server, s.server)
}

// Run works sync runs, relays membership wake-ups, prunes the change log
// and, in the process holding the computed-segment lease, keeps computed
// segments live.
func (s *Service) Run(ctx context.Context) error {
	if err := s.queue.Start(ctx); err != nil {
		return err
	}
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = s.queue.Stop(sctx)
	}()
	go func() {
		t := time.NewTicker(time.Minute)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				if err := s.store.Prune(ctx, LogRetention); err != nil && ctx.Err() == nil {
					s.p.Logger.Warn("prune change log", "error", err.Error())
				}
			}
		}
	}()
	cctx, cancel := context.WithCancel(ctx)
	computedDone := make(chan struct{})
	go func() {
		defer close(computedDone)
		if err := s.computedRole.Run(cctx, s.computed.Run); err != nil && cctx.Err() == nil {
			s.p.Logger.Error("computed segments stopped", "error", err.Error())
		}
	}()
	// The evaluator writes to the store: it ends before Run returns.
	defer func() { cancel(); <-computedDone }()
	return s.watcher.Run(ctx)
}
