// Package connector is the connector service: the destination catalogue,
// connections (credentials sealed at rest, never returned), OAuth 2.0 with
// state and PKCE, and credential resolution for the other services.
package connector

import (
	"context"
	"log/slog"
	"time"

	connectorv1 "github.com/seghub/seghub/gen/seghub/connector/v1"
	segmentsyncv1 "github.com/seghub/seghub/gen/seghub/segmentsync/v1"
	"github.com/seghub/seghub/pkg/app"
	"github.com/seghub/seghub/pkg/destinations"
	"github.com/seghub/seghub/pkg/grpcserver"
	"github.com/seghub/seghub/services/connector/internal/server"
	"github.com/seghub/seghub/services/connector/internal/store"
)

// Service is the connector service.
type Service struct {
	server *server.Server
	store  *store.Store
	log    *slog.Logger
}

// New opens the store (migrating it) and builds the server.
func New(ctx context.Context, p *app.Platform) (*Service, error) {
	st, err := store.Open(ctx, p.DB, p.Secrets)
	if err != nil {
		return nil, err
	}
	err = p.Telemetry.Metrics.ObserveReauth(func(ctx context.Context) (map[string]int64, error) {
		byType, err := st.CountByStatus(ctx, store.StatusNeedsReauth)
		if err != nil {
			return nil, err
		}
		// Every type reports, 0 included, so an alert sees it clear.
		for _, t := range destinations.All() {
			byType[t.Name] += 0
		}
		return byType, nil
	})
	if err != nil {
		return nil, err
	}
	srv := server.New(st, p.Config, p.Egress)
	srv.UseSyncs(syncs{p: p}, p.Logger)
	return &Service{server: srv, store: st, log: p.Logger}, nil
}

// syncs asks segmentsync over the internal connection, for the environment
// of each call's context (the request's principal).
type syncs struct{ p *app.Platform }

func (x syncs) client() (segmentsyncv1.SegmentSyncServiceClient, error) {
	conn, err := x.p.Conn(app.SegmentSync)
	if err != nil {
		return nil, err
	}
	return segmentsyncv1.NewSegmentSyncServiceClient(conn), nil
}

func (x syncs) RecurringInUse(ctx context.Context, types []string) (map[string]uint32, error) {
	cl, err := x.client()
	if err != nil {
		return nil, err
	}
	r, err := cl.CountRecurringSyncs(ctx, &segmentsyncv1.CountRecurringSyncsRequest{DestinationTypes: types})
	if err != nil {
		return nil, err
	}
	return r.GetRecurringSyncs(), nil
}

func (x syncs) IdentityProblem(ctx context.Context, prop, typ string) (string, error) {
	cl, err := x.client()
	if err != nil {
		return "", err
	}
	r, err := cl.CheckIdentityProperty(ctx, &segmentsyncv1.CheckIdentityPropertyRequest{IdentityProperty: prop, DestinationType: typ})
	if err != nil {
		return "", err
	}
	return r.GetReason(), nil
}

// Register implements app.Service.
func (s *Service) Register(g *grpcserver.Server) {
	connectorv1.RegisterConnectorServiceServer(g.Server, s.server)
}

// sweepEvery is how often expired OAuth states are deleted.
const sweepEvery = time.Minute

// Run implements app.Service: it deletes expired OAuth states (abandoned
// authorisations) until ctx ends.
func (s *Service) Run(ctx context.Context) error {
	t := time.NewTicker(sweepEvery)
	defer t.Stop()
	for {
		if n, err := s.SweepExpiredStates(ctx); err != nil && ctx.Err() == nil {
			s.log.Warn("connector: sweeping expired OAuth states failed", "err", err)
		} else if n > 0 {
			s.log.Info("connector: swept expired OAuth states", "count", n)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// SweepExpiredStates deletes the OAuth states that expired and reports how
// many; Run calls it every sweepEvery.
func (s *Service) SweepExpiredStates(ctx context.Context) (int64, error) {
	return s.store.SweepStates(ctx)
}
