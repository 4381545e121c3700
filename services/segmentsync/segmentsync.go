// Package segmentsync is the segmentsync service. Until its own issue fills it in, it is
// registered and answers Unimplemented.
package segmentsync

import (
	"context"

	segmentsyncv1 "github.com/seghub/seghub/gen/seghub/segmentsync/v1"
	"github.com/seghub/seghub/pkg/app"
	"github.com/seghub/seghub/pkg/grpcserver"
)

// Service is the segmentsync service.
type Service struct {
	segmentsyncv1.UnimplementedSegmentSyncServiceServer
	p *app.Platform
}

// New returns the service on p.
func New(_ context.Context, p *app.Platform) (*Service, error) {
	return &Service{p: p}, nil
}

// Register implements app.Service.
func (s *Service) Register(g *grpcserver.Server) {
	segmentsyncv1.RegisterSegmentSyncServiceServer(g.Server, s)
}

// Run implements app.Service; this service has no background work yet.
func (s *Service) Run(ctx context.Context) error { return nil }
