// Package server implements TargetingService over the in-memory index and the
// experiences store.
package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
	"sync"
	"time"

	targetingv1 "github.com/seghub/seghub/gen/seghub/targeting/v1"
	"github.com/seghub/seghub/pkg/apperr"
	"github.com/seghub/seghub/pkg/auth"
	"github.com/seghub/seghub/pkg/paging"
	"github.com/seghub/seghub/pkg/telemetry/metrics"
	"github.com/seghub/seghub/services/targeting/internal/audience"
	"github.com/seghub/seghub/services/targeting/internal/index"
	"github.com/seghub/seghub/services/targeting/internal/store"
)

// Limits.
const (
	MaxBatchChecks = 10000
	MaxNameLength  = 200
	experiencesTTL = 2 * time.Second
	maxIDLength    = 256
)

// Server implements TargetingService.
type Server struct {
	targetingv1.UnimplementedTargetingServiceServer
	index *index.Index
	store *store.Store
	// published tells other replicas an environment's experiences changed.
	published func(env string)

	mu    sync.Mutex
	cache map[string]*compiled

	// metrics counts lookups by result (nil: not counted).
	metrics *metrics.Set
}

// CountLookups makes the server count its membership lookups on m; call it
// before serving.
func (s *Server) CountLookups(m *metrics.Set) { s.metrics = m }

// countCheck counts one membership check: one counter add, no labels built.
func (s *Server) countCheck(resp *targetingv1.CheckMembershipResponse, err error) {
	switch {
	case err != nil:
		s.metrics.Lookups(metrics.LookupError, 1)
	case resp.GetIsMember():
		s.metrics.Lookups(metrics.LookupMember, 1)
	default:
		s.metrics.Lookups(metrics.LookupNotMember, 1)
	}
}

// countBatch counts a batch's checks: at most two counter adds.
func (s *Server) countBatch(n int, out []bool, err error) {
	if s.metrics == nil {
		return
	}
	if err != nil {
		s.metrics.Lookups(metrics.LookupError, n)
		return
	}
	members := 0
	for _, m := range out {
		if m {
			members++
		}
	}
	s.metrics.Lookups(metrics.LookupMember, members)
	s.metrics.Lookups(metrics.LookupNotMember, len(out)-members)
}

// compiled is an environment's experiences with their audiences compiled.
type compiled struct {
	loaded time.Time
	list   []compiledExperience
}

type compiledExperience struct {
	x       *targetingv1.Experience
	program *audience.Program
}

// New returns the server; published may be nil.
func New(ix *index.Index, st *store.Store, published func(env string)) *Server {
	if published == nil {
		published = func(string) {}
	}
	return &Server{index: ix, store: st, published: published, cache: map[string]*compiled{}}
}

// Invalidate drops env's compiled experiences (on a change by any replica).
func (s *Server) Invalidate(env string) {
	s.mu.Lock()
	delete(s.cache, env)
	s.mu.Unlock()
}

func environment(ctx context.Context) string { return auth.MustEnvironment(ctx) }

func checkID(field, v string) error {
	if strings.TrimSpace(v) == "" {
		return apperr.Invalid(field, "is required")
	}
	if len(v) > maxIDLength {
		return apperr.Invalid(field, fmt.Sprintf("must be at most %d bytes", maxIDLength))
	}
	return nil
}

// ready refuses answers from a replica that has not caught up with env yet:
// it would call existing segments unknown.
func ready(v index.View) error {
	if !v.CaughtUp() {
		return apperr.Unavailable("this targeting replica is still loading its index; retry shortly")
	}
	return nil
}

// CheckMembership implements TargetingService.
func (s *Server) CheckMembership(ctx context.Context, req *targetingv1.CheckMembershipRequest) (*targetingv1.CheckMembershipResponse, error) {
	if err := checkID("segment_id", req.GetSegmentId()); err != nil {
		return nil, err
	}
	if err := checkID("user_id", req.GetUserId()); err != nil {
		return nil, err
	}
	var resp *targetingv1.CheckMembershipResponse
	var err error
	s.index.Read(environment(ctx), func(v index.View) {
		if err = ready(v); err != nil {
			return
		}
		member, known := v.IsMember(req.GetUserId(), req.GetSegmentId())
		if !known {
			err = apperr.NotFound("segment %q not found", req.GetSegmentId())
			return
		}
		resp = &targetingv1.CheckMembershipResponse{IsMember: member, IndexVersion: v.Version()}
	})
	s.countCheck(resp, err)
	return resp, err
}

func (s *Server) batch(ctx context.Context, checks []*targetingv1.MembershipCheck) ([]bool, int64, error) {
	if len(checks) > MaxBatchChecks {
		return nil, 0, apperr.TooLarge("checks", fmt.Sprintf("has %d checks; at most %d per request", len(checks), MaxBatchChecks))
	}
	out, version, _, err := s.check(ctx, checks, "", nil, nil)
	s.countBatch(len(checks), out, err)
	return out, version, err
}

// check answers checks, and the packed ids against segment sid into bits
// (when sid is set), from one view of the index; members counts the packed
// members.
func (s *Server) check(ctx context.Context, checks []*targetingv1.MembershipCheck, sid string, ids [][]byte, bits []byte) (out []bool, version int64, members int, err error) {
	out = make([]bool, len(checks))
	s.index.Read(environment(ctx), func(v index.View) {
		if err = ready(v); err != nil {
			return
		}
		version = v.Version()
		// Consecutive checks of one segment skip the segment lookup.
		var seg *index.Segment
		for i, c := range checks {
			if seg == nil || seg.ID != c.GetSegmentId() {
				var ok bool
				if seg, ok = v.Segment(c.GetSegmentId()); !ok {
					err = apperr.NotFound("checks[%d]: segment %q not found", i, c.GetSegmentId())
					return
				}
			}
			if d, ok := v.Dense(c.GetUserId()); ok {
				out[i] = seg.Members.Contains(d)
			}
		}
		if sid == "" {
			return
		}
		seg, ok := v.Segment(sid)
		if !ok {
			err = apperr.NotFound("packed_segment_id: segment %q not found", sid)
			return
		}
		members = v.MembersOf(seg, ids, bits)
	})
	return out, version, members, err
}

// BatchCheck implements TargetingService.
func (s *Server) BatchCheck(ctx context.Context, req *targetingv1.BatchCheckRequest) (*targetingv1.BatchCheckResponse, error) {
	out, v, err := s.batch(ctx, req.GetChecks())
	if err != nil {
		return nil, err
	}
	return &targetingv1.BatchCheckResponse{IsMember: out, IndexVersion: v}, nil
}

// BatchCheckStream implements TargetingService.
func (s *Server) BatchCheckStream(stream targetingv1.TargetingService_BatchCheckStreamServer) error {
	var p packed // its id slice is reused by every message of the stream
	for {
		req, err := stream.Recv()
		if err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
		resp, err := s.streamBatch(stream.Context(), req, &p)
		if err != nil {
			return err
		}
		if err := stream.Send(resp); err != nil {
			return err
		}
	}
}

// packed is a request's packed_user_ids split into ids (slices of the
// request's bytes: no allocation per id).
type packed struct{ ids [][]byte }

// split splits b into ids, each followed by '\n' (the last one's optional),
// refusing more than max ids (before holding them) and ids that are not
// valid UTF-8 or hold control characters, as every id field does; the check
// is one pass, and only an id with a byte outside printable ASCII is looked
// at closer.
func (p *packed) split(b []byte, max int) error {
	p.ids = p.ids[:0]
	start, plain := 0, true
	for i, c := range b {
		switch {
		case c == '\n':
			if err := p.add(b[start:i], plain, max); err != nil {
				return err
			}
			start, plain = i+1, true
		case c < 0x20 || c >= 0x7f:
			plain = false
		}
	}
	if start < len(b) {
		return p.add(b[start:], plain, max)
	}
	return nil
}

func (p *packed) add(id []byte, plain bool, max int) error {
	if len(p.ids) == max {
		return apperr.TooLarge("packed_user_ids", fmt.Sprintf("has more than %d ids (with checks); at most %d checks per request", max, MaxBatchChecks))
	}
	if !plain {
		if problem := apperr.IdentifierProblem(string(id)); problem != "" {
			return apperr.Invalid(fmt.Sprintf("packed_user_ids[%d]", len(p.ids)), problem)
		}
	}
	p.ids = append(p.ids, id)
	return nil
}

// streamBatch answers one BatchCheckStream request: its checks and its packed
// form, from one view of the index.
func (s *Server) streamBatch(ctx context.Context, req *targetingv1.BatchCheckStreamRequest, p *packed) (*targetingv1.BatchCheckStreamResponse, error) {
	sid := req.GetPackedSegmentId()
	if len(req.GetPackedUserIds()) > 0 && sid == "" {
		return nil, apperr.Invalid("packed_segment_id", "is required with packed_user_ids")
	}
	checks := req.GetChecks()
	if len(checks) > MaxBatchChecks {
		return nil, apperr.TooLarge("checks", fmt.Sprintf("has %d checks; at most %d per request", len(checks), MaxBatchChecks))
	}
	if err := p.split(req.GetPackedUserIds(), MaxBatchChecks-len(checks)); err != nil {
		return nil, err
	}
	var bits []byte
	if sid != "" {
		bits = make([]byte, (len(p.ids)+7)/8)
	}
	out, version, members, err := s.check(ctx, checks, sid, p.ids, bits)
	if s.metrics != nil {
		s.countBatch(len(checks), out, err)
		if err != nil {
			s.metrics.Lookups(metrics.LookupError, len(p.ids))
		} else {
			s.metrics.Lookups(metrics.LookupMember, members)
			s.metrics.Lookups(metrics.LookupNotMember, len(p.ids)-members)
		}
	}
	if err != nil {
		return nil, err
	}
	return &targetingv1.BatchCheckStreamResponse{IsMember: out, IndexVersion: version, PackedIsMember: bits}, nil
}

// ListUserSegments implements TargetingService.
func (s *Server) ListUserSegments(ctx context.Context, req *targetingv1.ListUserSegmentsRequest) (*targetingv1.ListUserSegmentsResponse, error) {
	if err := checkID("user_id", req.GetUserId()); err != nil {
		return nil, err
	}
	var resp *targetingv1.ListUserSegmentsResponse
	var err error
	s.index.Read(environment(ctx), func(v index.View) {
		if err = ready(v); err == nil {
			resp = &targetingv1.ListUserSegmentsResponse{SegmentIds: v.UserSegments(req.GetUserId()), IndexVersion: v.Version()}
		}
	})
	return resp, err
}

// nameCursor is the page token of lists ordered by (name, id): the last
// item returned.
type nameCursor struct {
	Name string `json:"n"`
	ID   string `json:"i"`
}

// ListTargetableSegments implements TargetingService: public, non-empty,
// ordered by (name, id) as the index lists them.
func (s *Server) ListTargetableSegments(ctx context.Context, req *targetingv1.ListTargetableSegmentsRequest) (*targetingv1.ListTargetableSegmentsResponse, error) {
	var cur nameCursor
	size, err := paging.Parse(req.GetPageSize(), req.GetPageToken(), &cur)
	if err != nil {
		return nil, err
	}
	var resp *targetingv1.ListTargetableSegmentsResponse
	s.index.Read(environment(ctx), func(v index.View) {
		if err = ready(v); err != nil {
			return
		}
		resp = &targetingv1.ListTargetableSegmentsResponse{IndexVersion: v.Version()}
		segs := v.Segments()
		from := sort.Search(len(segs), func(i int) bool {
			return segs[i].Name > cur.Name || (segs[i].Name == cur.Name && segs[i].ID > cur.ID)
		})
		for _, sg := range segs[from:] {
			if !sg.Public || sg.Members.IsEmpty() {
				continue
			}
			if len(resp.Segments) == size {
				last := resp.Segments[size-1]
				resp.NextPageToken = paging.Encode(nameCursor{Name: last.GetName(), ID: last.GetSegmentId()})
				break
			}
			resp.Segments = append(resp.Segments, &targetingv1.TargetableSegment{SegmentId: sg.ID, Name: sg.Name, MemberCount: sg.Members.GetCardinality()})
		}
	})
	return resp, err
}

func (s *Server) compile(ctx context.Context, a *targetingv1.Audience) (*audience.Program, error) {
	env := environment(ctx)
	var p *audience.Program
	var err error
	s.index.Read(env, func(v index.View) {
		if err = ready(v); err != nil {
			return
		}
		p, err = audience.Compile(a, func(id string) bool { _, ok := v.Segment(id); return ok })
	})
	return p, err
}

func checkName(name string) (string, error) { return apperr.Name("name", name, MaxNameLength) }

// checkType refuses experience types this version does not know, rather
// than storing them or filtering by them to an empty answer.
func checkType(t targetingv1.ExperienceType) error {
	if _, ok := targetingv1.ExperienceType_name[int32(t)]; !ok {
		return apperr.Invalid("type", fmt.Sprintf("unknown experience type %d", int32(t)))
	}
	return nil
}

// CreateExperience implements TargetingService.
func (s *Server) CreateExperience(ctx context.Context, req *targetingv1.CreateExperienceRequest) (*targetingv1.CreateExperienceResponse, error) {
	name, err := checkName(req.GetName())
	if err != nil {
		return nil, err
	}
	if req.GetType() == targetingv1.ExperienceType_EXPERIENCE_TYPE_UNSPECIFIED {
		return nil, apperr.Invalid("type", "must be EXPERIENCE_TYPE_PRODUCT_TOUR, EXPERIENCE_TYPE_CHECKLIST or EXPERIENCE_TYPE_GENERIC")
	}
	if err := checkType(req.GetType()); err != nil {
		return nil, err
	}
	if _, err := s.compile(ctx, req.GetAudience()); err != nil {
		return nil, err
	}
	x, err := s.store.Create(ctx, environment(ctx), &targetingv1.Experience{Name: name, Type: req.GetType(), Audience: req.GetAudience(), Enabled: !req.GetDisabled()})
	if err != nil {
		return nil, err
	}
	s.changed(environment(ctx))
	return &targetingv1.CreateExperienceResponse{Experience: x}, nil
}

func (s *Server) changed(env string) {
	s.Invalidate(env)
	s.published(env)
}

// GetExperience implements TargetingService.
func (s *Server) GetExperience(ctx context.Context, req *targetingv1.GetExperienceRequest) (*targetingv1.GetExperienceResponse, error) {
	if err := checkID("experience_id", req.GetExperienceId()); err != nil {
		return nil, err
	}
	x, err := s.store.Get(ctx, environment(ctx), req.GetExperienceId())
	if err != nil {
		return nil, err
	}
	return &targetingv1.GetExperienceResponse{Experience: x}, nil
}

// ListExperiences implements TargetingService.
func (s *Server) ListExperiences(ctx context.Context, req *targetingv1.ListExperiencesRequest) (*targetingv1.ListExperiencesResponse, error) {
	if err := checkType(req.GetType()); err != nil {
		return nil, err
	}
	var cur nameCursor
	size, err := paging.Parse(req.GetPageSize(), req.GetPageToken(), &cur)
	if err != nil {
		return nil, err
	}
	xs, err := s.store.ListPage(ctx, environment(ctx), req.GetType(), cur.Name, cur.ID, size+1)
	if err != nil {
		return nil, err
	}
	resp := &targetingv1.ListExperiencesResponse{Experiences: xs}
	if len(xs) > size {
		resp.Experiences = xs[:size]
		last := xs[size-1]
		resp.NextPageToken = paging.Encode(nameCursor{Name: last.GetName(), ID: last.GetExperienceId()})
	}
	return resp, nil
}

// UpdateExperience implements TargetingService.
func (s *Server) UpdateExperience(ctx context.Context, req *targetingv1.UpdateExperienceRequest) (*targetingv1.UpdateExperienceResponse, error) {
	if err := checkID("experience_id", req.GetExperienceId()); err != nil {
		return nil, err
	}
	x, err := s.store.Get(ctx, environment(ctx), req.GetExperienceId())
	if err != nil {
		return nil, err
	}
	if req.Name != nil {
		if x.Name, err = checkName(req.GetName()); err != nil {
			return nil, err
		}
	}
	if req.GetAudience() != nil {
		if _, err := s.compile(ctx, req.GetAudience()); err != nil {
			return nil, err
		}
		x.Audience = req.GetAudience()
	}
	if req.Enabled != nil {
		x.Enabled = req.GetEnabled()
	}
	if x, err = s.store.Update(ctx, environment(ctx), x); err != nil {
		return nil, err
	}
	s.changed(environment(ctx))
	return &targetingv1.UpdateExperienceResponse{Experience: x}, nil
}

// DeleteExperience implements TargetingService.
func (s *Server) DeleteExperience(ctx context.Context, req *targetingv1.DeleteExperienceRequest) (*targetingv1.DeleteExperienceResponse, error) {
	if err := checkID("experience_id", req.GetExperienceId()); err != nil {
		return nil, err
	}
	if err := s.store.Delete(ctx, environment(ctx), req.GetExperienceId()); err != nil {
		return nil, err
	}
	s.changed(environment(ctx))
	return &targetingv1.DeleteExperienceResponse{}, nil
}

// experiences returns env's compiled experiences, loading them at most every
// experiencesTTL (other replicas' writes also invalidate via NATS).
func (s *Server) experiences(ctx context.Context, env string) ([]compiledExperience, error) {
	s.mu.Lock()
	c := s.cache[env]
	s.mu.Unlock()
	if c != nil && time.Since(c.loaded) < experiencesTTL {
		return c.list, nil
	}
	xs, err := s.store.List(ctx, env, targetingv1.ExperienceType_EXPERIENCE_TYPE_UNSPECIFIED)
	if err != nil {
		return nil, err
	}
	c = &compiled{loaded: time.Now()}
	for _, x := range xs {
		// Validated on write; segments deleted since simply never match.
		p, err := audience.Compile(x.GetAudience(), func(string) bool { return true })
		if err != nil {
			return nil, apperr.Internal(err, "experience %s has an audience that no longer compiles", x.GetExperienceId())
		}
		c.list = append(c.list, compiledExperience{x: x, program: p})
	}
	s.mu.Lock()
	s.cache[env] = c
	s.mu.Unlock()
	return c.list, nil
}

type viewReader struct{ index.View }

// EvaluateExperience implements TargetingService.
func (s *Server) EvaluateExperience(ctx context.Context, req *targetingv1.EvaluateExperienceRequest) (*targetingv1.EvaluateExperienceResponse, error) {
	if err := checkID("experience_id", req.GetExperienceId()); err != nil {
		return nil, err
	}
	if err := checkID("user_id", req.GetUserId()); err != nil {
		return nil, err
	}
	env := environment(ctx)
	xs, err := s.experiences(ctx, env)
	if err != nil {
		return nil, err
	}
	for _, cx := range xs {
		if cx.x.GetExperienceId() != req.GetExperienceId() {
			continue
		}
		var resp *targetingv1.EvaluateExperienceResponse
		s.index.Read(env, func(v index.View) {
			if err = ready(v); err != nil {
				return
			}
			if !cx.x.GetEnabled() {
				resp = &targetingv1.EvaluateExperienceResponse{Eligible: false, DecidedBy: "disabled", Reason: "the experience is disabled", IndexVersion: v.Version()}
				return
			}
			r := cx.program.Eval(viewReader{v}, req.GetUserId())
			resp = &targetingv1.EvaluateExperienceResponse{Eligible: r.Eligible, DecidedBy: r.DecidedBy, Reason: r.Reason, IndexVersion: v.Version()}
		})
		return resp, err
	}
	return nil, apperr.NotFound("experience %q not found", req.GetExperienceId())
}

// ListEligibleExperiences implements TargetingService.
func (s *Server) ListEligibleExperiences(ctx context.Context, req *targetingv1.ListEligibleExperiencesRequest) (*targetingv1.ListEligibleExperiencesResponse, error) {
	if err := checkID("user_id", req.GetUserId()); err != nil {
		return nil, err
	}
	if err := checkType(req.GetType()); err != nil {
		return nil, err
	}
	env := environment(ctx)
	xs, err := s.experiences(ctx, env)
	if err != nil {
		return nil, err
	}
	resp := &targetingv1.ListEligibleExperiencesResponse{}
	s.index.Read(env, func(v index.View) {
		if err = ready(v); err != nil {
			return
		}
		resp.IndexVersion = v.Version()
		r := viewReader{v}
		for _, cx := range xs {
			if !cx.x.GetEnabled() || (req.GetType() != targetingv1.ExperienceType_EXPERIENCE_TYPE_UNSPECIFIED && cx.x.GetType() != req.GetType()) {
				continue
			}
			if cx.program.Eval(r, req.GetUserId()).Eligible {
				resp.Experiences = append(resp.Experiences, cx.x)
			}
		}
	})
	if err != nil {
		return nil, err
	}
	return resp, nil
}
