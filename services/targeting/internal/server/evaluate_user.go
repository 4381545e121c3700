package server

import (
	"context"
	"encoding/binary"
	"fmt"
	"hash/fnv"
	"strconv"

	targetingv1 "github.com/seghub/seghub/gen/seghub/targeting/v1"
	"github.com/seghub/seghub/pkg/apperr"
	"github.com/seghub/seghub/services/targeting/internal/index"
)

// MaxEvaluateIDs bounds EvaluateUser's experience_ids and segment_ids each.
const MaxEvaluateIDs = 100

// EvaluateUser implements TargetingService: every experience and public
// segment of the environment as the user's flags, or only those named. When
// the caller's versions still hold it answers not_modified without
// evaluating, so an OFREP client polling an unchanged answer costs a version
// comparison.
func (s *Server) EvaluateUser(ctx context.Context, req *targetingv1.EvaluateUserRequest) (*targetingv1.EvaluateUserResponse, error) {
	if err := checkEvaluateUser(req); err != nil {
		return nil, err
	}
	env := environment(ctx)
	xs, err := s.experiences(ctx, env)
	if err != nil {
		return nil, err
	}
	xver := experiencesVersion(xs)
	resp := &targetingv1.EvaluateUserResponse{ExperiencesVersion: xver}
	s.index.Read(env, func(v index.View) {
		if err = ready(v); err != nil {
			return
		}
		resp.IndexVersion = v.Version()
		if req.GetIfIndexVersion() != 0 && req.GetIfIndexVersion() == v.Version() && req.GetIfExperiencesVersion() == xver {
			// Nothing this answer depends on moved: no evaluation at all.
			resp.NotModified, resp.AnswerHash = true, req.GetIfAnswerHash()
			return
		}
		all := len(req.GetExperienceIds()) == 0 && len(req.GetSegmentIds()) == 0
		resp.Experiences = evaluateExperiences(v, xs, req.GetUserId(), all, req.GetExperienceIds())
		resp.Segments = evaluateSegments(v, req.GetUserId(), all, req.GetSegmentIds())
	})
	if err != nil {
		return nil, err
	}
	if resp.NotModified {
		return resp, nil
	}
	// The index version moves with every membership change of the
	// environment; most leave this user's answer as it was.
	resp.AnswerHash = answerHash(resp)
	if req.GetIfAnswerHash() != "" && req.GetIfAnswerHash() == resp.AnswerHash {
		resp.NotModified, resp.Experiences, resp.Segments = true, nil, nil
	}
	return resp, nil
}

// answerHash fingerprints every evaluated field of an answer.
func answerHash(resp *targetingv1.EvaluateUserResponse) string {
	h := fnv.New64a()
	field := func(s string) {
		_, _ = h.Write([]byte(s))
		_, _ = h.Write([]byte{0})
	}
	flag := func(b bool) {
		if b {
			field("1")
		} else {
			field("0")
		}
	}
	for _, x := range resp.GetExperiences() {
		field(x.GetExperienceId())
		field(x.GetName())
		field(x.GetType().String())
		flag(x.GetEnabled())
		flag(x.GetEligible())
		field(x.GetDecidedBy())
		field(x.GetReason())
	}
	field("segments")
	for _, sg := range resp.GetSegments() {
		field(sg.GetSegmentId())
		flag(sg.GetIsMember())
	}
	return strconv.FormatUint(h.Sum64(), 36)
}

func checkEvaluateUser(req *targetingv1.EvaluateUserRequest) error {
	if err := checkID("user_id", req.GetUserId()); err != nil {
		return err
	}
	if err := apperr.Identifier("user_id", req.GetUserId()); err != nil {
		return err
	}
	for field, ids := range map[string][]string{"experience_ids": req.GetExperienceIds(), "segment_ids": req.GetSegmentIds()} {
		if len(ids) > MaxEvaluateIDs {
			return apperr.TooLarge(field, fmt.Sprintf("has %d ids; at most %d per request", len(ids), MaxEvaluateIDs))
		}
		for i, id := range ids {
			if err := checkID(fmt.Sprintf("%s[%d]", field, i), id); err != nil {
				return err
			}
		}
	}
	return nil
}

// evaluateExperiences evaluates every experience (all) or those named, in
// the list's order (name, then id).
func evaluateExperiences(v index.View, xs []compiledExperience, userID string, all bool, only []string) []*targetingv1.ExperienceEvaluation {
	want := idSet(only)
	r := viewReader{v}
	out := make([]*targetingv1.ExperienceEvaluation, 0, len(xs))
	for _, cx := range xs {
		x := cx.x
		if !all && !want[x.GetExperienceId()] {
			continue
		}
		e := &targetingv1.ExperienceEvaluation{ExperienceId: x.GetExperienceId(), Name: x.GetName(), Type: x.GetType(), Enabled: x.GetEnabled()}
		if !x.GetEnabled() {
			e.DecidedBy, e.Reason = "disabled", "the experience is disabled"
		} else {
			res := cx.program.Eval(r, userID)
			e.Eligible, e.DecidedBy, e.Reason = res.Eligible, res.DecidedBy, res.Reason
		}
		out = append(out, e)
	}
	return out
}

// evaluateSegments answers membership of every public segment (all) or of
// the public ones named. Private segments are never flags: a client key sits
// in a web page, and their ids are not for it.
func evaluateSegments(v index.View, userID string, all bool, only []string) []*targetingv1.SegmentEvaluation {
	dense, known := v.Dense(userID)
	member := func(sg *index.Segment) bool { return known && sg.Members.Contains(dense) }
	if !all {
		var out []*targetingv1.SegmentEvaluation
		seen := map[string]bool{}
		for _, id := range only {
			sg, ok := v.Segment(id)
			if !ok || !sg.Public || seen[id] {
				continue
			}
			seen[id] = true
			out = append(out, &targetingv1.SegmentEvaluation{SegmentId: sg.ID, IsMember: member(sg)})
		}
		return out
	}
	segs := v.Segments()
	out := make([]*targetingv1.SegmentEvaluation, 0, len(segs))
	for _, sg := range segs {
		if sg.Public {
			out = append(out, &targetingv1.SegmentEvaluation{SegmentId: sg.ID, IsMember: member(sg)})
		}
	}
	return out
}

func idSet(ids []string) map[string]bool {
	if len(ids) == 0 {
		return nil
	}
	m := make(map[string]bool, len(ids))
	for _, id := range ids {
		m[id] = true
	}
	return m
}

// experiencesVersion fingerprints the experiences an answer is computed
// from: each one's id, last change and enabled flag (an audience or name
// change moves update_time). The index version does not move when an
// experience changes, so an ETag needs both.
func experiencesVersion(xs []compiledExperience) string {
	h := fnv.New64a()
	var b [8]byte
	for _, cx := range xs {
		_, _ = h.Write([]byte(cx.x.GetExperienceId()))
		binary.LittleEndian.PutUint64(b[:], uint64(cx.x.GetUpdateTime().AsTime().UnixNano()))
		_, _ = h.Write(b[:])
		if cx.x.GetEnabled() {
			_, _ = h.Write([]byte{1})
		} else {
			_, _ = h.Write([]byte{0})
		}
	}
	return strconv.FormatUint(h.Sum64(), 36) + "." + strconv.Itoa(len(xs))
}
