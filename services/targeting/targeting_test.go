package targeting_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sort"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"pgregory.net/rapid"

	segmentsyncv1 "github.com/seghub/seghub/gen/seghub/segmentsync/v1"
	targetingv1 "github.com/seghub/seghub/gen/seghub/targeting/v1"
	"github.com/seghub/seghub/pkg/app/apptest"
	"github.com/seghub/seghub/services/gateway"
	"github.com/seghub/seghub/services/segmentsync"
	"github.com/seghub/seghub/services/targeting"
	"github.com/seghub/seghub/services/targeting/internal/index"
)

type fixture struct {
	e   *apptest.Env
	ss  segmentsyncv1.SegmentSyncServiceClient
	tg  targetingv1.TargetingServiceClient
	svc *targeting.Service
}

func start(t *testing.T, postgres bool) *fixture {
	t.Helper()
	e := apptest.New(t, apptest.Options{NeedBus: true, Postgres: postgres})
	ss, err := segmentsync.New(context.Background(), e.P)
	if err != nil {
		t.Fatal(err)
	}
	tg, err := targeting.New(context.Background(), e.P)
	if err != nil {
		t.Fatal(err)
	}
	e.Add(ss, tg)
	e.Start()
	return &fixture{e: e, ss: segmentsyncv1.NewSegmentSyncServiceClient(e.Dial(e.A.Member)), tg: targetingv1.NewTargetingServiceClient(e.Dial(e.A.Member)), svc: tg}
}

// eventually retries fn until it returns nil or 10 s pass.
func eventually(t *testing.T, fn func() error) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := fn()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal(err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestLookupsFollowSegmentsync(t *testing.T) {
	f := start(t, false)
	ctx := apptest.Context(t, 30*time.Second)
	seg, _ := f.ss.CreateSegment(ctx, &segmentsyncv1.CreateSegmentRequest{Name: "Trial"})
	sid := seg.GetSegment().GetSegmentId()
	add, err := f.ss.AddMembers(ctx, &segmentsyncv1.AddMembersRequest{SegmentId: sid, UserIds: []string{"ann", "bob"}})
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, func() error {
		r, err := f.tg.CheckMembership(ctx, &targetingv1.CheckMembershipRequest{SegmentId: sid, UserId: "ann"})
		if err != nil || !r.GetIsMember() {
			return fmt.Errorf("ann not yet a member: %v, %v", r, err)
		}
		return nil
	})
	r, _ := f.tg.CheckMembership(ctx, &targetingv1.CheckMembershipRequest{SegmentId: sid, UserId: "nobody"})
	if r.GetIsMember() || r.GetIndexVersion() == 0 {
		t.Fatalf("unknown user: %v", r)
	}
	_, err = f.tg.CheckMembership(ctx, &targetingv1.CheckMembershipRequest{SegmentId: "seg_missing", UserId: "ann"})
	if status.Code(err) != codes.NotFound {
		t.Fatalf("unknown segment: %v", err)
	}
	_ = add
	if _, err := f.ss.RemoveMembers(ctx, &segmentsyncv1.RemoveMembersRequest{SegmentId: sid, UserIds: []string{"ann"}}); err != nil {
		t.Fatal(err)
	}
	eventually(t, func() error {
		r, _ := f.tg.CheckMembership(ctx, &targetingv1.CheckMembershipRequest{SegmentId: sid, UserId: "ann"})
		if r.GetIsMember() {
			return fmt.Errorf("removal not applied")
		}
		return nil
	})
	b, err := f.tg.BatchCheck(ctx, &targetingv1.BatchCheckRequest{Checks: []*targetingv1.MembershipCheck{{UserId: "ann", SegmentId: sid}, {UserId: "bob", SegmentId: sid}, {UserId: "zed", SegmentId: sid}}})
	if err != nil || fmt.Sprint(b.GetIsMember()) != "[false true false]" {
		t.Fatalf("batch = %v, %v", b, err)
	}
	stream, _ := f.tg.BatchCheckStream(ctx)
	for i := 0; i < 3; i++ {
		_ = stream.Send(&targetingv1.BatchCheckStreamRequest{Checks: []*targetingv1.MembershipCheck{{UserId: "bob", SegmentId: sid}}})
		resp, err := stream.Recv()
		if err != nil || !resp.GetIsMember()[0] {
			t.Fatalf("stream answer %d = %v, %v", i, resp, err)
		}
	}
	_ = stream.CloseSend()
	us, _ := f.tg.ListUserSegments(ctx, &targetingv1.ListUserSegmentsRequest{UserId: "bob"})
	if len(us.GetSegmentIds()) != 1 || us.GetSegmentIds()[0] != sid {
		t.Fatalf("user segments = %v", us)
	}

	// Only public, non-empty segments are offered to builders.
	empty, _ := f.ss.CreateSegment(ctx, &segmentsyncv1.CreateSegmentRequest{Name: "Empty"})
	priv, _ := f.ss.CreateSegment(ctx, &segmentsyncv1.CreateSegmentRequest{Name: "Private", Visibility: segmentsyncv1.Visibility_VISIBILITY_PRIVATE})
	_, _ = f.ss.AddMembers(ctx, &segmentsyncv1.AddMembersRequest{SegmentId: priv.GetSegment().GetSegmentId(), UserIds: []string{"bob"}})
	eventually(t, func() error {
		ts, err := f.tg.ListTargetableSegments(ctx, &targetingv1.ListTargetableSegmentsRequest{})
		if err != nil {
			return err
		}
		if len(ts.GetSegments()) != 1 || ts.GetSegments()[0].GetSegmentId() != sid {
			return fmt.Errorf("targetable = %v (empty %s, private %s)", ts.GetSegments(), empty.GetSegment().GetSegmentId(), priv.GetSegment().GetSegmentId())
		}
		return nil
	})

	// Another environment sees nothing.
	other := targetingv1.NewTargetingServiceClient(f.e.Dial(f.e.B.Member))
	eventually(t, func() error {
		_, err := other.CheckMembership(ctx, &targetingv1.CheckMembershipRequest{SegmentId: sid, UserId: "bob"})
		if status.Code(err) != codes.NotFound {
			return fmt.Errorf("environment B: %v", err)
		}
		return nil
	})
}

func TestExperiences(t *testing.T) {
	f := start(t, false)
	ctx := apptest.Context(t, 30*time.Second)
	seg, _ := f.ss.CreateSegment(ctx, &segmentsyncv1.CreateSegmentRequest{Name: "Trial"})
	sid := seg.GetSegment().GetSegmentId()
	_, _ = f.ss.AddMembers(ctx, &segmentsyncv1.AddMembersRequest{SegmentId: sid, UserIds: []string{"ann"}})
	_, _ = f.ss.UpsertUsers(ctx, &segmentsyncv1.UpsertUsersRequest{Users: []*segmentsyncv1.User{
		{UserId: "ann", Properties: map[string]*segmentsyncv1.PropertyValue{"seats": {Kind: &segmentsyncv1.PropertyValue_NumberValue{NumberValue: 3}}}},
		{UserId: "bob", Properties: map[string]*segmentsyncv1.PropertyValue{"seats": {Kind: &segmentsyncv1.PropertyValue_NumberValue{NumberValue: 300}}}},
	}})
	eventually(t, func() error {
		r, err := f.tg.CheckMembership(ctx, &targetingv1.CheckMembershipRequest{SegmentId: sid, UserId: "ann"})
		if err != nil || !r.GetIsMember() {
			return fmt.Errorf("index not ready: %v %v", r, err)
		}
		return nil
	})
	tour, err := f.tg.CreateExperience(ctx, &targetingv1.CreateExperienceRequest{Name: "Onboarding tour", Type: targetingv1.ExperienceType_EXPERIENCE_TYPE_PRODUCT_TOUR, Audience: &targetingv1.Audience{Match: &targetingv1.ConditionGroup{
		Combinator: targetingv1.Combinator_COMBINATOR_AND,
		Conditions: []*targetingv1.Condition{
			{Operator: targetingv1.Operator_OPERATOR_IN_SEGMENT, SegmentId: sid},
			{Operator: targetingv1.Operator_OPERATOR_LESS_THAN, Property: "seats", Value: &targetingv1.Condition_NumberValue{NumberValue: 10}},
		}}}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.tg.CreateExperience(ctx, &targetingv1.CreateExperienceRequest{Name: "Everyone checklist", Type: targetingv1.ExperienceType_EXPERIENCE_TYPE_CHECKLIST, Audience: &targetingv1.Audience{Everyone: true}}); err != nil {
		t.Fatal(err)
	}
	_, err = f.tg.CreateExperience(ctx, &targetingv1.CreateExperienceRequest{Name: "Bad", Type: targetingv1.ExperienceType_EXPERIENCE_TYPE_CHECKLIST, Audience: &targetingv1.Audience{Match: &targetingv1.ConditionGroup{Conditions: []*targetingv1.Condition{{Operator: targetingv1.Operator_OPERATOR_IN_SEGMENT, SegmentId: "seg_nope"}}}}})
	if status.Code(err) != codes.InvalidArgument || !strings.Contains(status.Convert(err).Message(), "seg_nope") {
		t.Fatalf("unknown segment in audience: %v", err)
	}
	// Properties reach the index through the same feed; wait for ann's.
	eventually(t, func() error {
		ev, err := f.tg.EvaluateExperience(ctx, &targetingv1.EvaluateExperienceRequest{ExperienceId: tour.GetExperience().GetExperienceId(), UserId: "ann"})
		if err != nil || !ev.GetEligible() || ev.GetDecidedBy() != "match.conditions[1]" {
			return fmt.Errorf("evaluate ann = %v, %v", ev, err)
		}
		return nil
	})
	ev, _ := f.tg.EvaluateExperience(ctx, &targetingv1.EvaluateExperienceRequest{ExperienceId: tour.GetExperience().GetExperienceId(), UserId: "bob"})
	if ev.GetEligible() || ev.GetDecidedBy() != "match.conditions[0]" {
		t.Fatalf("evaluate bob = %v", ev)
	}
	tours, _ := f.tg.ListEligibleExperiences(ctx, &targetingv1.ListEligibleExperiencesRequest{UserId: "ann", Type: targetingv1.ExperienceType_EXPERIENCE_TYPE_PRODUCT_TOUR})
	if len(tours.GetExperiences()) != 1 {
		t.Fatalf("ann's tours = %v", tours)
	}
	all, _ := f.tg.ListEligibleExperiences(ctx, &targetingv1.ListEligibleExperiencesRequest{UserId: "bob"})
	if len(all.GetExperiences()) != 1 || all.GetExperiences()[0].GetType() != targetingv1.ExperienceType_EXPERIENCE_TYPE_CHECKLIST {
		t.Fatalf("bob's experiences = %v", all)
	}
	off := false
	if _, err := f.tg.UpdateExperience(ctx, &targetingv1.UpdateExperienceRequest{ExperienceId: tour.GetExperience().GetExperienceId(), Enabled: &off}); err != nil {
		t.Fatal(err)
	}
	ev, _ = f.tg.EvaluateExperience(ctx, &targetingv1.EvaluateExperienceRequest{ExperienceId: tour.GetExperience().GetExperienceId(), UserId: "ann"})
	if ev.GetEligible() || ev.GetDecidedBy() != "disabled" {
		t.Fatalf("disabled experience = %v", ev)
	}
	if _, err := f.tg.DeleteExperience(ctx, &targetingv1.DeleteExperienceRequest{ExperienceId: tour.GetExperience().GetExperienceId()}); err != nil {
		t.Fatal(err)
	}
	_, err = f.tg.GetExperience(ctx, &targetingv1.GetExperienceRequest{ExperienceId: tour.GetExperience().GetExperienceId()})
	if status.Code(err) != codes.NotFound {
		t.Fatalf("deleted experience: %v", err)
	}

	// REST answers as gRPC does, through the gateway.
	gw, err := gateway.New(ctx, f.e.P)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(gw.Handler())
	defer srv.Close()
	req, _ := http.NewRequest("GET", srv.URL+"/v1/targeting/segments/"+sid+"/members/ann", nil)
	req.Header.Set("Authorization", "Bearer "+f.e.A.Member)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	var rest targetingv1.CheckMembershipResponse
	if err := protojson.Unmarshal(body, &rest); err != nil || resp.StatusCode != 200 {
		t.Fatalf("REST %d %s", resp.StatusCode, body)
	}
	grpcAns, _ := f.tg.CheckMembership(ctx, &targetingv1.CheckMembershipRequest{SegmentId: sid, UserId: "ann"})
	if rest.GetIsMember() != grpcAns.GetIsMember() || rest.GetIndexVersion() != grpcAns.GetIndexVersion() {
		t.Fatalf("REST %v != gRPC %v", &rest, grpcAns)
	}
	req, _ = http.NewRequest("GET", srv.URL+"/v1/targeting/segments/seg_missing/members/ann", nil)
	req.Header.Set("Authorization", "Bearer "+f.e.A.Member)
	resp, _ = http.DefaultClient.Do(req)
	resp.Body.Close()
	if resp.StatusCode != 404 {
		t.Fatalf("REST unknown segment = %d", resp.StatusCode)
	}

	// The replica publishes the version it serves on /metrics.
	mresp, _ := http.Get(srv.URL + "/metrics")
	metrics, _ := io.ReadAll(mresp.Body)
	mresp.Body.Close()
	if !strings.Contains(string(metrics), `seghub_targeting_index_version{caught_up="true",environment="`+f.e.A.EnvironmentID+`"`) {
		t.Fatalf("/metrics lacks the index version:\n%.3000s", metrics)
	}
}

// The index equals the store under random add/remove sequences, on two
// replicas at once (the second started late, catching up from a snapshot).
func TestIndexEqualsStore(t *testing.T) {
	for _, pg := range []bool{false, true} {
		t.Run(map[bool]string{false: "sqlite", true: "postgres"}[pg], func(t *testing.T) {
			f := start(t, pg)
			ctx := apptest.Context(t, 120*time.Second)
			second, err := targeting.New(ctx, f.e.P)
			if err != nil {
				t.Fatal(err)
			}
			rctx, cancel := context.WithCancel(ctx)
			defer cancel()
			seg, _ := f.ss.CreateSegment(ctx, &segmentsyncv1.CreateSegmentRequest{Name: "P"})
			sid := seg.GetSegment().GetSegmentId()
			model := map[string]bool{}
			started := false
			rapid.Check(t, func(rt *rapid.T) {
				users := rapid.SliceOfN(rapid.SampledFrom([]string{"a", "b", "c", "d", "e", "f", "g"}), 1, 4).Draw(rt, "users")
				if rapid.Bool().Draw(rt, "add") {
					if _, err := f.ss.AddMembers(ctx, &segmentsyncv1.AddMembersRequest{SegmentId: sid, UserIds: users}); err != nil {
						rt.Fatal(err)
					}
					for _, u := range users {
						model[u] = true
					}
				} else {
					if _, err := f.ss.RemoveMembers(ctx, &segmentsyncv1.RemoveMembersRequest{SegmentId: sid, UserIds: users}); err != nil {
						rt.Fatal(err)
					}
					for _, u := range users {
						delete(model, u)
					}
				}
				if !started {
					started = true
					go func() { _ = second.Run(rctx) }()
				}
				var want []string
				for u := range model {
					want = append(want, u)
				}
				sort.Strings(want)
				for _, svc := range []*targeting.Service{f.svc, second} {
					eventually(t, func() error {
						var got []string
						svc.Index().Read(f.e.A.EnvironmentID, func(v index.View) { got = v.Members(sid) })
						if strings.Join(got, ",") != strings.Join(want, ",") {
							return fmt.Errorf("index %v, store %v", got, want)
						}
						return nil
					})
				}
			})
		})
	}
}
