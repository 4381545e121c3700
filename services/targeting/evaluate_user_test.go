package targeting_test

import (
	"fmt"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	segmentsyncv1 "github.com/seghub/seghub/gen/seghub/segmentsync/v1"
	targetingv1 "github.com/seghub/seghub/gen/seghub/targeting/v1"
	"github.com/seghub/seghub/pkg/app/apptest"
)

// EvaluateUser (OFREP's bulk answer) agrees with EvaluateExperience and
// CheckMembership for every experience, public segment and user, never lists
// a private segment, and answers not_modified only while the user's answer
// is the same.
func TestEvaluateUserAgreesWithSingleLookups(t *testing.T) {
	f := start(t, false)
	ctx := apptest.Context(t, 60*time.Second)
	seg := func(name string, vis segmentsyncv1.Visibility, members ...string) string {
		s, err := f.ss.CreateSegment(ctx, &segmentsyncv1.CreateSegmentRequest{Name: name, Visibility: vis})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.ss.AddMembers(ctx, &segmentsyncv1.AddMembersRequest{SegmentId: s.GetSegment().GetSegmentId(), UserIds: members}); err != nil {
			t.Fatal(err)
		}
		return s.GetSegment().GetSegmentId()
	}
	beta := seg("Beta", segmentsyncv1.Visibility_VISIBILITY_PUBLIC, "ann", "bob")
	trial := seg("Trial", segmentsyncv1.Visibility_VISIBILITY_PUBLIC, "bob", "cid")
	hidden := seg("Hidden", segmentsyncv1.Visibility_VISIBILITY_PRIVATE, "ann")
	waitMember(t, ctx, f.tg, hidden, "ann")
	in := func(s string) *targetingv1.Condition {
		return &targetingv1.Condition{Operator: targetingv1.Operator_OPERATOR_IN_SEGMENT, SegmentId: s}
	}
	audiences := []*targetingv1.Audience{
		{Everyone: true},
		{Match: &targetingv1.ConditionGroup{Conditions: []*targetingv1.Condition{in(beta)}}},
		{Match: &targetingv1.ConditionGroup{Combinator: targetingv1.Combinator_COMBINATOR_AND, Conditions: []*targetingv1.Condition{in(beta), in(trial)}}},
		{Match: &targetingv1.ConditionGroup{Combinator: targetingv1.Combinator_COMBINATOR_OR, Conditions: []*targetingv1.Condition{in(hidden), in(trial)}}},
	}
	for i, a := range audiences {
		if _, err := f.tg.CreateExperience(ctx, &targetingv1.CreateExperienceRequest{Name: fmt.Sprintf("x%d", i), Type: targetingv1.ExperienceType_EXPERIENCE_TYPE_PRODUCT_TOUR, Audience: a, Disabled: i == 3}); err != nil {
			t.Fatal(err)
		}
	}
	for _, user := range []string{"ann", "bob", "cid", "dee"} {
		out, err := f.tg.EvaluateUser(ctx, &targetingv1.EvaluateUserRequest{UserId: user})
		if err != nil {
			t.Fatal(err)
		}
		if len(out.GetExperiences()) != len(audiences) || len(out.GetSegments()) != 2 || out.GetAnswerHash() == "" || out.GetNotModified() {
			t.Fatalf("%s: %v", user, out)
		}
		for _, x := range out.GetExperiences() {
			one, err := f.tg.EvaluateExperience(ctx, &targetingv1.EvaluateExperienceRequest{ExperienceId: x.GetExperienceId(), UserId: user})
			if err != nil {
				t.Fatal(err)
			}
			if x.GetEligible() != one.GetEligible() || x.GetDecidedBy() != one.GetDecidedBy() {
				t.Errorf("%s, %s: bulk %v, single %v", user, x.GetName(), x, one)
			}
		}
		for _, s := range out.GetSegments() {
			if s.GetSegmentId() == hidden {
				t.Errorf("%s: the private segment is listed", user)
			}
			one, err := f.tg.CheckMembership(ctx, &targetingv1.CheckMembershipRequest{SegmentId: s.GetSegmentId(), UserId: user})
			if err != nil {
				t.Fatal(err)
			}
			if s.GetIsMember() != one.GetIsMember() {
				t.Errorf("%s in %s: bulk %v, single %v", user, s.GetSegmentId(), s.GetIsMember(), one.GetIsMember())
			}
		}
	}
	// Named flags only; a private or unknown segment is simply absent.
	only, err := f.tg.EvaluateUser(ctx, &targetingv1.EvaluateUserRequest{UserId: "ann", SegmentIds: []string{beta, hidden, "nope"}})
	if err != nil || len(only.GetSegments()) != 1 || only.GetSegments()[0].GetSegmentId() != beta || len(only.GetExperiences()) != 0 {
		t.Fatalf("named segments: %v %v", only, err)
	}

	first, err := f.tg.EvaluateUser(ctx, &targetingv1.EvaluateUserRequest{UserId: "ann"})
	if err != nil {
		t.Fatal(err)
	}
	again := &targetingv1.EvaluateUserRequest{UserId: "ann", IfIndexVersion: first.GetIndexVersion(), IfExperiencesVersion: first.GetExperiencesVersion(), IfAnswerHash: first.GetAnswerHash()}
	if out, err := f.tg.EvaluateUser(ctx, again); err != nil || !out.GetNotModified() || len(out.GetExperiences()) != 0 || out.GetAnswerHash() != first.GetAnswerHash() {
		t.Fatalf("unchanged: %v %v", out, err)
	}
	// cid joins Beta: the index version moves, ann's answer does not.
	if _, err := f.ss.AddMembers(ctx, &segmentsyncv1.AddMembersRequest{SegmentId: beta, UserIds: []string{"cid"}}); err != nil {
		t.Fatal(err)
	}
	waitMember(t, ctx, f.tg, beta, "cid")
	if out, err := f.tg.EvaluateUser(ctx, again); err != nil || !out.GetNotModified() || out.GetIndexVersion() == first.GetIndexVersion() {
		t.Fatalf("another user's change: %v %v, want not_modified at a newer version", out, err)
	}
	// ann leaves Beta: her answer changes.
	if _, err := f.ss.RemoveMembers(ctx, &segmentsyncv1.RemoveMembersRequest{SegmentId: beta, UserIds: []string{"ann"}}); err != nil {
		t.Fatal(err)
	}
	eventually(t, func() error {
		out, err := f.tg.EvaluateUser(ctx, again)
		if err != nil || out.GetNotModified() || out.GetAnswerHash() == first.GetAnswerHash() {
			return fmt.Errorf("ann left Beta: %v %v", out, err)
		}
		return nil
	})

	// Bounds and checks.
	for _, req := range []*targetingv1.EvaluateUserRequest{
		{},
		{UserId: "a\x1bb"},
		{UserId: "ann", ExperienceIds: make([]string, 101)},
		{UserId: "ann", SegmentIds: []string{""}},
	} {
		if _, err := f.tg.EvaluateUser(ctx, req); status.Code(err) != codes.InvalidArgument {
			t.Errorf("%v: %v, want InvalidArgument", req, err)
		}
	}
}
