// Package server implements SegmentSyncService's users, segments, membership
// and WatchMembership RPCs over the store: validate, call the store, map.
package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/timestamppb"

	segmentsyncv1 "github.com/seghub/seghub/gen/seghub/segmentsync/v1"
	"github.com/seghub/seghub/pkg/apperr"
	"github.com/seghub/seghub/pkg/auth"
	"github.com/seghub/seghub/pkg/paging"
	"github.com/seghub/seghub/services/segmentsync/internal/rules"
	"github.com/seghub/seghub/services/segmentsync/internal/store"
	"github.com/seghub/seghub/services/segmentsync/internal/syncengine"
)

// Limits, documented in the proto and enforced here.
const (
	MaxUsersPerUpsert    = 1000
	MaxIDsPerCall        = 100000
	MaxUserIDLength      = 256
	MaxNameLength        = 200
	MaxDescriptionLength = 2000
	MaxPropertyName      = 128
	MaxPropertiesPerUser = 200
	MaxStringValue       = 4096
)

// StreamLimits bound what one ReplaceMembers stream may carry, since it is
// held in memory until the client closes it (settings
// replace-members-max-ids and replace-members-max-bytes).
type StreamLimits struct {
	// MaxIDs is the most distinct user ids.
	MaxIDs int
	// MaxBytes is the most bytes of user ids, duplicates included.
	MaxBytes int64
}

// Server implements the data-plane RPCs of SegmentSyncService.
type Server struct {
	segmentsyncv1.UnimplementedSegmentSyncServiceServer
	store   *store.Store
	watcher *Watcher
	inbound *Inbound
	engine  *syncengine.Engine
	replace StreamLimits
	// computed previews rules and is woken by new or changed rules; nil
	// evaluates previews over the store alone.
	computed Computed
	// betweenReads runs between a segment's two reads, of its row and of
	// its computation state (tests interleave a first evaluation there).
	betweenReads func()
}

// Computed is the computed-segment evaluator as the RPCs use it.
type Computed interface {
	Preview(ctx context.Context, env string, rule *segmentsyncv1.SegmentRule, sample int) (uint64, []string, error)
	Wake()
}

// SetComputed attaches the computed-segment evaluator.
func (s *Server) SetComputed(c Computed) { s.computed = c }

// New returns the server; inbound and engine may be nil where webhooks or
// syncs are not served.
func New(st *store.Store, w *Watcher, inbound *Inbound, engine *syncengine.Engine, replace StreamLimits) *Server {
	return &Server{store: st, watcher: w, inbound: inbound, engine: engine, replace: replace}
}

func env(ctx context.Context) string { return auth.MustEnvironment(ctx) }

func checkUserID(field, id string) error {
	switch {
	case strings.TrimSpace(id) == "":
		return apperr.Invalid(field, "must not be blank")
	case len(id) > MaxUserIDLength:
		return apperr.Invalid(field, fmt.Sprintf("must be at most %d bytes", MaxUserIDLength))
	case !utf8.ValidString(id):
		return apperr.Invalid(field, "must be valid UTF-8")
	}
	return nil
}

func checkIDs(field string, ids []string, limit int) error {
	if len(ids) > limit {
		return apperr.TooLarge(field, fmt.Sprintf("has %d ids; at most %d per call", len(ids), limit))
	}
	for i, id := range ids {
		if err := checkUserID(fmt.Sprintf("%s[%d]", field, i), id); err != nil {
			return err
		}
	}
	return nil
}

func propFromPB(field string, v *segmentsyncv1.PropertyValue) (*store.Prop, error) {
	switch k := v.GetKind().(type) {
	case *segmentsyncv1.PropertyValue_StringValue:
		if len(k.StringValue) > MaxStringValue {
			return nil, apperr.Invalid(field, fmt.Sprintf("string values are at most %d bytes", MaxStringValue))
		}
		return &store.Prop{Kind: store.PropString, S: k.StringValue}, nil
	case *segmentsyncv1.PropertyValue_NumberValue:
		// NaN and ±Inf have no JSON form: stored, they would make the user's
		// properties unreadable.
		if math.IsNaN(k.NumberValue) || math.IsInf(k.NumberValue, 0) {
			return nil, apperr.Invalid(field, "number values must be finite (not NaN or infinity)")
		}
		return &store.Prop{Kind: store.PropNumber, N: k.NumberValue}, nil
	case *segmentsyncv1.PropertyValue_BoolValue:
		return &store.Prop{Kind: store.PropBool, B: k.BoolValue}, nil
	case *segmentsyncv1.PropertyValue_TimestampValue:
		if err := k.TimestampValue.CheckValid(); err != nil {
			return nil, apperr.Invalid(field, "invalid timestamp: "+err.Error())
		}
		return &store.Prop{Kind: store.PropTime, T: k.TimestampValue.AsTime()}, nil
	case *segmentsyncv1.PropertyValue_NullValue:
		if !k.NullValue {
			return nil, apperr.Invalid(field, "null_value must be true to remove a property")
		}
		return nil, nil
	}
	return nil, apperr.Invalid(field, "must hold one of string_value, number_value, bool_value, timestamp_value or null_value")
}

// PropToPB converts a stored property value.
func PropToPB(p store.Prop) *segmentsyncv1.PropertyValue {
	switch p.Kind {
	case store.PropString:
		return &segmentsyncv1.PropertyValue{Kind: &segmentsyncv1.PropertyValue_StringValue{StringValue: p.S}}
	case store.PropNumber:
		return &segmentsyncv1.PropertyValue{Kind: &segmentsyncv1.PropertyValue_NumberValue{NumberValue: p.N}}
	case store.PropBool:
		return &segmentsyncv1.PropertyValue{Kind: &segmentsyncv1.PropertyValue_BoolValue{BoolValue: p.B}}
	default:
		return &segmentsyncv1.PropertyValue{Kind: &segmentsyncv1.PropertyValue_TimestampValue{TimestampValue: timestamppb.New(p.T)}}
	}
}

// UserToPB converts a stored user.
func UserToPB(u *store.User) *segmentsyncv1.User {
	pb := &segmentsyncv1.User{UserId: u.ID, DenseId: u.Dense, CreateTime: timestamppb.New(u.Created), UpdateTime: timestamppb.New(u.Updated), Properties: map[string]*segmentsyncv1.PropertyValue{}}
	for k, v := range u.Props {
		pb.Properties[k] = PropToPB(v)
	}
	return pb
}

// UpsertUsers implements SegmentSyncService.
func (s *Server) UpsertUsers(ctx context.Context, req *segmentsyncv1.UpsertUsersRequest) (*segmentsyncv1.UpsertUsersResponse, error) {
	if len(req.GetUsers()) == 0 {
		return nil, apperr.Invalid("users", "must hold at least one user")
	}
	if len(req.GetUsers()) > MaxUsersPerUpsert {
		return nil, apperr.TooLarge("users", fmt.Sprintf("has %d users; at most %d per call", len(req.GetUsers()), MaxUsersPerUpsert))
	}
	ups := make([]store.UserUpsert, 0, len(req.GetUsers()))
	for i, u := range req.GetUsers() {
		if err := checkUserID(fmt.Sprintf("users[%d].user_id", i), u.GetUserId()); err != nil {
			return nil, err
		}
		if len(u.GetProperties()) > MaxPropertiesPerUser {
			return nil, apperr.Invalid(fmt.Sprintf("users[%d].properties", i), fmt.Sprintf("at most %d properties per user", MaxPropertiesPerUser))
		}
		up := store.UserUpsert{ID: u.GetUserId(), Props: map[string]*store.Prop{}}
		for name, v := range u.GetProperties() {
			field := fmt.Sprintf("users[%d].properties[%q]", i, name)
			if strings.TrimSpace(name) == "" || len(name) > MaxPropertyName {
				return nil, apperr.Invalid(field, fmt.Sprintf("property names are 1 to %d bytes", MaxPropertyName))
			}
			p, err := propFromPB(field, v)
			if err != nil {
				return nil, err
			}
			up.Props[name] = p
		}
		ups = append(ups, up)
	}
	created, updated, err := s.store.UpsertUsers(ctx, env(ctx), ups)
	if err != nil {
		return nil, err
	}
	return &segmentsyncv1.UpsertUsersResponse{Created: uint32(created), Updated: uint32(updated)}, nil
}

// GetUser implements SegmentSyncService.
func (s *Server) GetUser(ctx context.Context, req *segmentsyncv1.GetUserRequest) (*segmentsyncv1.GetUserResponse, error) {
	if err := checkUserID("user_id", req.GetUserId()); err != nil {
		return nil, err
	}
	u, err := s.store.GetUser(ctx, env(ctx), req.GetUserId())
	if err != nil {
		return nil, err
	}
	return &segmentsyncv1.GetUserResponse{User: UserToPB(u), SegmentIds: u.Segments}, nil
}

// userPropertiesLimit bounds ListUserProperties: property names are few in
// practice, and a picker of more than this many helps nobody.
const userPropertiesLimit = 1000

// ListUserProperties implements SegmentSyncService.
func (s *Server) ListUserProperties(ctx context.Context, _ *segmentsyncv1.ListUserPropertiesRequest) (*segmentsyncv1.ListUserPropertiesResponse, error) {
	stats, more, err := s.store.UserPropertyStats(ctx, env(ctx), userPropertiesLimit)
	if err != nil {
		return nil, err
	}
	out := &segmentsyncv1.ListUserPropertiesResponse{Truncated: more, Properties: make([]*segmentsyncv1.UserProperty, 0, len(stats))}
	for _, st := range stats {
		out.Properties = append(out.Properties, &segmentsyncv1.UserProperty{Name: st.Name, Type: propertyTypeToPB(st.Kind), UserCount: uint64(st.Users)})
	}
	return out, nil
}

func propertyTypeToPB(k store.PropKind) segmentsyncv1.PropertyType {
	switch k {
	case store.PropString:
		return segmentsyncv1.PropertyType_PROPERTY_TYPE_STRING
	case store.PropNumber:
		return segmentsyncv1.PropertyType_PROPERTY_TYPE_NUMBER
	case store.PropBool:
		return segmentsyncv1.PropertyType_PROPERTY_TYPE_BOOL
	case store.PropTime:
		return segmentsyncv1.PropertyType_PROPERTY_TYPE_TIMESTAMP
	}
	return segmentsyncv1.PropertyType_PROPERTY_TYPE_UNSPECIFIED
}

// DeleteUser implements SegmentSyncService.
func (s *Server) DeleteUser(ctx context.Context, req *segmentsyncv1.DeleteUserRequest) (*segmentsyncv1.DeleteUserResponse, error) {
	if err := checkUserID("user_id", req.GetUserId()); err != nil {
		return nil, err
	}
	segs, err := s.store.DeleteUser(ctx, env(ctx), req.GetUserId())
	if err != nil {
		return nil, err
	}
	return &segmentsyncv1.DeleteUserResponse{SegmentIds: segs}, nil
}

func visibilityToStore(field string, v segmentsyncv1.Visibility, def string) (string, error) {
	switch v {
	case segmentsyncv1.Visibility_VISIBILITY_UNSPECIFIED:
		return def, nil
	case segmentsyncv1.Visibility_VISIBILITY_PUBLIC:
		return store.Public, nil
	case segmentsyncv1.Visibility_VISIBILITY_PRIVATE:
		return store.Private, nil
	}
	return "", apperr.Invalid(field, "must be VISIBILITY_PUBLIC or VISIBILITY_PRIVATE")
}

// SegmentToPB converts a stored segment.
func SegmentToPB(sg *store.Segment) *segmentsyncv1.Segment {
	v := segmentsyncv1.Visibility_VISIBILITY_PUBLIC
	if sg.Visibility == store.Private {
		v = segmentsyncv1.Visibility_VISIBILITY_PRIVATE
	}
	return &segmentsyncv1.Segment{SegmentId: sg.ID, Name: sg.Name, Description: sg.Description, Visibility: v, MemberCount: sg.Count, Version: sg.Version, ExternalId: sg.ExternalID, CreateTime: timestamppb.New(sg.Created), UpdateTime: timestamppb.New(sg.Updated)}
}

// segmentsToPB converts segments with their rules and computation state.
//
// A computed segment becomes LIVE in the transaction that writes its first
// evaluation's members, and a live segment's members only change later, so
// a member count read after the state read LIVE includes that evaluation:
// the count of a segment answered LIVE is read after its state. (Read the
// other way round, a segment made live between the two reads showed LIVE
// with the count from before its first evaluation.) A count read after a
// COMPUTING state may be newer than the state; that is no lie, the segment
// is still computing. segs were read before their state: the live computed
// ones are read again.
func (s *Server) segmentsToPB(ctx context.Context, segs ...*store.Segment) ([]*segmentsyncv1.Segment, error) {
	ids := make([]string, len(segs))
	for i, sg := range segs {
		ids[i] = sg.ID
	}
	if s.betweenReads != nil {
		s.betweenReads()
	}
	infos, err := s.store.ComputedInfos(ctx, env(ctx), ids)
	if err != nil {
		return nil, err
	}
	out := make([]*segmentsyncv1.Segment, len(segs))
	for i, sg := range segs {
		if info := infos[sg.ID]; info != nil && info.State == store.Live {
			switch again, err := s.store.GetSegment(ctx, env(ctx), sg.ID, false); {
			case err == nil:
				sg = again
			case apperr.Code(err) != codes.NotFound:
				return nil, err
			}
			// Deleted meanwhile: answered as read, as if just before.
		}
		out[i] = withComputed(SegmentToPB(sg), infos[sg.ID])
	}
	return out, nil
}

// segmentToPB reads segment id's computation state, then the segment: see
// segmentsToPB for why in this order.
func (s *Server) segmentToPB(ctx context.Context, id string) (*segmentsyncv1.Segment, error) {
	infos, err := s.store.ComputedInfos(ctx, env(ctx), []string{id})
	if err != nil {
		return nil, err
	}
	if s.betweenReads != nil {
		s.betweenReads()
	}
	sg, err := s.store.GetSegment(ctx, env(ctx), id, false)
	if err != nil {
		return nil, err
	}
	return withComputed(SegmentToPB(sg), infos[id]), nil
}

// withComputed adds a computed segment's rule and state to out.
func withComputed(out *segmentsyncv1.Segment, info *store.ComputedInfo) *segmentsyncv1.Segment {
	if info == nil {
		return out
	}
	out.Rule, out.ComputePercent = info.Rule, info.Percent
	out.ComputeState = segmentsyncv1.ComputeState_COMPUTE_STATE_COMPUTING
	if info.State == store.Live {
		out.ComputeState = segmentsyncv1.ComputeState_COMPUTE_STATE_LIVE
	}
	return out
}

func (s *Server) wake() {
	if s.computed != nil {
		s.computed.Wake()
	}
}

// MaxPreviewSample bounds PreviewSegmentRule's sample.
const MaxPreviewSample = 100

// PreviewSegmentRule implements SegmentSyncService.
func (s *Server) PreviewSegmentRule(ctx context.Context, req *segmentsyncv1.PreviewSegmentRuleRequest) (*segmentsyncv1.PreviewSegmentRuleResponse, error) {
	size := int(req.GetSampleSize())
	switch {
	case size < 0 || size > MaxPreviewSample:
		return nil, apperr.Invalid("sample_size", fmt.Sprintf("must be 0..%d", MaxPreviewSample))
	case size == 0:
		size = 10
	}
	prog, err := rules.Compile(req.GetRule())
	if err != nil {
		return nil, err
	}
	var count uint64
	var sample []string
	if s.computed != nil {
		count, sample, err = s.computed.Preview(ctx, env(ctx), req.GetRule(), size)
	} else {
		count, sample, err = s.store.Preview(ctx, env(ctx), prog, nil, rules.Today(time.Now()), size)
	}
	if err != nil {
		return nil, err
	}
	return &segmentsyncv1.PreviewSegmentRuleResponse{MemberCount: count, SampleUserIds: sample}, nil
}

func checkName(name string) (string, error) { return apperr.Name("name", name, MaxNameLength) }

func checkDescription(d string) error {
	if utf8.RuneCountInString(d) > MaxDescriptionLength {
		return apperr.Invalid("description", fmt.Sprintf("must be at most %d characters", MaxDescriptionLength))
	}
	return nil
}

func checkSegmentID(id string) error {
	if strings.TrimSpace(id) == "" {
		return apperr.Invalid("segment_id", "must name a segment")
	}
	return nil
}

// CreateSegment implements SegmentSyncService.
func (s *Server) CreateSegment(ctx context.Context, req *segmentsyncv1.CreateSegmentRequest) (*segmentsyncv1.CreateSegmentResponse, error) {
	name, err := checkName(req.GetName())
	if err != nil {
		return nil, err
	}
	if err := checkDescription(req.GetDescription()); err != nil {
		return nil, err
	}
	vis, err := visibilityToStore("visibility", req.GetVisibility(), store.Public)
	if err != nil {
		return nil, err
	}
	if req.GetRule() != nil {
		if _, err := rules.Compile(req.GetRule()); err != nil {
			return nil, err
		}
		sg, err := s.store.CreateComputedSegment(ctx, env(ctx), name, req.GetDescription(), vis, req.GetRule())
		if err != nil {
			return nil, err
		}
		// The answer is read before the evaluator is woken: it shows the
		// segment as created (computing), not a race with its first evaluation.
		out, err := s.segmentsToPB(ctx, sg)
		if err != nil {
			return nil, err
		}
		s.wake()
		return &segmentsyncv1.CreateSegmentResponse{Segment: out[0]}, nil
	}
	sg, err := s.store.CreateSegment(ctx, env(ctx), name, req.GetDescription(), vis, "")
	if err != nil {
		return nil, err
	}
	return &segmentsyncv1.CreateSegmentResponse{Segment: SegmentToPB(sg)}, nil
}

// GetSegment implements SegmentSyncService.
func (s *Server) GetSegment(ctx context.Context, req *segmentsyncv1.GetSegmentRequest) (*segmentsyncv1.GetSegmentResponse, error) {
	if err := checkSegmentID(req.GetSegmentId()); err != nil {
		return nil, err
	}
	out, err := s.segmentToPB(ctx, req.GetSegmentId())
	if err != nil {
		return nil, err
	}
	return &segmentsyncv1.GetSegmentResponse{Segment: out}, nil
}

type segmentCursor struct {
	Name string `json:"n"`
	ID   string `json:"i"`
}

// ListSegments implements SegmentSyncService.
func (s *Server) ListSegments(ctx context.Context, req *segmentsyncv1.ListSegmentsRequest) (*segmentsyncv1.ListSegmentsResponse, error) {
	var cur segmentCursor
	size, err := paging.Parse(req.GetPageSize(), req.GetPageToken(), &cur)
	if err != nil {
		return nil, err
	}
	vis, err := visibilityToStore("visibility", req.GetVisibility(), "")
	if err != nil {
		return nil, err
	}
	search := strings.TrimSpace(req.GetNameContains())
	if utf8.RuneCountInString(search) > 200 {
		return nil, apperr.Invalid("name_contains", "must be at most 200 characters")
	}
	if strings.ContainsFunc(search, unicode.IsControl) {
		return nil, apperr.Invalid("name_contains", "must not contain control characters")
	}
	targetable := strings.TrimSpace(req.GetTargetableBy())
	if len(targetable) > MaxPropertyName {
		return nil, apperr.Invalid("targetable_by", fmt.Sprintf("property names are at most %d bytes", MaxPropertyName))
	}
	segs, err := s.store.ListSegments(ctx, env(ctx), store.SegmentFilter{Visibility: vis, NonEmpty: req.GetNonEmpty(), NameContains: search, TargetableBy: targetable}, cur.Name, cur.ID, size+1)
	if err != nil {
		return nil, err
	}
	resp := &segmentsyncv1.ListSegmentsResponse{}
	if len(segs) > size {
		segs = segs[:size]
		last := segs[size-1]
		resp.NextPageToken = paging.Encode(segmentCursor{Name: last.Name, ID: last.ID})
	}
	if resp.Segments, err = s.segmentsToPB(ctx, segs...); err != nil {
		return nil, err
	}
	return resp, nil
}

// UpdateSegment implements SegmentSyncService.
func (s *Server) UpdateSegment(ctx context.Context, req *segmentsyncv1.UpdateSegmentRequest) (*segmentsyncv1.UpdateSegmentResponse, error) {
	if err := checkSegmentID(req.GetSegmentId()); err != nil {
		return nil, err
	}
	var up store.SegmentUpdate
	if req.Name != nil {
		name, err := checkName(req.GetName())
		if err != nil {
			return nil, err
		}
		up.Name = &name
	}
	if req.Description != nil {
		if err := checkDescription(req.GetDescription()); err != nil {
			return nil, err
		}
		d := req.GetDescription()
		up.Description = &d
	}
	if req.GetVisibility() != segmentsyncv1.Visibility_VISIBILITY_UNSPECIFIED {
		v, err := visibilityToStore("visibility", req.GetVisibility(), "")
		if err != nil {
			return nil, err
		}
		up.Visibility = &v
	}
	if req.GetRule() != nil {
		if _, err := rules.Compile(req.GetRule()); err != nil {
			return nil, err
		}
		up.Rule = req.GetRule()
	}
	if up.Name == nil && up.Description == nil && up.Visibility == nil && up.Rule == nil {
		return nil, apperr.Invalid("name", "nothing to update: set name, description, visibility or rule")
	}
	sg, err := s.store.UpdateSegment(ctx, env(ctx), req.GetSegmentId(), up)
	if err != nil {
		return nil, err
	}
	out, err := s.segmentsToPB(ctx, sg)
	if err != nil {
		return nil, err
	}
	if up.Rule != nil {
		s.wake() // after the answer is read, as in CreateSegment
	}
	return &segmentsyncv1.UpdateSegmentResponse{Segment: out[0]}, nil
}

// DeleteSegment implements SegmentSyncService.
func (s *Server) DeleteSegment(ctx context.Context, req *segmentsyncv1.DeleteSegmentRequest) (*segmentsyncv1.DeleteSegmentResponse, error) {
	if err := checkSegmentID(req.GetSegmentId()); err != nil {
		return nil, err
	}
	if err := s.store.DeleteSegment(ctx, env(ctx), req.GetSegmentId()); err != nil {
		return nil, err
	}
	if s.engine != nil {
		// Its syncs are removed; what destinations hold is left as it is.
		if err := s.engine.OnSegmentDeleted(ctx, env(ctx), req.GetSegmentId()); err != nil {
			return nil, err
		}
	}
	return &segmentsyncv1.DeleteSegmentResponse{}, nil
}

// AddMembers implements SegmentSyncService.
func (s *Server) AddMembers(ctx context.Context, req *segmentsyncv1.AddMembersRequest) (*segmentsyncv1.AddMembersResponse, error) {
	if err := checkSegmentID(req.GetSegmentId()); err != nil {
		return nil, err
	}
	if err := checkIDs("user_ids", req.GetUserIds(), MaxIDsPerCall); err != nil {
		return nil, err
	}
	res, err := s.store.ChangeMembers(ctx, env(ctx), req.GetSegmentId(), req.GetUserIds(), nil)
	if err != nil {
		return nil, err
	}
	return &segmentsyncv1.AddMembersResponse{Added: res.Added, Version: res.Version, MemberCount: res.Count}, nil
}

// RemoveMembers implements SegmentSyncService.
func (s *Server) RemoveMembers(ctx context.Context, req *segmentsyncv1.RemoveMembersRequest) (*segmentsyncv1.RemoveMembersResponse, error) {
	if err := checkSegmentID(req.GetSegmentId()); err != nil {
		return nil, err
	}
	if err := checkIDs("user_ids", req.GetUserIds(), MaxIDsPerCall); err != nil {
		return nil, err
	}
	res, err := s.store.ChangeMembers(ctx, env(ctx), req.GetSegmentId(), nil, req.GetUserIds())
	if err != nil {
		return nil, err
	}
	return &segmentsyncv1.RemoveMembersResponse{Removed: res.Removed, Version: res.Version, MemberCount: res.Count}, nil
}

// ReplaceMembers implements SegmentSyncService: ids are gathered until the
// client closes the stream and applied in one transaction, so a broken
// stream, or one over its limits, changes nothing.
func (s *Server) ReplaceMembers(stream segmentsyncv1.SegmentSyncService_ReplaceMembersServer) error {
	ctx := stream.Context()
	segmentID := ""
	// Ids are collected as sent and deduplicated by sorting (the store wants
	// them sorted anyway), not through a map of strings: when the collected
	// ids pass the distinct-id limit they are compacted, and refused only if
	// still over it; the next compaction waits for another limit's worth.
	ids := make([]string, 0, 1024)
	compactAt := s.replace.MaxIDs
	var idBytes int64
	for i := 0; ; i++ {
		req, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return err // broken stream: nothing was written
		}
		if i == 0 {
			if err := checkSegmentID(req.GetSegmentId()); err != nil {
				return err
			}
			segmentID = req.GetSegmentId()
			if _, err := s.store.GetSegment(ctx, env(ctx), segmentID, false); err != nil {
				return err
			}
		} else if req.GetSegmentId() != "" && req.GetSegmentId() != segmentID {
			return apperr.Invalid("segment_id", fmt.Sprintf("message %d names segment %q but the stream is for %q", i, req.GetSegmentId(), segmentID))
		}
		for j, id := range req.GetUserIds() {
			if err := checkUserID(fmt.Sprintf("message[%d].user_ids[%d]", i, j), id); err != nil {
				return err
			}
			if idBytes += int64(len(id)); idBytes > s.replace.MaxBytes {
				return apperr.TooLarge("user_ids", fmt.Sprintf("one ReplaceMembers stream carries at most %d bytes of user ids (replace-members-max-bytes); message %d goes over it and nothing was applied", s.replace.MaxBytes, i))
			}
		}
		ids = append(ids, req.GetUserIds()...)
		if len(ids) > compactAt {
			ids = store.SortedUnique(ids)
			if len(ids) > s.replace.MaxIDs {
				return apperr.TooLarge("user_ids", fmt.Sprintf("one ReplaceMembers stream carries at most %d distinct user ids (replace-members-max-ids); it is over it by message %d and nothing was applied", s.replace.MaxIDs, i))
			}
			compactAt = len(ids) + s.replace.MaxIDs
		}
	}
	if segmentID == "" {
		return apperr.Invalid("segment_id", "the stream held no message naming the segment")
	}
	ids = store.SortedUnique(ids)
	res, err := s.store.ReplaceMembers(ctx, env(ctx), segmentID, ids)
	if err != nil {
		return err
	}
	return stream.SendAndClose(&segmentsyncv1.ReplaceMembersResponse{Added: res.Added, Removed: res.Removed, MemberCount: res.Count, Version: res.Version})
}

// GetMembers implements SegmentSyncService; the page token is the last
// dense id returned.
func (s *Server) GetMembers(ctx context.Context, req *segmentsyncv1.GetMembersRequest) (*segmentsyncv1.GetMembersResponse, error) {
	if err := checkSegmentID(req.GetSegmentId()); err != nil {
		return nil, err
	}
	size, err := paging.Size(req.GetPageSize())
	if err != nil {
		return nil, err
	}
	var after struct {
		D uint32 `json:"d"`
		S bool   `json:"s"`
	}
	if err := paging.Decode(req.GetPageToken(), &after); err != nil {
		return nil, err
	}
	sg, err := s.store.GetSegment(ctx, env(ctx), req.GetSegmentId(), true)
	if err != nil {
		return nil, err
	}
	it := sg.Members.Iterator()
	if after.S {
		it.AdvanceIfNeeded(after.D + 1)
	}
	dense := make([]uint32, 0, size)
	for it.HasNext() && len(dense) < size {
		d := it.Next()
		if after.S && d <= after.D {
			continue
		}
		dense = append(dense, d)
	}
	names, err := s.store.UserIDs(ctx, env(ctx), dense)
	if err != nil {
		return nil, err
	}
	resp := &segmentsyncv1.GetMembersResponse{}
	for _, d := range dense {
		if id, ok := names[d]; ok {
			resp.UserIds = append(resp.UserIds, id)
		}
	}
	if it.HasNext() && len(dense) == size {
		after.D, after.S = dense[len(dense)-1], true
		resp.NextPageToken = paging.Encode(after)
	}
	return resp, nil
}

// IsMember implements SegmentSyncService.
func (s *Server) IsMember(ctx context.Context, req *segmentsyncv1.IsMemberRequest) (*segmentsyncv1.IsMemberResponse, error) {
	if err := checkSegmentID(req.GetSegmentId()); err != nil {
		return nil, err
	}
	if err := checkUserID("user_id", req.GetUserId()); err != nil {
		return nil, err
	}
	sg, err := s.store.GetSegment(ctx, env(ctx), req.GetSegmentId(), true)
	if err != nil {
		return nil, err
	}
	m, err := s.store.DenseIDs(ctx, env(ctx), []string{req.GetUserId()})
	if err != nil {
		return nil, err
	}
	d, ok := m[req.GetUserId()]
	return &segmentsyncv1.IsMemberResponse{IsMember: ok && sg.Members.Contains(d), Version: sg.Version}, nil
}
