// Package segmentsync is the segmentsync service: users and their
// properties, segments and their membership on roaring bitmaps, the
// WatchMembership feed, and (issue 5) syncs to destinations.
package segmentsync

import (
	"context"
	"time"

	"github.com/nats-io/nats.go"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"

	connectorv1 "github.com/seghub/seghub/gen/seghub/connector/v1"
	segmentsyncv1 "github.com/seghub/seghub/gen/seghub/segmentsync/v1"
	"github.com/seghub/seghub/pkg/app"
	"github.com/seghub/seghub/pkg/grpcserver"
	"github.com/seghub/seghub/services/segmentsync/internal/server"
	"github.com/seghub/seghub/services/segmentsync/internal/store"
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
}

// New opens the store (migrating it) and builds the server.
func New(ctx context.Context, p *app.Platform) (*Service, error) {
	var nc *nats.Conn
	if p.Bus != nil {
		nc = p.Bus.Conn
	}
	s := &Service{p: p}
	st, err := store.Open(ctx, p.DB, func(env string, seq int64) { s.watcher.Notify(env, seq) })
	if err != nil {
		return nil, err
	}
	s.store = st
	s.watcher = server.NewWatcher(st, nc)
	requests, err := p.Telemetry.Meter.Meter("seghub/segmentsync").Int64Counter("seghub.inbound.requests",
		metric.WithDescription("Inbound segment webhook requests per source connection and result"))
	if err != nil {
		return nil, err
	}
	resolve := func(ctx context.Context, id string) (*connectorv1.ResolveConnectionResponse, error) {
		conn, err := p.Conn(app.Connector)
		if err != nil {
			return nil, err
		}
		// No environment: the webhook names a connection, which names its environment.
		return connectorv1.NewConnectorServiceClient(conn).ResolveConnection(ctx, &connectorv1.ResolveConnectionRequest{ConnectionId: id})
	}
	record := func(conn, result string) {
		requests.Add(context.Background(), 1, metric.WithAttributes(attribute.String("connection_id", conn), attribute.String("result", result)))
	}
	s.server = server.New(st, s.watcher, server.NewInbound(st, resolve, record))
	return s, nil
}

// Register implements app.Service.
func (s *Service) Register(g *grpcserver.Server) {
	segmentsyncv1.RegisterSegmentSyncServiceServer(g.Server, s.server)
}

// Run relays membership wake-ups and prunes the change log.
func (s *Service) Run(ctx context.Context) error {
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
	return s.watcher.Run(ctx)
}
