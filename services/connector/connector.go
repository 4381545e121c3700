// Package connector is the connector service. Until its own issue fills it in, it is
// registered and answers Unimplemented.
package connector

import (
	"context"

	connectorv1 "github.com/seghub/seghub/gen/seghub/connector/v1"
	"github.com/seghub/seghub/pkg/app"
	"github.com/seghub/seghub/pkg/grpcserver"
)

// Service is the connector service.
type Service struct {
	connectorv1.UnimplementedConnectorServiceServer
	p *app.Platform
}

// New returns the service on p.
func New(_ context.Context, p *app.Platform) (*Service, error) {
	return &Service{p: p}, nil
}

// Register implements app.Service.
func (s *Service) Register(g *grpcserver.Server) {
	connectorv1.RegisterConnectorServiceServer(g.Server, s)
}

// Run implements app.Service; this service has no background work yet.
func (s *Service) Run(ctx context.Context) error { return nil }
