// Package targeting is the targeting service. Until its own issue fills it in, it is
// registered and answers Unimplemented.
package targeting

import (
	"context"

	targetingv1 "github.com/seghub/seghub/gen/seghub/targeting/v1"
	"github.com/seghub/seghub/pkg/app"
	"github.com/seghub/seghub/pkg/grpcserver"
)

// Service is the targeting service.
type Service struct {
	targetingv1.UnimplementedTargetingServiceServer
	p *app.Platform
}

// New returns the service on p.
func New(_ context.Context, p *app.Platform) (*Service, error) {
	return &Service{p: p}, nil
}

// Register implements app.Service.
func (s *Service) Register(g *grpcserver.Server) {
	targetingv1.RegisterTargetingServiceServer(g.Server, s)
}

// Run implements app.Service; this service has no background work yet.
func (s *Service) Run(ctx context.Context) error { return nil }
