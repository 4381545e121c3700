// Package eventrelay is the eventrelay service. Until its own issue fills it in, it is
// registered and answers Unimplemented.
package eventrelay

import (
	"context"

	eventrelayv1 "github.com/seghub/seghub/gen/seghub/eventrelay/v1"
	"github.com/seghub/seghub/pkg/app"
	"github.com/seghub/seghub/pkg/grpcserver"
)

// Service is the eventrelay service.
type Service struct {
	eventrelayv1.UnimplementedEventRelayServiceServer
	p *app.Platform
}

// New returns the service on p.
func New(_ context.Context, p *app.Platform) (*Service, error) {
	return &Service{p: p}, nil
}

// Register implements app.Service.
func (s *Service) Register(g *grpcserver.Server) {
	eventrelayv1.RegisterEventRelayServiceServer(g.Server, s)
}

// Run implements app.Service; this service has no background work yet.
func (s *Service) Run(ctx context.Context) error { return nil }
