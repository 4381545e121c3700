package server

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	connectorv1 "github.com/seghub/seghub/gen/seghub/connector/v1"
	"github.com/seghub/seghub/pkg/apperr"
	"github.com/seghub/seghub/pkg/destinations"
)

// Syncs is what the connector asks segmentsync, which owns syncs and users,
// about connections. Both calls act for the environment of ctx.
type Syncs interface {
	// RecurringInUse counts the enabled recurring syncs per destination type.
	RecurringInUse(ctx context.Context, types []string) (map[string]uint32, error)
	// IdentityProblem says why a sync could not read identity property prop
	// for destination type typ, or "" when it can (EnableSync's rule).
	IdentityProblem(ctx context.Context, prop, typ string) (string, error)
}

// UseSyncs connects the server to segmentsync. Without it connections carry
// no recurring-sync count and custom identity properties cannot be checked.
func (s *Server) UseSyncs(x Syncs, log *slog.Logger) {
	s.syncs, s.log = x, log
}

// countTimeout bounds the count a connection answer waits for: the answer
// is served without it rather than late.
const countTimeout = 3 * time.Second

// maxIdentityProperty bounds an identity property name (a user property's).
const maxIdentityProperty = 256

// withUsage sets each connection's recurring-sync limit and, from
// segmentsync, how many recurring syncs to its type are in use ("N of M").
// A failed count leaves recurring_syncs_in_use unset and is logged: the
// connection is still answered.
func (s *Server) withUsage(ctx context.Context, conns ...*connectorv1.Connection) {
	var types []string
	seen := map[string]bool{}
	for _, c := range conns {
		t, ok := destinations.Lookup(c.GetType())
		if !ok || !t.SegmentsOut {
			continue
		}
		limit := uint32(s.cfg.RecurringLimit(t.Name, t.RecurringLimit))
		c.RecurringSyncsLimit = &limit
		if !seen[t.Name] {
			seen[t.Name] = true
			types = append(types, t.Name)
		}
	}
	if len(types) == 0 || s.syncs == nil {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, countTimeout)
	defer cancel()
	inUse, err := s.syncs.RecurringInUse(ctx, types)
	if err != nil {
		if s.log != nil {
			s.log.WarnContext(ctx, "connector: counting recurring syncs failed; answering without the count", "types", types, "err", err)
		}
		return
	}
	for _, c := range conns {
		if seen[c.GetType()] {
			n := inUse[c.GetType()]
			c.RecurringSyncsInUse = &n
		}
	}
}

// checkIdentity refuses an identity property no sync to a connection of t
// could read, by the rule EnableSync applies (segmentsync owns the users, so
// it decides): user_id and t's own property always pass, any other must be
// held by some user. Sources (segments in) match incoming ids on it and may
// create the users that hold it, so they are not checked.
func (s *Server) checkIdentity(ctx context.Context, t destinations.Type, prop string) error {
	if !t.SegmentsOut && !t.EventsOut {
		return nil
	}
	if prop == "user_id" || prop == t.DefaultIdentity {
		return nil
	}
	if len(prop) > maxIdentityProperty {
		return apperr.Invalid("settings.identity_property", fmt.Sprintf("is longer than %d characters", maxIdentityProperty))
	}
	if s.syncs == nil {
		return apperr.Unavailable("cannot check identity property %q: segmentsync is not reachable from this connector; nothing was saved", prop)
	}
	why, err := s.syncs.IdentityProblem(ctx, prop, t.Name)
	if err != nil {
		return apperr.Unavailable("could not check identity property %q against the users segmentsync holds (%v); nothing was saved, try again", prop, err)
	}
	if why != "" {
		return apperr.Invalid("settings.identity_property", why)
	}
	return nil
}
