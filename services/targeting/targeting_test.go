package targeting_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"sort"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"pgregory.net/rapid"

	segmentsyncv1 "github.com/seghub/seghub/gen/seghub/segmentsync/v1"
	targetingv1 "github.com/seghub/seghub/gen/seghub/targeting/v1"
	"github.com/seghub/seghub/pkg/app"
	"github.com/seghub/seghub/pkg/app/apptest"
	"github.com/seghub/seghub/pkg/auth"
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

func ids(xs []*targetingv1.Experience) string {
	var out []string
	for _, x := range xs {
		out = append(out, x.GetExperienceId())
	}
	sort.Strings(out)
	return strings.Join(out, ",")
}

func idsOf(xs ...*targetingv1.Experience) string { return ids(xs) }

// waitMember waits until f's replica has user in segment.
func waitMember(t *testing.T, ctx context.Context, tg targetingv1.TargetingServiceClient, sid, user string) {
	t.Helper()
	eventually(t, func() error {
		r, err := tg.CheckMembership(ctx, &targetingv1.CheckMembershipRequest{SegmentId: sid, UserId: user})
		if err != nil || !r.GetIsMember() {
			return fmt.Errorf("%s not yet in %s: %v, %v", user, sid, r, err)
		}
		return nil
	})
}

// Experiences of every type are stored as written, listed by type, isolated
// per environment, and the generic type is targeted like the others.
func TestExperienceCatalogue(t *testing.T) {
	f := start(t, false)
	ctx := apptest.Context(t, 30*time.Second)
	seg, err := f.ss.CreateSegment(ctx, &segmentsyncv1.CreateSegmentRequest{Name: "Trial"})
	if err != nil {
		t.Fatal(err)
	}
	sid := seg.GetSegment().GetSegmentId()
	if _, err := f.ss.AddMembers(ctx, &segmentsyncv1.AddMembersRequest{SegmentId: sid, UserIds: []string{"ann"}}); err != nil {
		t.Fatal(err)
	}
	waitMember(t, ctx, f.tg, sid, "ann")
	inTrial := &targetingv1.Audience{Match: &targetingv1.ConditionGroup{Conditions: []*targetingv1.Condition{{Operator: targetingv1.Operator_OPERATOR_IN_SEGMENT, SegmentId: sid}}}}
	create := func(name string, typ targetingv1.ExperienceType, a *targetingv1.Audience, disabled bool) *targetingv1.Experience {
		t.Helper()
		r, err := f.tg.CreateExperience(ctx, &targetingv1.CreateExperienceRequest{Name: name, Type: typ, Audience: a, Disabled: disabled})
		if err != nil {
			t.Fatalf("create %s: %v", name, err)
		}
		return r.GetExperience()
	}
	tour := create("Welcome tour", targetingv1.ExperienceType_EXPERIENCE_TYPE_PRODUCT_TOUR, inTrial, false)
	list := create("Setup checklist", targetingv1.ExperienceType_EXPERIENCE_TYPE_CHECKLIST, &targetingv1.Audience{Everyone: true}, false)
	banner := create("Release banner", targetingv1.ExperienceType_EXPERIENCE_TYPE_GENERIC, inTrial, false)
	hidden := create("Old banner", targetingv1.ExperienceType_EXPERIENCE_TYPE_GENERIC, &targetingv1.Audience{Everyone: true}, true)

	// Get returns what was written, audience included.
	for _, want := range []*targetingv1.Experience{tour, list, banner, hidden} {
		got, err := f.tg.GetExperience(ctx, &targetingv1.GetExperienceRequest{ExperienceId: want.GetExperienceId()})
		if err != nil {
			t.Fatal(err)
		}
		if !proto.Equal(got.GetExperience(), want) || want.GetExperienceId() == "" || want.GetCreateTime() == nil {
			t.Fatalf("Get = %v, created %v", got.GetExperience(), want)
		}
	}
	if banner.GetType() != targetingv1.ExperienceType_EXPERIENCE_TYPE_GENERIC || !banner.GetEnabled() || hidden.GetEnabled() {
		t.Fatalf("generic experiences: %v, %v", banner, hidden)
	}

	// List: every type when unspecified, else one type.
	for _, c := range []struct {
		typ  targetingv1.ExperienceType
		want string
	}{
		{targetingv1.ExperienceType_EXPERIENCE_TYPE_UNSPECIFIED, idsOf(tour, list, banner, hidden)},
		{targetingv1.ExperienceType_EXPERIENCE_TYPE_PRODUCT_TOUR, idsOf(tour)},
		{targetingv1.ExperienceType_EXPERIENCE_TYPE_CHECKLIST, idsOf(list)},
		{targetingv1.ExperienceType_EXPERIENCE_TYPE_GENERIC, idsOf(banner, hidden)},
	} {
		r, err := f.tg.ListExperiences(ctx, &targetingv1.ListExperiencesRequest{Type: c.typ})
		if err != nil || ids(r.GetExperiences()) != c.want {
			t.Fatalf("List(%v) = %v, %v; want %s", c.typ, ids(r.GetExperiences()), err, c.want)
		}
		for _, x := range r.GetExperiences() {
			if c.typ != targetingv1.ExperienceType_EXPERIENCE_TYPE_UNSPECIFIED && x.GetType() != c.typ {
				t.Fatalf("List(%v) holds %v", c.typ, x)
			}
			if x.GetExperienceId() == banner.GetExperienceId() && !proto.Equal(x, banner) {
				t.Fatalf("listed %v, created %v", x, banner)
			}
		}
	}
	// An unknown type is refused rather than answered with nothing.
	if _, err := f.tg.ListExperiences(ctx, &targetingv1.ListExperiencesRequest{Type: 99}); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("List(type 99) = %v, want InvalidArgument", err)
	}
	if _, err := f.tg.ListEligibleExperiences(ctx, &targetingv1.ListEligibleExperiencesRequest{UserId: "ann", Type: 99}); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("ListEligible(type 99) = %v, want InvalidArgument", err)
	}

	// Another environment sees none of them.
	other := targetingv1.NewTargetingServiceClient(f.e.Dial(f.e.B.Member))
	if r, err := other.ListExperiences(ctx, &targetingv1.ListExperiencesRequest{}); err != nil || len(r.GetExperiences()) != 0 {
		t.Fatalf("environment B lists %v, %v", r, err)
	}
	if _, err := other.GetExperience(ctx, &targetingv1.GetExperienceRequest{ExperienceId: banner.GetExperienceId()}); status.Code(err) != codes.NotFound {
		t.Fatalf("environment B gets A's experience: %v", err)
	}

	// The generic type is evaluated and filtered like the others; disabled
	// ones are never eligible.
	ev, err := f.tg.EvaluateExperience(ctx, &targetingv1.EvaluateExperienceRequest{ExperienceId: banner.GetExperienceId(), UserId: "ann"})
	if err != nil || !ev.GetEligible() || ev.GetDecidedBy() != "match.conditions[0]" {
		t.Fatalf("evaluate banner for ann = %v, %v", ev, err)
	}
	ev, err = f.tg.EvaluateExperience(ctx, &targetingv1.EvaluateExperienceRequest{ExperienceId: banner.GetExperienceId(), UserId: "bob"})
	if err != nil || ev.GetEligible() {
		t.Fatalf("evaluate banner for bob = %v, %v", ev, err)
	}
	for _, c := range []struct {
		user string
		typ  targetingv1.ExperienceType
		want string
	}{
		{"ann", targetingv1.ExperienceType_EXPERIENCE_TYPE_GENERIC, idsOf(banner)},
		{"bob", targetingv1.ExperienceType_EXPERIENCE_TYPE_GENERIC, ""},
		{"ann", targetingv1.ExperienceType_EXPERIENCE_TYPE_UNSPECIFIED, idsOf(tour, list, banner)},
		{"bob", targetingv1.ExperienceType_EXPERIENCE_TYPE_UNSPECIFIED, idsOf(list)},
	} {
		r, err := f.tg.ListEligibleExperiences(ctx, &targetingv1.ListEligibleExperiencesRequest{UserId: c.user, Type: c.typ})
		if err != nil || ids(r.GetExperiences()) != c.want {
			t.Fatalf("eligible for %s of %v = %v, %v; want %s", c.user, c.typ, ids(r.GetExperiences()), err, c.want)
		}
	}

	// An update keeps the type; Get and List see it.
	name := "Release banner v2"
	if _, err := f.tg.UpdateExperience(ctx, &targetingv1.UpdateExperienceRequest{ExperienceId: banner.GetExperienceId(), Name: &name}); err != nil {
		t.Fatal(err)
	}
	got, err := f.tg.GetExperience(ctx, &targetingv1.GetExperienceRequest{ExperienceId: banner.GetExperienceId()})
	if err != nil || got.GetExperience().GetName() != name || got.GetExperience().GetType() != targetingv1.ExperienceType_EXPERIENCE_TYPE_GENERIC {
		t.Fatalf("after update: %v, %v", got, err)
	}
}

// restGet GETs path through the gateway as env A's member key and decodes a
// 200 answer into into; it returns the HTTP status.
func restGet(t *testing.T, srv *httptest.Server, key, path string, into proto.Message) int {
	t.Helper()
	req, _ := http.NewRequest("GET", srv.URL+path, nil)
	req.Header.Set("Authorization", "Bearer "+key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode == http.StatusOK {
		if err := protojson.Unmarshal(body, into); err != nil {
			t.Fatalf("GET %s: %v in %s", path, err, body)
		}
	}
	return resp.StatusCode
}

// REST (through the gateway) and gRPC give the same answers for experience
// evaluation and listing, errors included.
func TestRESTMatchesGRPCForExperiences(t *testing.T) {
	f := start(t, false)
	ctx := apptest.Context(t, 30*time.Second)
	seg, _ := f.ss.CreateSegment(ctx, &segmentsyncv1.CreateSegmentRequest{Name: "Trial"})
	sid := seg.GetSegment().GetSegmentId()
	if _, err := f.ss.AddMembers(ctx, &segmentsyncv1.AddMembersRequest{SegmentId: sid, UserIds: []string{"ann", "bob"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := f.ss.UpsertUsers(ctx, &segmentsyncv1.UpsertUsersRequest{Users: []*segmentsyncv1.User{
		{UserId: "ann", Properties: map[string]*segmentsyncv1.PropertyValue{"seats": {Kind: &segmentsyncv1.PropertyValue_NumberValue{NumberValue: 3}}}},
		{UserId: "bob", Properties: map[string]*segmentsyncv1.PropertyValue{"seats": {Kind: &segmentsyncv1.PropertyValue_NumberValue{NumberValue: 300}}}},
	}}); err != nil {
		t.Fatal(err)
	}
	waitMember(t, ctx, f.tg, sid, "bob")
	tourR, err := f.tg.CreateExperience(ctx, &targetingv1.CreateExperienceRequest{Name: "Small teams tour", Type: targetingv1.ExperienceType_EXPERIENCE_TYPE_PRODUCT_TOUR, Audience: &targetingv1.Audience{Match: &targetingv1.ConditionGroup{
		Combinator: targetingv1.Combinator_COMBINATOR_AND,
		Conditions: []*targetingv1.Condition{
			{Operator: targetingv1.Operator_OPERATOR_IN_SEGMENT, SegmentId: sid},
			{Operator: targetingv1.Operator_OPERATOR_LESS_THAN, Property: "seats", Value: &targetingv1.Condition_NumberValue{NumberValue: 10}},
		}}}})
	if err != nil {
		t.Fatal(err)
	}
	tour := tourR.GetExperience()
	listR, err := f.tg.CreateExperience(ctx, &targetingv1.CreateExperienceRequest{Name: "Checklist", Type: targetingv1.ExperienceType_EXPERIENCE_TYPE_CHECKLIST, Audience: &targetingv1.Audience{Everyone: true}})
	if err != nil {
		t.Fatal(err)
	}
	list := listR.GetExperience()
	eventually(t, func() error { // ann's properties ride the same feed
		ev, err := f.tg.EvaluateExperience(ctx, &targetingv1.EvaluateExperienceRequest{ExperienceId: tour.GetExperienceId(), UserId: "ann"})
		if err != nil || !ev.GetEligible() {
			return fmt.Errorf("ann not yet eligible: %v, %v", ev, err)
		}
		return nil
	})

	gw, err := gateway.New(ctx, f.e.P)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(gw.Handler())
	defer srv.Close()

	evaluate := func(x, user string) proto.Message {
		r, err := f.tg.EvaluateExperience(ctx, &targetingv1.EvaluateExperienceRequest{ExperienceId: x, UserId: user})
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	eligible := func(user string, typ targetingv1.ExperienceType) proto.Message {
		r, err := f.tg.ListEligibleExperiences(ctx, &targetingv1.ListEligibleExperiencesRequest{UserId: user, Type: typ})
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	cases := []struct {
		name  string
		path  string
		rest  proto.Message
		grpc  func() proto.Message
		check func(m proto.Message) bool // what the answer must say, so equality is not of two empties
	}{
		{"evaluate eligible", "/v1/experiences/" + tour.GetExperienceId() + "/users/ann", &targetingv1.EvaluateExperienceResponse{},
			func() proto.Message { return evaluate(tour.GetExperienceId(), "ann") },
			func(m proto.Message) bool {
				r := m.(*targetingv1.EvaluateExperienceResponse)
				return r.GetEligible() && r.GetDecidedBy() == "match.conditions[1]" && r.GetIndexVersion() > 0
			}},
		{"evaluate ineligible", "/v1/experiences/" + tour.GetExperienceId() + "/users/bob", &targetingv1.EvaluateExperienceResponse{},
			func() proto.Message { return evaluate(tour.GetExperienceId(), "bob") },
			func(m proto.Message) bool {
				r := m.(*targetingv1.EvaluateExperienceResponse)
				return !r.GetEligible() && r.GetDecidedBy() == "match.conditions[1]" && r.GetReason() != ""
			}},
		{"evaluate everyone for unknown user", "/v1/experiences/" + list.GetExperienceId() + "/users/ghost", &targetingv1.EvaluateExperienceResponse{},
			func() proto.Message { return evaluate(list.GetExperienceId(), "ghost") },
			func(m proto.Message) bool {
				return m.(*targetingv1.EvaluateExperienceResponse).GetDecidedBy() == "everyone"
			}},
		{"eligible, every type", "/v1/targeting/users/ann/experiences", &targetingv1.ListEligibleExperiencesResponse{},
			func() proto.Message { return eligible("ann", 0) },
			func(m proto.Message) bool {
				return ids(m.(*targetingv1.ListEligibleExperiencesResponse).GetExperiences()) == idsOf(tour, list)
			}},
		{"eligible, one type", "/v1/targeting/users/ann/experiences?type=EXPERIENCE_TYPE_PRODUCT_TOUR", &targetingv1.ListEligibleExperiencesResponse{},
			func() proto.Message { return eligible("ann", targetingv1.ExperienceType_EXPERIENCE_TYPE_PRODUCT_TOUR) },
			func(m proto.Message) bool {
				return ids(m.(*targetingv1.ListEligibleExperiencesResponse).GetExperiences()) == idsOf(tour)
			}},
		{"eligible, none of the type", "/v1/targeting/users/bob/experiences?type=EXPERIENCE_TYPE_PRODUCT_TOUR", &targetingv1.ListEligibleExperiencesResponse{},
			func() proto.Message { return eligible("bob", targetingv1.ExperienceType_EXPERIENCE_TYPE_PRODUCT_TOUR) },
			func(m proto.Message) bool {
				r := m.(*targetingv1.ListEligibleExperiencesResponse)
				return len(r.GetExperiences()) == 0 && r.GetIndexVersion() > 0
			}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if code := restGet(t, srv, f.e.A.Member, c.path, c.rest); code != http.StatusOK {
				t.Fatalf("REST %s = %d", c.path, code)
			}
			g := c.grpc()
			if !c.check(g) {
				t.Fatalf("gRPC answered %v", g)
			}
			if !proto.Equal(c.rest, g) {
				t.Fatalf("REST %v != gRPC %v", c.rest, g)
			}
		})
	}

	// Errors map alike: unknown experience, unknown type.
	if code := restGet(t, srv, f.e.A.Member, "/v1/experiences/exp_missing/users/ann", &targetingv1.EvaluateExperienceResponse{}); code != http.StatusNotFound {
		t.Fatalf("REST unknown experience = %d", code)
	}
	if _, err := f.tg.EvaluateExperience(ctx, &targetingv1.EvaluateExperienceRequest{ExperienceId: "exp_missing", UserId: "ann"}); status.Code(err) != codes.NotFound {
		t.Fatalf("gRPC unknown experience = %v", err)
	}
	if code := restGet(t, srv, f.e.A.Member, "/v1/targeting/users/ann/experiences?type=99", &targetingv1.ListEligibleExperiencesResponse{}); code != http.StatusBadRequest {
		t.Fatalf("REST unknown type = %d", code)
	}
	if _, err := f.tg.ListEligibleExperiences(ctx, &targetingv1.ListEligibleExperiencesRequest{UserId: "ann", Type: 99}); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("gRPC unknown type = %v, want InvalidArgument as REST's 400", err)
	}
}

// replica is one more targeting replica with its own loopback gRPC server,
// sharing the platform (store, bus, segmentsync) as another process would.
type replica struct {
	svc  *targeting.Service
	tg   targetingv1.TargetingServiceClient
	stop func()
}

type memberKey string

func (k memberKey) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + string(k)}, nil
}
func (memberKey) RequireTransportSecurity() bool { return false }

// startReplica runs svc (a new replica when nil) until stop.
func startReplica(t *testing.T, f *fixture, svc *targeting.Service) *replica {
	t.Helper()
	var err error
	if svc == nil {
		if svc, err = targeting.New(context.Background(), f.e.P); err != nil {
			t.Fatal(err)
		}
	}
	g, err := f.e.P.NewGRPCServer()
	if err != nil {
		t.Fatal(err)
	}
	svc.Register(g)
	// Not f.e.P.Listen: that would move the platform's own address.
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 2)
	go func() { done <- g.Serve(ctx, lis) }()
	go func() { done <- svc.Run(ctx) }()
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithPerRPCCredentials(memberKey(f.e.A.Member)))
	if err != nil {
		t.Fatal(err)
	}
	stopped := false
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		conn.Close()
		cancel()
		for range 2 {
			if err := <-done; err != nil {
				t.Errorf("replica stopped with %v", err)
			}
		}
	}
	t.Cleanup(stop)
	return &replica{svc: svc, tg: targetingv1.NewTargetingServiceClient(conn), stop: stop}
}

// storeSequence is env's change sequence in segmentsync's store: where a
// fresh WatchMembership snapshot says it caught up.
func storeSequence(t *testing.T, ctx context.Context, f *fixture, env string) int64 {
	t.Helper()
	conn, err := f.e.P.Conn(app.SegmentSync)
	if err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithCancel(auth.ForEnvironment(ctx, env))
	defer cancel()
	stream, err := segmentsyncv1.NewSegmentSyncServiceClient(conn).WatchMembership(wctx, &segmentsyncv1.WatchMembershipRequest{})
	if err != nil {
		t.Fatal(err)
	}
	for {
		m, err := stream.Recv()
		if err != nil {
			t.Fatal(err)
		}
		if m.GetCaughtUp() != nil {
			return m.GetSequence()
		}
	}
}

// A replica that was down while membership changed answers the new
// membership once it is back, at an index version no older than the store's:
// both when the same replica resumes its feed and when a new process starts
// from nothing.
func TestRestartedReplicaCatchesUp(t *testing.T) {
	for _, pg := range []bool{false, true} {
		t.Run(map[bool]string{false: "sqlite", true: "postgres"}[pg], func(t *testing.T) {
			f := start(t, pg)
			ctx := apptest.Context(t, 60*time.Second)
			env := f.e.A.EnvironmentID
			seg, err := f.ss.CreateSegment(ctx, &segmentsyncv1.CreateSegmentRequest{Name: "Trial"})
			if err != nil {
				t.Fatal(err)
			}
			sid := seg.GetSegment().GetSegmentId()
			if _, err := f.ss.AddMembers(ctx, &segmentsyncv1.AddMembersRequest{SegmentId: sid, UserIds: []string{"ann"}}); err != nil {
				t.Fatal(err)
			}
			r := startReplica(t, f, nil)
			waitMember(t, ctx, r.tg, sid, "ann")

			// check asserts what a restarted replica answers: each user's
			// segments, at a version at or past the store's.
			check := func(r *replica, storeSeq int64, want map[string]string) error {
				for user, segs := range want {
					us, err := r.tg.ListUserSegments(ctx, &targetingv1.ListUserSegmentsRequest{UserId: user})
					if err != nil {
						return err
					}
					if got := strings.Join(us.GetSegmentIds(), ","); got != segs {
						return fmt.Errorf("%s in %q at version %d, want %q (store at %d)", user, got, us.GetIndexVersion(), segs, storeSeq)
					}
					if us.GetIndexVersion() < storeSeq {
						return fmt.Errorf("answered from version %d, store at %d", us.GetIndexVersion(), storeSeq)
					}
				}
				if v := r.svc.Index().Versions()[env]; v.Sequence < storeSeq || !v.CaughtUp {
					return fmt.Errorf("replica serves %+v, store at %d", v, storeSeq)
				}
				return nil
			}

			// 1. The same replica stops, misses changes, and resumes its feed.
			r.stop()
			if _, err := f.ss.RemoveMembers(ctx, &segmentsyncv1.RemoveMembersRequest{SegmentId: sid, UserIds: []string{"ann"}}); err != nil {
				t.Fatal(err)
			}
			if _, err := f.ss.AddMembers(ctx, &segmentsyncv1.AddMembersRequest{SegmentId: sid, UserIds: []string{"bob"}}); err != nil {
				t.Fatal(err)
			}
			later, err := f.ss.CreateSegment(ctx, &segmentsyncv1.CreateSegmentRequest{Name: "Later"})
			if err != nil {
				t.Fatal(err)
			}
			lid := later.GetSegment().GetSegmentId()
			if _, err := f.ss.AddMembers(ctx, &segmentsyncv1.AddMembersRequest{SegmentId: lid, UserIds: []string{"cat", "bob"}}); err != nil {
				t.Fatal(err)
			}
			seq := storeSequence(t, ctx, f, env)
			before := r.svc.Index().Versions()[env].Sequence
			if before >= seq {
				t.Fatalf("the stopped replica already serves %d, store at %d: nothing to catch up", before, seq)
			}
			want := map[string]string{"ann": "", "bob": strings.Join(sortedIDs(sid, lid), ","), "cat": lid}
			r = startReplica(t, f, r.svc)
			eventually(t, func() error { return check(r, seq, want) })

			// 2. A new process starts while changes it never saw are in the
			// store. It refuses to answer until loaded, then answers right.
			r.stop()
			if _, err := f.ss.DeleteSegment(ctx, &segmentsyncv1.DeleteSegmentRequest{SegmentId: lid}); err != nil {
				t.Fatal(err)
			}
			if _, err := f.ss.AddMembers(ctx, &segmentsyncv1.AddMembersRequest{SegmentId: sid, UserIds: []string{"cat"}}); err != nil {
				t.Fatal(err)
			}
			seq = storeSequence(t, ctx, f, env)
			want = map[string]string{"ann": "", "bob": sid, "cat": sid}
			fresh := startReplica(t, f, nil)
			eventually(t, func() error {
				_, err := fresh.tg.ListUserSegments(ctx, &targetingv1.ListUserSegmentsRequest{UserId: "cat"})
				if status.Code(err) == codes.Unavailable {
					return err
				}
				// The first answer it gives is already current.
				if err := check(fresh, seq, want); err != nil {
					t.Fatal(err)
				}
				return nil
			})
			if _, err := fresh.tg.CheckMembership(ctx, &targetingv1.CheckMembershipRequest{SegmentId: lid, UserId: "cat"}); status.Code(err) != codes.NotFound {
				t.Fatalf("segment deleted while down: %v", err)
			}
		})
	}
}

func sortedIDs(s ...string) []string {
	sort.Strings(s)
	return s
}

// ListExperiences and ListTargetableSegments page in (name, id) order:
// walking next_page_token returns every item once, over gRPC and REST alike.
func TestListPages(t *testing.T) {
	f := start(t, false)
	ctx := apptest.Context(t, 30*time.Second)

	// Targetable segments: only the public, non-empty ones, from the index
	// (waiting for it also waits until experiences can be compiled).
	var segNames []string
	for _, name := range []string{"Pages c", "Pages a", "Pages e", "Pages b", "Pages d", "Pages empty", "Pages private"} {
		vis := segmentsyncv1.Visibility_VISIBILITY_UNSPECIFIED
		if name == "Pages private" {
			vis = segmentsyncv1.Visibility_VISIBILITY_PRIVATE
		}
		seg, err := f.ss.CreateSegment(ctx, &segmentsyncv1.CreateSegmentRequest{Name: name, Visibility: vis})
		if err != nil {
			t.Fatal(err)
		}
		if name != "Pages empty" {
			if _, err := f.ss.AddMembers(ctx, &segmentsyncv1.AddMembersRequest{SegmentId: seg.GetSegment().GetSegmentId(), UserIds: []string{"ann"}}); err != nil {
				t.Fatal(err)
			}
		}
	}
	eventually(t, func() error {
		r, err := f.tg.ListTargetableSegments(ctx, &targetingv1.ListTargetableSegmentsRequest{})
		if err != nil || len(r.GetSegments()) != 5 {
			return fmt.Errorf("index holds %v, %v", r, err)
		}
		return nil
	})
	sreq := &targetingv1.ListTargetableSegmentsRequest{PageSize: 2}
	for pages := 1; ; pages++ {
		r, err := f.tg.ListTargetableSegments(ctx, sreq)
		if err != nil {
			t.Fatal(err)
		}
		if len(r.GetSegments()) > 2 || pages > 3 || r.GetIndexVersion() == 0 {
			t.Fatalf("segment page %d = %v", pages, r)
		}
		for _, s := range r.GetSegments() {
			segNames = append(segNames, s.GetName())
		}
		if r.GetNextPageToken() == "" {
			break
		}
		sreq.PageToken = r.GetNextPageToken()
	}
	if got := strings.Join(segNames, ","); got != "Pages a,Pages b,Pages c,Pages d,Pages e" {
		t.Fatalf("segment pages = %s", got)
	}
	if _, err := f.tg.ListTargetableSegments(ctx, &targetingv1.ListTargetableSegmentsRequest{PageToken: "garbage!"}); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("ListTargetableSegments(garbage token) = %v, want InvalidArgument", err)
	}

	// Experiences: two share a name, so the id decides between them.
	var want []*targetingv1.Experience
	for _, name := range []string{"Tour c", "Tour a", "Tour b", "Tour a", "Tour d"} {
		r, err := f.tg.CreateExperience(ctx, &targetingv1.CreateExperienceRequest{Name: name, Type: targetingv1.ExperienceType_EXPERIENCE_TYPE_PRODUCT_TOUR, Audience: &targetingv1.Audience{Everyone: true}})
		if err != nil {
			t.Fatal(err)
		}
		want = append(want, r.GetExperience())
	}
	if _, err := f.tg.CreateExperience(ctx, &targetingv1.CreateExperienceRequest{Name: "Checklist", Type: targetingv1.ExperienceType_EXPERIENCE_TYPE_CHECKLIST, Audience: &targetingv1.Audience{Everyone: true}}); err != nil {
		t.Fatal(err)
	}
	sort.Slice(want, func(i, j int) bool {
		a, b := want[i], want[j]
		return a.GetName() < b.GetName() || (a.GetName() == b.GetName() && a.GetExperienceId() < b.GetExperienceId())
	})
	var xs []string
	req := &targetingv1.ListExperiencesRequest{Type: targetingv1.ExperienceType_EXPERIENCE_TYPE_PRODUCT_TOUR, PageSize: 2}
	for pages := 1; ; pages++ {
		r, err := f.tg.ListExperiences(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		if len(r.GetExperiences()) > 2 || pages > 3 {
			t.Fatalf("experience page %d holds %d", pages, len(r.GetExperiences()))
		}
		for _, x := range r.GetExperiences() {
			xs = append(xs, x.GetExperienceId())
		}
		if r.GetNextPageToken() == "" {
			break
		}
		req.PageToken = r.GetNextPageToken()
	}
	var wantIDs []string
	for _, x := range want {
		wantIDs = append(wantIDs, x.GetExperienceId())
	}
	if strings.Join(xs, ",") != strings.Join(wantIDs, ",") {
		t.Fatalf("experience pages = %v, want %v", xs, wantIDs)
	}
	if all, err := f.tg.ListExperiences(ctx, &targetingv1.ListExperiencesRequest{}); err != nil || len(all.GetExperiences()) != 6 || all.GetNextPageToken() != "" {
		t.Fatalf("default page = %v, %v", all, err)
	}
	if _, err := f.tg.ListExperiences(ctx, &targetingv1.ListExperiencesRequest{PageToken: "garbage!"}); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("ListExperiences(garbage token) = %v, want InvalidArgument", err)
	}

	// REST: page_size and page_token are query parameters.
	gw, err := gateway.New(ctx, f.e.P)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(gw.Handler())
	defer srv.Close()
	var rx targetingv1.ListExperiencesResponse
	if code := restGet(t, srv, f.e.A.Member, "/v1/experiences?type=EXPERIENCE_TYPE_PRODUCT_TOUR&page_size=2&page_token="+req.PageToken, &rx); code != http.StatusOK || len(rx.GetExperiences()) != 1 || rx.GetExperiences()[0].GetExperienceId() != wantIDs[4] {
		t.Fatalf("REST last experience page = %d %v", code, &rx)
	}
	var rs targetingv1.ListTargetableSegmentsResponse
	if code := restGet(t, srv, f.e.A.Member, "/v1/targeting/segments?page_size=2&page_token="+sreq.PageToken, &rs); code != http.StatusOK || len(rs.GetSegments()) != 1 || rs.GetSegments()[0].GetName() != "Pages e" {
		t.Fatalf("REST last segment page = %d %v", code, &rs)
	}
	for _, path := range []string{"/v1/experiences?page_token=garbage!", "/v1/targeting/segments?page_token=garbage!"} {
		if code := restGet(t, srv, f.e.A.Member, path, &rs); code != http.StatusBadRequest {
			t.Fatalf("REST %s = %d, want 400", path, code)
		}
	}
}

// pack is the packed form of ids: each followed by a newline.
func pack(ids []string) []byte {
	var b []byte
	for _, id := range ids {
		b = append(append(b, id...), '\n')
	}
	return b
}

// The packed form of BatchCheckStream answers as CheckMembership does, for
// members, non-members, empty and non-ASCII ids, with or without the last
// newline and beside repeated checks in the same message; bad requests are
// refused naming the field.
func TestPackedBatchCheckStream(t *testing.T) {
	f := start(t, false)
	ctx := apptest.Context(t, 60*time.Second)
	seg, _ := f.ss.CreateSegment(ctx, &segmentsyncv1.CreateSegmentRequest{Name: "Packed"})
	sid := seg.GetSegment().GetSegmentId()
	pool := []string{"ann", "bob", "cé", "user:1", "user:2", "日本", "x y", strings.Repeat("l", 200)}
	if _, err := f.ss.AddMembers(ctx, &segmentsyncv1.AddMembersRequest{SegmentId: sid, UserIds: []string{"ann", "cé", "user:2", "日本", strings.Repeat("l", 200)}}); err != nil {
		t.Fatal(err)
	}
	waitMember(t, ctx, f.tg, sid, strings.Repeat("l", 200))
	want := map[string]bool{}
	for _, u := range append(pool, "", "nobody") {
		r, err := f.tg.CheckMembership(ctx, &targetingv1.CheckMembershipRequest{SegmentId: sid, UserId: u})
		if u == "" {
			want[u] = false // CheckMembership requires an id; packed, an empty one is no member
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		want[u] = r.GetIsMember()
	}
	stream, err := f.tg.BatchCheckStream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	rapid.Check(t, func(rt *rapid.T) {
		users := rapid.SliceOfN(rapid.SampledFrom(append(pool, "", "nobody")), 0, 40).Draw(rt, "users")
		b := pack(users)
		if len(users) > 0 && users[len(users)-1] != "" && rapid.Bool().Draw(rt, "dropLastNewline") {
			b = b[:len(b)-1]
		}
		req := &targetingv1.BatchCheckStreamRequest{PackedSegmentId: sid, PackedUserIds: b}
		withChecks := rapid.Bool().Draw(rt, "withChecks")
		if withChecks {
			req.Checks = []*targetingv1.MembershipCheck{{UserId: "bob", SegmentId: sid}, {UserId: "ann", SegmentId: sid}}
		}
		if err := stream.Send(req); err != nil {
			rt.Fatal(err)
		}
		resp, err := stream.Recv()
		if err != nil {
			rt.Fatal(err)
		}
		bits := resp.GetPackedIsMember()
		if len(bits) != (len(users)+7)/8 {
			rt.Fatalf("%d ids answered in %d bytes", len(users), len(bits))
		}
		for i, u := range users {
			if got := bits[i/8]&(1<<(i%8)) != 0; got != want[u] {
				rt.Fatalf("ids[%d] %q: packed %v, CheckMembership %v", i, u, got, want[u])
			}
		}
		for i := len(users); i < 8*len(bits); i++ {
			if bits[i/8]&(1<<(i%8)) != 0 {
				rt.Fatalf("unused bit %d set", i)
			}
		}
		if withChecks && fmt.Sprint(resp.GetIsMember()) != fmt.Sprint([]bool{want["bob"], want["ann"]}) {
			rt.Fatalf("checks beside the packed form: %v", resp.GetIsMember())
		}
		if !withChecks && len(resp.GetIsMember()) != 0 {
			rt.Fatalf("is_member without checks: %v", resp.GetIsMember())
		}
		if resp.GetIndexVersion() == 0 {
			rt.Fatal("no index version")
		}
	})
	_ = stream.CloseSend()

	// Each refusal ends its stream with a status naming the field.
	refused := func(name string, req *targetingv1.BatchCheckStreamRequest, tg targetingv1.TargetingServiceClient, code codes.Code, field string) {
		t.Helper()
		st, err := tg.BatchCheckStream(ctx)
		if err != nil {
			t.Fatal(err)
		}
		_ = st.Send(req)
		_, err = st.Recv()
		if status.Code(err) != code || !strings.Contains(status.Convert(err).Message(), field) {
			t.Fatalf("%s: %v, want %s naming %s", name, err, code, field)
		}
	}
	refused("no segment", &targetingv1.BatchCheckStreamRequest{PackedUserIds: pack([]string{"ann"})}, f.tg, codes.InvalidArgument, "packed_segment_id")
	refused("control character", &targetingv1.BatchCheckStreamRequest{PackedSegmentId: sid, PackedUserIds: []byte("ann\nb\tob\n")}, f.tg, codes.InvalidArgument, "packed_user_ids[1]")
	refused("invalid UTF-8", &targetingv1.BatchCheckStreamRequest{PackedSegmentId: sid, PackedUserIds: []byte("ann\n\xff\n")}, f.tg, codes.InvalidArgument, "packed_user_ids[1]")
	refused("unknown segment", &targetingv1.BatchCheckStreamRequest{PackedSegmentId: "seg_missing", PackedUserIds: pack([]string{"ann"})}, f.tg, codes.NotFound, "seg_missing")
	refused("control character in the segment", &targetingv1.BatchCheckStreamRequest{PackedSegmentId: "s\x01", PackedUserIds: pack([]string{"ann"})}, f.tg, codes.InvalidArgument, "packed_segment_id")
	many := make([]string, 9999)
	for i := range many {
		many[i] = "u" + fmt.Sprint(i)
	}
	refused("too many", &targetingv1.BatchCheckStreamRequest{PackedSegmentId: sid, PackedUserIds: pack(many), Checks: []*targetingv1.MembershipCheck{{UserId: "a", SegmentId: sid}, {UserId: "b", SegmentId: sid}}}, f.tg, codes.InvalidArgument, "at most 10000")
	// Another environment does not see the segment (once its replica has
	// loaded, until which it answers Unavailable).
	other := targetingv1.NewTargetingServiceClient(f.e.Dial(f.e.B.Member))
	eventually(t, func() error {
		_, err := other.CheckMembership(ctx, &targetingv1.CheckMembershipRequest{SegmentId: sid, UserId: "ann"})
		if status.Code(err) != codes.NotFound {
			return fmt.Errorf("environment B: %v", err)
		}
		return nil
	})
	refused("other environment", &targetingv1.BatchCheckStreamRequest{PackedSegmentId: sid, PackedUserIds: pack([]string{"ann"})}, other, codes.NotFound, sid)

	// Exactly the limit is answered.
	st, err := f.tg.BatchCheckStream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	_ = st.Send(&targetingv1.BatchCheckStreamRequest{PackedSegmentId: sid, PackedUserIds: pack(append(many, "ann"))})
	resp, err := st.Recv()
	if err != nil || len(resp.GetPackedIsMember()) != 1250 || resp.GetPackedIsMember()[1249] != 0x80 {
		t.Fatalf("10000 packed ids: %v, %v", len(resp.GetPackedIsMember()), err)
	}
}
