// Package targeting is the targeting service: sub-millisecond membership
// lookups and audience evaluation for product tours and checklists, from an
// in-memory index that follows segmentsync's WatchMembership feed.
package targeting

import (
	"context"
	"time"

	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"

	segmentsyncv1 "github.com/seghub/seghub/gen/seghub/segmentsync/v1"
	targetingv1 "github.com/seghub/seghub/gen/seghub/targeting/v1"
	"github.com/seghub/seghub/pkg/app"
	"github.com/seghub/seghub/pkg/grpcserver"
	"github.com/seghub/seghub/services/targeting/internal/index"
	"github.com/seghub/seghub/services/targeting/internal/server"
	"github.com/seghub/seghub/services/targeting/internal/store"
)

// experiencesSubject carries "experiences of <env> changed" between replicas.
const experiencesSubject = "seghub.targeting.experiences"

// Service is one targeting replica.
type Service struct {
	p      *app.Platform
	index  *index.Index
	server *server.Server
}

// New opens the experiences store and registers the replica's metrics.
func New(ctx context.Context, p *app.Platform) (*Service, error) {
	st, err := store.Open(ctx, p.DB)
	if err != nil {
		return nil, err
	}
	s := &Service{p: p, index: index.New()}
	publish := func(env string) {
		if p.Bus != nil {
			_ = p.Bus.Conn.Publish(experiencesSubject, []byte(env))
		}
	}
	s.server = server.New(s.index, st, publish)
	s.server.CountLookups(p.Telemetry.Metrics)
	if err := p.Telemetry.Metrics.ObserveStaleness(s.index.AppliedAt, time.Now); err != nil {
		return nil, err
	}
	meter := p.Telemetry.Meter.Meter("seghub/targeting")
	_, err = meter.Int64ObservableGauge("seghub.targeting.index.version",
		metric.WithDescription("Membership version (environment change sequence) this replica serves"),
		metric.WithInt64Callback(func(_ context.Context, o metric.Int64Observer) error {
			for env, v := range s.index.Versions() {
				o.Observe(v.Sequence, metric.WithAttributes(attribute.String("environment", env), attribute.Bool("caught_up", v.CaughtUp)))
			}
			return nil
		}))
	if err != nil {
		return nil, err
	}
	return s, nil
}

// Register implements app.Service.
func (s *Service) Register(g *grpcserver.Server) {
	// On g itself, so g.InProcess() can call it too (the gateway's REST
	// lookups in the all-in-one).
	targetingv1.RegisterTargetingServiceServer(g, s.server)
	for _, m := range server.LookupRequests() {
		g.SkipCleanIdentifiers(m, server.CleanIdentifiers)
	}
	g.Ready.Add(app.Targeting, "index", func(context.Context) error { return s.index.Ready() })
}

// Run follows the membership feed and experience changes until ctx ends.
func (s *Service) Run(ctx context.Context) error {
	if s.p.Bus != nil {
		sub, err := s.p.Bus.Conn.Subscribe(experiencesSubject, func(m *nats.Msg) { s.server.Invalidate(string(m.Data)) })
		if err != nil {
			return err
		}
		defer sub.Unsubscribe()
	}
	conn, err := s.p.Conn(app.SegmentSync)
	if err != nil {
		return err
	}
	return index.Follow(ctx, segmentsyncv1.NewSegmentSyncServiceClient(conn), s.index, s.p.Logger)
}

// Index exposes the replica's index (benchmarks and tests).
func (s *Service) Index() *index.Index { return s.index }
