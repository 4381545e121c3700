package server

import (
	"context"
	"fmt"
	"sort"
	"strings"

	segmentsyncv1 "github.com/seghub/seghub/gen/seghub/segmentsync/v1"
	"github.com/seghub/seghub/pkg/apperr"
	"github.com/seghub/seghub/pkg/destinations"
	"github.com/seghub/seghub/services/segmentsync/internal/store"
)

// IdentifyUser implements SegmentSyncService: it merges the tool's ids into
// the user's properties, so a sync keyed on the tool's identity property
// (AB Tasty's ABTastyVisitorId) finds the user.
func (s *Server) IdentifyUser(ctx context.Context, req *segmentsyncv1.IdentifyUserRequest) (*segmentsyncv1.IdentifyUserResponse, error) {
	if err := checkUserID("user_id", req.GetUserId()); err != nil {
		return nil, err
	}
	ids := map[string]string{}
	if src := strings.TrimSpace(req.GetSource()); src != "" {
		t, ok := destinations.Lookup(src)
		if !ok || !t.SegmentsOut || t.DefaultIdentity == "" || t.DefaultIdentity == "user_id" {
			return nil, apperr.Invalid("source", fmt.Sprintf("%q is not a destination with its own visitor id; use one of %s, or set properties by name", src, identifiedSources()))
		}
		if strings.TrimSpace(req.GetVisitorId()) == "" {
			return nil, apperr.Invalid("visitor_id", fmt.Sprintf("must not be blank: it is stored as %s's %s", t.DisplayName, t.DefaultIdentity))
		}
		ids[t.DefaultIdentity] = req.GetVisitorId()
	} else if req.GetVisitorId() != "" {
		return nil, apperr.Invalid("source", fmt.Sprintf("must name the tool visitor_id comes from (one of %s)", identifiedSources()))
	}
	if len(req.GetProperties()) > MaxPropertiesPerUser {
		return nil, apperr.Invalid("properties", fmt.Sprintf("at most %d properties per user", MaxPropertiesPerUser))
	}
	for name, v := range req.GetProperties() {
		field := fmt.Sprintf("properties[%q]", name)
		switch {
		case strings.TrimSpace(name) == "" || len(name) > MaxPropertyName:
			return nil, apperr.Invalid(field, fmt.Sprintf("property names are 1 to %d bytes", MaxPropertyName))
		case name == "user_id":
			return nil, apperr.Invalid(field, "user_id is the user's own id, not a property")
		case strings.TrimSpace(v) == "":
			return nil, apperr.Invalid(field, "must not be blank; remove a property with UpsertUsers and a null value")
		case len(v) > MaxStringValue:
			return nil, apperr.Invalid(field, fmt.Sprintf("string values are at most %d bytes", MaxStringValue))
		}
		if old, dup := ids[name]; dup && old != v {
			return nil, apperr.Invalid(field, fmt.Sprintf("differs from visitor_id, which source also stores as %s", name))
		}
		ids[name] = v
	}
	if len(ids) == 0 {
		return nil, apperr.Invalid("visitor_id", "nothing to attach: give source with visitor_id, or properties")
	}
	up := store.UserUpsert{ID: req.GetUserId(), Props: map[string]*store.Prop{}}
	names := make([]string, 0, len(ids))
	for name, v := range ids {
		up.Props[name] = &store.Prop{Kind: store.PropString, S: v}
		names = append(names, name)
	}
	sort.Strings(names)
	created, _, err := s.store.UpsertUsers(ctx, env(ctx), []store.UserUpsert{up})
	if err != nil {
		return nil, err
	}
	return &segmentsyncv1.IdentifyUserResponse{Created: created == 1, Properties: names}, nil
}

// identifiedSources lists the destination types with a visitor id of their own.
func identifiedSources() string {
	var out []string
	for _, t := range destinations.All() {
		if t.SegmentsOut && t.DefaultIdentity != "" && t.DefaultIdentity != "user_id" {
			out = append(out, fmt.Sprintf("%q (%s)", t.Name, t.DefaultIdentity))
		}
	}
	return strings.Join(out, ", ")
}
