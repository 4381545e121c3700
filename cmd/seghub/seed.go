package main

import (
	"context"
	"fmt"
	"time"

	connectorv1 "github.com/seghub/seghub/gen/seghub/connector/v1"
	eventrelayv1 "github.com/seghub/seghub/gen/seghub/eventrelay/v1"
	segmentsyncv1 "github.com/seghub/seghub/gen/seghub/segmentsync/v1"
	targetingv1 "github.com/seghub/seghub/gen/seghub/targeting/v1"
	"github.com/seghub/seghub/pkg/app"
	"github.com/seghub/seghub/pkg/auth"
)

// seed gives a newcomer something to try on the first start of the embedded
// default: users with identity properties, public and private segments, and a
// product tour targeted at a segment. It goes through the services' own gRPC
// APIs, so it exercises what a user would.
func seed(ctx context.Context, p *app.Platform, env string) error {
	ctx = auth.ForEnvironment(ctx, env)
	conn, err := p.Conn(app.SegmentSync)
	if err != nil {
		return err
	}
	ss := segmentsyncv1.NewSegmentSyncServiceClient(conn)
	var users []*segmentsyncv1.User
	for i := 1; i <= 50; i++ {
		props := map[string]*segmentsyncv1.PropertyValue{
			"appcuesUserID": {Kind: &segmentsyncv1.PropertyValue_StringValue{StringValue: fmt.Sprintf("ac-%03d", i)}},
			"plan":          {Kind: &segmentsyncv1.PropertyValue_StringValue{StringValue: map[bool]string{true: "trial", false: "pro"}[i%3 != 0]}},
			"seats":         {Kind: &segmentsyncv1.PropertyValue_NumberValue{NumberValue: float64(i % 12)}},
		}
		users = append(users, &segmentsyncv1.User{UserId: fmt.Sprintf("user-%03d", i), Properties: props})
	}
	if _, err := ss.UpsertUsers(ctx, &segmentsyncv1.UpsertUsersRequest{Users: users}); err != nil {
		return fmt.Errorf("seed users: %w", err)
	}
	type demo struct {
		name, description string
		visibility        segmentsyncv1.Visibility
		members           func(i int) bool
	}
	ids := map[string]string{}
	for _, d := range []demo{
		{"Trial users who never finished onboarding", "Signed up for a trial, onboarding checklist incomplete", segmentsyncv1.Visibility_VISIBILITY_PUBLIC, func(i int) bool { return i%3 != 0 && i%2 == 0 }},
		{"Power users", "Used the product on 20 of the last 30 days", segmentsyncv1.Visibility_VISIBILITY_PUBLIC, func(i int) bool { return i%5 == 0 }},
		{"Internal testers", "Staff accounts; never synced", segmentsyncv1.Visibility_VISIBILITY_PRIVATE, func(i int) bool { return i <= 3 }},
	} {
		seg, err := ss.CreateSegment(ctx, &segmentsyncv1.CreateSegmentRequest{Name: d.name, Description: d.description, Visibility: d.visibility})
		if err != nil {
			return fmt.Errorf("seed segment %q: %w", d.name, err)
		}
		var members []string
		for i := 1; i <= 50; i++ {
			if d.members(i) {
				members = append(members, fmt.Sprintf("user-%03d", i))
			}
		}
		if _, err := ss.AddMembers(ctx, &segmentsyncv1.AddMembersRequest{SegmentId: seg.GetSegment().GetSegmentId(), UserIds: members}); err != nil {
			return err
		}
		ids[d.name] = seg.GetSegment().GetSegmentId()
	}
	tconn, err := p.Conn(app.Targeting)
	if err != nil {
		return err
	}
	tg := targetingv1.NewTargetingServiceClient(tconn)
	trial := ids["Trial users who never finished onboarding"]
	tour := &targetingv1.CreateExperienceRequest{Name: "Finish onboarding tour", Type: targetingv1.ExperienceType_EXPERIENCE_TYPE_PRODUCT_TOUR, Audience: &targetingv1.Audience{Match: &targetingv1.ConditionGroup{
		Combinator: targetingv1.Combinator_COMBINATOR_AND,
		Conditions: []*targetingv1.Condition{
			{Operator: targetingv1.Operator_OPERATOR_IN_SEGMENT, SegmentId: trial},
			{Operator: targetingv1.Operator_OPERATOR_LESS_THAN, Property: "seats", Value: &targetingv1.Condition_NumberValue{NumberValue: 10}},
		}}}}
	// The targeting index follows segmentsync; wait until it knows the segment.
	deadline := time.Now().Add(20 * time.Second)
	for {
		_, err := tg.CreateExperience(ctx, tour)
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("seed product tour: %w", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if _, err := tg.CreateExperience(ctx, &targetingv1.CreateExperienceRequest{Name: "Welcome checklist", Type: targetingv1.ExperienceType_EXPERIENCE_TYPE_CHECKLIST, Audience: &targetingv1.Audience{Everyone: true}}); err != nil {
		return err
	}
	if p.Config.DestSimAddr != "" {
		// Connect the simulator's Appcues and sync the trial segment to it.
		cconn, err := p.Conn(app.Connector)
		if err != nil {
			return err
		}
		c, err := connectorv1.NewConnectorServiceClient(cconn).CreateConnection(ctx, &connectorv1.CreateConnectionRequest{Type: "appcues", Name: "Appcues (simulator)",
			Credentials: map[string]string{"account_id": "demo", "api_key": "demo-key", "api_secret": "demo-secret"}, Settings: &connectorv1.ConnectionSettings{SendEvents: true}})
		if err != nil {
			return fmt.Errorf("seed appcues connection: %w", err)
		}
		if _, err := ss.EnableSync(ctx, &segmentsyncv1.EnableSyncRequest{SegmentId: trial, ConnectionId: c.GetConnection().GetConnectionId(), Schedule: segmentsyncv1.SyncSchedule_SYNC_SCHEDULE_RECURRING}); err != nil {
			return fmt.Errorf("seed sync: %w", err)
		}
		// Relay every event (Appcues' included) into the simulator's analytics.
		an, err := connectorv1.NewConnectorServiceClient(cconn).CreateConnection(ctx, &connectorv1.CreateConnectionRequest{Type: "analytics", Name: "Analytics (simulator)",
			Credentials: map[string]string{"app_id": "demo-app"}})
		if err != nil {
			return fmt.Errorf("seed analytics connection: %w", err)
		}
		econn, err := p.Conn(app.EventRelay)
		if err != nil {
			return err
		}
		if _, err := eventrelayv1.NewEventRelayServiceClient(econn).CreateRoute(ctx, &eventrelayv1.CreateRouteRequest{ConnectionId: an.GetConnection().GetConnectionId()}); err != nil {
			return fmt.Errorf("seed event route: %w", err)
		}
	}
	p.Logger.Info("seeded demo data", "segments", len(ids), "users", len(users), "trial_segment", trial)
	return nil
}
