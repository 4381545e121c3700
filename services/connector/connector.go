// Package connector is the connector service: the destination catalogue,
// connections (credentials sealed at rest, never returned), OAuth 2.0 with
// state and PKCE, and credential resolution for the other services.
package connector

import (
	"context"

	connectorv1 "github.com/seghub/seghub/gen/seghub/connector/v1"
	"github.com/seghub/seghub/pkg/app"
	"github.com/seghub/seghub/pkg/grpcserver"
	"github.com/seghub/seghub/services/connector/internal/server"
	"github.com/seghub/seghub/services/connector/internal/store"
)

// Service is the connector service.
type Service struct {
	server *server.Server
}

// New opens the store (migrating it) and builds the server.
func New(ctx context.Context, p *app.Platform) (*Service, error) {
	st, err := store.Open(ctx, p.DB, p.Secrets)
	if err != nil {
		return nil, err
	}
	return &Service{server: server.New(st, p.Config, p.Egress)}, nil
}

// Register implements app.Service.
func (s *Service) Register(g *grpcserver.Server) {
	connectorv1.RegisterConnectorServiceServer(g.Server, s.server)
}

// Run implements app.Service; the connector has no background work.
func (s *Service) Run(ctx context.Context) error { return nil }
