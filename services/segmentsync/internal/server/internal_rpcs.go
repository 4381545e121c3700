package server

import (
	"context"
	"fmt"
	"strings"

	segmentsyncv1 "github.com/seghub/seghub/gen/seghub/segmentsync/v1"
	"github.com/seghub/seghub/pkg/apperr"
	"github.com/seghub/seghub/pkg/destinations"
)

// Bounds of the internal RPCs the connector calls: one connection page
// names few types, and a property name is as long as a user's.
const (
	maxCountTypes   = 50
	maxTypeName     = 64
	maxPropertyName = 256
)

// CountRecurringSyncs implements SegmentSyncService.
func (s *Server) CountRecurringSyncs(ctx context.Context, req *segmentsyncv1.CountRecurringSyncsRequest) (*segmentsyncv1.CountRecurringSyncsResponse, error) {
	e, err := s.engineOrErr()
	if err != nil {
		return nil, err
	}
	types := req.GetDestinationTypes()
	switch {
	case len(types) == 0:
		return nil, apperr.Invalid("destination_types", "name at least one destination type")
	case len(types) > maxCountTypes:
		return nil, apperr.Invalid("destination_types", fmt.Sprintf("at most %d types a call, got %d", maxCountTypes, len(types)))
	}
	out := &segmentsyncv1.CountRecurringSyncsResponse{RecurringSyncs: make(map[string]uint32, len(types))}
	for i, t := range types {
		if t == "" || len(t) > maxTypeName {
			return nil, apperr.Invalid(fmt.Sprintf("destination_types[%d]", i), fmt.Sprintf("must be 1 to %d characters", maxTypeName))
		}
		if _, done := out.RecurringSyncs[t]; done {
			continue
		}
		n, err := e.RecurringInUse(ctx, env(ctx), t)
		if err != nil {
			return nil, err
		}
		out.RecurringSyncs[t] = uint32(n)
	}
	return out, nil
}

// CheckIdentityProperty implements SegmentSyncService.
func (s *Server) CheckIdentityProperty(ctx context.Context, req *segmentsyncv1.CheckIdentityPropertyRequest) (*segmentsyncv1.CheckIdentityPropertyResponse, error) {
	e, err := s.engineOrErr()
	if err != nil {
		return nil, err
	}
	prop := strings.TrimSpace(req.GetIdentityProperty())
	if prop == "" || len(prop) > maxPropertyName {
		return nil, apperr.Invalid("identity_property", fmt.Sprintf("must be 1 to %d characters", maxPropertyName))
	}
	t, ok := destinations.Lookup(req.GetDestinationType())
	if !ok {
		return nil, apperr.Invalid("destination_type", fmt.Sprintf("unknown destination type %q", req.GetDestinationType()))
	}
	why, err := e.IdentityProblem(ctx, env(ctx), prop, "", t)
	if err != nil {
		return nil, err
	}
	return &segmentsyncv1.CheckIdentityPropertyResponse{Accepted: why == "", Reason: why}, nil
}
