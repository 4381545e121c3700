package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"

	connectorv1 "github.com/seghub/seghub/gen/seghub/connector/v1"
	eventrelayv1 "github.com/seghub/seghub/gen/seghub/eventrelay/v1"
	segmentsyncv1 "github.com/seghub/seghub/gen/seghub/segmentsync/v1"
	targetingv1 "github.com/seghub/seghub/gen/seghub/targeting/v1"
	"github.com/seghub/seghub/pkg/app"
	"github.com/seghub/seghub/pkg/app/apptest"
	"github.com/seghub/seghub/pkg/config"
	"github.com/seghub/seghub/pkg/destinations"
	"github.com/seghub/seghub/services/connector"
	"github.com/seghub/seghub/services/destsim"
	"github.com/seghub/seghub/services/eventrelay"
	"github.com/seghub/seghub/services/gateway"
	"github.com/seghub/seghub/services/segmentsync"
	"github.com/seghub/seghub/services/targeting"
)

// eventually polls cond until it holds or the (generous) deadline passes.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 60s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// The "done when": a product tour whose audience is a computed
// segment ("completed the onboarding flow in the last 7 days") becomes
// eligible for a user once the Appcues Flow Completed webhook for that user
// is in, and drops out when the window passes (the clock is injected; the
// window pass runs as its periodic job would).
func TestComputedSegmentDrivesATour(t *testing.T) {
	sim := httptest.NewServer(destsim.New(destsim.DemoCredentials()))
	defer sim.Close()
	e := apptest.New(t, apptest.Options{NeedBus: true, Configure: func(c *config.Config) { c.AppcuesURL = sim.URL }})
	var clock atomic.Int64
	clock.Store(time.Now().UnixMicro())
	now := func() time.Time { return time.UnixMicro(clock.Load()) }
	ctx := apptest.Context(t, 3*time.Minute)
	cn, err := connector.New(ctx, e.P)
	if err != nil {
		t.Fatal(err)
	}
	ss, err := segmentsync.NewWithOptions(ctx, e.P, segmentsync.Options{Now: now})
	if err != nil {
		t.Fatal(err)
	}
	er, err := eventrelay.New(ctx, e.P)
	if err != nil {
		t.Fatal(err)
	}
	tg, err := targeting.New(ctx, e.P)
	if err != nil {
		t.Fatal(err)
	}
	e.Add(cn, ss, er, tg)
	e.P.SetLocal(app.Targeting, e.Server.InProcess())
	e.Start()
	gw, err := gateway.New(ctx, e.P)
	if err != nil {
		t.Fatal(err)
	}
	web := httptest.NewServer(gw.Handler())
	defer web.Close()

	segs := segmentsyncv1.NewSegmentSyncServiceClient(e.Dial(e.A.Member))
	tgc := targetingv1.NewTargetingServiceClient(e.Dial(e.A.Member))
	conns := connectorv1.NewConnectorServiceClient(e.Dial(e.A.Admin))

	ac, err := conns.CreateConnection(ctx, &connectorv1.CreateConnectionRequest{Type: "appcues", Name: "Appcues",
		Credentials: map[string]string{"account_id": "demo", "api_key": "demo-key", "api_secret": "demo-secret"},
		Settings:    &connectorv1.ConnectionSettings{SendEvents: true}})
	if err != nil {
		t.Fatal(err)
	}

	var rule segmentsyncv1.SegmentRule
	if err := protojson.Unmarshal([]byte(`{"event":{"source":"appcues","name":"Flow Completed",
		"where":[{"property":"Flow ID","string_value":"onboarding"}],
		"count_operator":"COUNT_OPERATOR_AT_LEAST","times":1,"within_days":7}}`), &rule); err != nil {
		t.Fatal(err)
	}
	created, err := segs.CreateSegment(ctx, &segmentsyncv1.CreateSegmentRequest{Name: "Completed onboarding this week", Rule: &rule})
	if err != nil {
		t.Fatal(err)
	}
	sid := created.GetSegment().GetSegmentId()
	if created.GetSegment().GetComputeState() != segmentsyncv1.ComputeState_COMPUTE_STATE_COMPUTING {
		t.Fatalf("a new computed segment starts computing: %v", created.GetSegment())
	}
	eventually(t, "segment live", func() bool {
		g, err := segs.GetSegment(ctx, &segmentsyncv1.GetSegmentRequest{SegmentId: sid})
		return err == nil && g.GetSegment().GetComputeState() == segmentsyncv1.ComputeState_COMPUTE_STATE_LIVE && g.GetSegment().GetComputePercent() == 100
	})
	// Hand-made membership changes are refused.
	if _, err := segs.AddMembers(ctx, &segmentsyncv1.AddMembersRequest{SegmentId: sid, UserIds: []string{"ann"}}); status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("AddMembers on a computed segment: %v, want FailedPrecondition", err)
	}

	var tour *targetingv1.CreateExperienceResponse
	eventually(t, "targeting knows the segment", func() bool {
		tour, err = tgc.CreateExperience(ctx, &targetingv1.CreateExperienceRequest{Name: "Next steps tour", Type: targetingv1.ExperienceType_EXPERIENCE_TYPE_PRODUCT_TOUR,
			Audience: &targetingv1.Audience{Match: &targetingv1.ConditionGroup{Conditions: []*targetingv1.Condition{{Operator: targetingv1.Operator_OPERATOR_IN_SEGMENT, SegmentId: sid}}}}})
		return err == nil
	})
	eligible := func() bool {
		r, err := tgc.ListEligibleExperiences(ctx, &targetingv1.ListEligibleExperiencesRequest{UserId: "ann", Type: targetingv1.ExperienceType_EXPERIENCE_TYPE_PRODUCT_TOUR})
		if err != nil {
			t.Fatal(err)
		}
		for _, x := range r.GetExperiences() {
			if x.GetExperienceId() == tour.GetExperience().GetExperienceId() {
				return true
			}
		}
		return false
	}
	if eligible() {
		t.Fatal("ann is eligible before completing the flow")
	}

	// Appcues posts Flow Completed for ann (another flow's completion does not count).
	body := []byte(fmt.Sprintf(`{"events":[
		{"id":"ac-1","name":"appcues:flow_completed","timestamp":%d,"user_id":"ann","attributes":{"flowId":"onboarding","flowName":"Onboarding"}},
		{"id":"ac-2","name":"appcues:flow_completed","timestamp":%d,"user_id":"bob","attributes":{"flowId":"other","flowName":"Other"}}]}`,
		now().UnixMilli(), now().UnixMilli()))
	req, _ := http.NewRequest("POST", web.URL+"/webhooks/appcues/"+ac.GetConnection().GetConnectionId(), bytes.NewReader(body))
	req.Header.Set("X-Seghub-Signature", destinations.Sign(ac.GetSigningSecret(), time.Now(), body))
	posted := time.Now()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	answer, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("webhook: %d %s", resp.StatusCode, answer)
	}
	eventually(t, "the tour becomes eligible for ann", eligible)
	t.Logf("Appcues webhook → tour eligible for ann in %v (a poll every 10ms, on a shared 2-core machine)", time.Since(posted).Round(time.Millisecond))

	m, err := segs.IsMember(ctx, &segmentsyncv1.IsMemberRequest{SegmentId: sid, UserId: "bob"})
	if err != nil || m.GetIsMember() {
		t.Fatalf("bob completed another flow: member %v %v", m.GetIsMember(), err)
	}
	pv, err := segs.PreviewSegmentRule(ctx, &segmentsyncv1.PreviewSegmentRuleRequest{Rule: &rule})
	if err != nil || pv.GetMemberCount() != 1 || len(pv.GetSampleUserIds()) != 1 || pv.GetSampleUserIds()[0] != "ann" {
		t.Fatalf("preview: %v %v", pv, err)
	}

	// Six days later ann is still in; eight days later the window has passed.
	clock.Add((6 * 24 * time.Hour).Microseconds())
	if _, err := ss.Computed().WindowPass(ctx); err != nil {
		t.Fatal(err)
	}
	if !eligible() {
		t.Fatal("six days later the completion is still within the last 7 days")
	}
	clock.Add((2 * 24 * time.Hour).Microseconds())
	moved, err := ss.Computed().WindowPass(ctx)
	if err != nil || moved != 1 {
		t.Fatalf("window pass re-evaluated %d users (%v), want ann", moved, err)
	}
	eventually(t, "ann drops out of the tour", func() bool { return !eligible() })
}

// Computing over the events still retained: a definition created after the
// events happened finds them (the backfill), and a preview of an unsaved
// rule reads them too.
func TestComputedSegmentBackfill(t *testing.T) {
	ctx := apptest.Context(t, 3*time.Minute)
	e := startComputed(ctx, t, apptest.Options{NeedBus: true})
	segs := segmentsyncv1.NewSegmentSyncServiceClient(e.Dial(e.A.Member))
	// A live computed segment first, so the consumer has moved past the events below.
	first := &segmentsyncv1.SegmentRule{Event: &segmentsyncv1.EventCondition{Source: "api", Name: "Signed Up", CountOperator: segmentsyncv1.CountOperator_COUNT_OPERATOR_AT_LEAST, Times: 1}}
	s1, err := segs.CreateSegment(ctx, &segmentsyncv1.CreateSegmentRequest{Name: "Signed up", Rule: first})
	if err != nil {
		t.Fatal(err)
	}
	ev := trackClient(t, e)
	for i := 0; i < 30; i++ {
		name := "Report Exported"
		if i%10 == 0 {
			name = "Signed Up"
		}
		ev(ctx, fmt.Sprintf("u%d", i%5), name)
	}
	eventually(t, "signed-up users", func() bool {
		g, err := segs.GetSegment(ctx, &segmentsyncv1.GetSegmentRequest{SegmentId: s1.GetSegment().GetSegmentId()})
		return err == nil && g.GetSegment().GetMemberCount() == 1
	})
	// u0..u4 exported 6, 6, 6, 6, 6 reports minus the sign-ups (i = 0, 10, 20: all u0).
	exported := &segmentsyncv1.SegmentRule{Event: &segmentsyncv1.EventCondition{Source: "api", Name: "Report Exported", CountOperator: segmentsyncv1.CountOperator_COUNT_OPERATOR_AT_LEAST, Times: 6}}
	pv, err := segs.PreviewSegmentRule(ctx, &segmentsyncv1.PreviewSegmentRuleRequest{Rule: exported, SampleSize: 100})
	if err != nil || pv.GetMemberCount() != 4 {
		t.Fatalf("preview of an unsaved rule over the retained events: %v %v", pv, err)
	}
	s2, err := segs.CreateSegment(ctx, &segmentsyncv1.CreateSegmentRequest{Name: "Heavy exporters", Rule: exported})
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, "backfilled segment", func() bool {
		g, err := segs.GetSegment(ctx, &segmentsyncv1.GetSegmentRequest{SegmentId: s2.GetSegment().GetSegmentId()})
		return err == nil && g.GetSegment().GetComputeState() == segmentsyncv1.ComputeState_COMPUTE_STATE_LIVE
	})
	g, _ := segs.GetMembers(ctx, &segmentsyncv1.GetMembersRequest{SegmentId: s2.GetSegment().GetSegmentId()})
	if fmt.Sprint(g.GetUserIds()) != "[u1 u2 u3 u4]" {
		t.Fatalf("backfilled members %v, want u1..u4", g.GetUserIds())
	}
	// Editing the rule computes it again.
	fewer := &segmentsyncv1.SegmentRule{Event: &segmentsyncv1.EventCondition{Source: "api", Name: "Report Exported", CountOperator: segmentsyncv1.CountOperator_COUNT_OPERATOR_EXACTLY, Times: 3}}
	if _, err := segs.UpdateSegment(ctx, &segmentsyncv1.UpdateSegmentRequest{SegmentId: s2.GetSegment().GetSegmentId(), Rule: fewer}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "edited segment", func() bool {
		g, err := segs.GetSegment(ctx, &segmentsyncv1.GetSegmentRequest{SegmentId: s2.GetSegment().GetSegmentId()})
		if err != nil || g.GetSegment().GetComputeState() != segmentsyncv1.ComputeState_COMPUTE_STATE_LIVE {
			return false
		}
		m, _ := segs.GetMembers(ctx, &segmentsyncv1.GetMembersRequest{SegmentId: s2.GetSegment().GetSegmentId()})
		return fmt.Sprint(m.GetUserIds()) == "[u0]"
	})
}

// startComputed starts an environment with what computed segments need:
// connector, segmentsync and eventrelay.
func startComputed(ctx context.Context, t *testing.T, o apptest.Options) *apptest.Env {
	t.Helper()
	e := apptest.New(t, o)
	cn, err := connector.New(ctx, e.P)
	if err != nil {
		t.Fatal(err)
	}
	ss, err := segmentsync.New(ctx, e.P)
	if err != nil {
		t.Fatal(err)
	}
	er, err := eventrelay.New(ctx, e.P)
	if err != nil {
		t.Fatal(err)
	}
	e.Add(cn, ss, er)
	e.Start()
	return e
}

// trackClient returns a function tracking one api event for a user of e.A.
func trackClient(t *testing.T, e *apptest.Env) func(ctx context.Context, user, name string) {
	cl := eventrelayv1.NewEventRelayServiceClient(e.Dial(e.A.Member))
	return func(ctx context.Context, user, name string) {
		t.Helper()
		if _, err := cl.Track(ctx, &eventrelayv1.TrackRequest{Event: &eventrelayv1.Event{Source: "api", UserId: user, Name: name}}); err != nil {
			t.Fatal(err)
		}
	}
}

// A restart resumes from the consumer's position: events applied before it
// are not counted twice, events after it are counted once.
func TestComputedSegmentSurvivesRestart(t *testing.T) {
	dir := t.TempDir()
	boot := func() *apptest.Env {
		return startComputed(context.Background(), t, apptest.Options{NeedBus: true, DataDir: dir})
	}
	ctx := apptest.Context(t, 3*time.Minute)
	e := boot()
	keys := e.A // stored in the data dir: valid after the restart
	segs := segmentsyncv1.NewSegmentSyncServiceClient(e.Dial(keys.Member))
	views := func(op segmentsyncv1.CountOperator, n uint32) *segmentsyncv1.SegmentRule {
		return &segmentsyncv1.SegmentRule{Event: &segmentsyncv1.EventCondition{Source: "api", Name: "Page Viewed", CountOperator: op, Times: n}}
	}
	two, err := segs.CreateSegment(ctx, &segmentsyncv1.CreateSegmentRequest{Name: "Two views", Rule: views(segmentsyncv1.CountOperator_COUNT_OPERATOR_EXACTLY, 2)})
	if err != nil {
		t.Fatal(err)
	}
	three, err := segs.CreateSegment(ctx, &segmentsyncv1.CreateSegmentRequest{Name: "Three views", Rule: views(segmentsyncv1.CountOperator_COUNT_OPERATOR_EXACTLY, 3)})
	if err != nil {
		t.Fatal(err)
	}
	isMember := func(c segmentsyncv1.SegmentSyncServiceClient, seg string) bool {
		m, err := c.IsMember(ctx, &segmentsyncv1.IsMemberRequest{SegmentId: seg, UserId: "ann"})
		return err == nil && m.GetIsMember()
	}
	track := trackClient(t, e)
	track(ctx, "ann", "Page Viewed")
	track(ctx, "ann", "Page Viewed")
	eventually(t, "two views counted", func() bool { return isMember(segs, two.GetSegment().GetSegmentId()) })
	e.Stop()

	e = boot()
	segs = segmentsyncv1.NewSegmentSyncServiceClient(e.Dial(keys.Member))
	ev := eventrelayv1.NewEventRelayServiceClient(e.Dial(keys.Member))
	if _, err := ev.Track(ctx, &eventrelayv1.TrackRequest{Event: &eventrelayv1.Event{Source: "api", UserId: "ann", Name: "Page Viewed"}}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the third view counted once", func() bool { return isMember(segs, three.GetSegment().GetSegmentId()) })
	if isMember(segs, two.GetSegment().GetSegmentId()) {
		t.Fatal("ann left two views when the third came")
	}
}
