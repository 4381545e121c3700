package segmentsync_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	connectorv1 "github.com/seghub/seghub/gen/seghub/connector/v1"
	segmentsyncv1 "github.com/seghub/seghub/gen/seghub/segmentsync/v1"
	"github.com/seghub/seghub/pkg/app/apptest"
)

// An identity property must be one a run can read: user_id, the
// destination's own (a tag may attach it later), or one some user holds. An
// unknown one is refused naming the field and the close matches; a run whose
// every member lacks the property says so on the run and the sync.
func TestIdentityPropertyValidatedAndAllUnmatchedRunSaysSo(t *testing.T) {
	for _, pg := range []bool{false, true} {
		t.Run(map[bool]string{false: "sqlite", true: "postgres"}[pg], func(t *testing.T) {
			f := startSync(t, syncOpts{postgres: pg})
			ctx := apptest.Context(t, 120*time.Second)
			conn := f.appcues(t, ctx, "Appcues")

			// No user holds appcuesUserID yet: Appcues' own property is accepted,
			// and the run tells why nobody was sent.
			nobody := f.segment(t, ctx, "Nobody", 3, 0)
			en, err := f.admin.EnableSync(ctx, &segmentsyncv1.EnableSyncRequest{SegmentId: nobody, ConnectionId: conn, Schedule: segmentsyncv1.SyncSchedule_SYNC_SCHEDULE_ONE_TIME})
			if err != nil {
				t.Fatalf("enabling on Appcues' own identity property no user holds yet: %v", err)
			}
			r := f.waitRun(t, ctx, en.GetSync().GetSyncId(), 1, en.GetRun().GetRunId())
			if r.GetUnmatched() != 3 || r.GetAdded() != 0 || !strings.Contains(r.GetError(), `no member of the segment's 3 has identity property "appcuesUserID"`) {
				t.Fatalf("all-unmatched run = %v; want its error to say no member has appcuesUserID", r)
			}
			g, _ := f.ss.GetSync(ctx, &segmentsyncv1.GetSyncRequest{SyncId: en.GetSync().GetSyncId()})
			if !strings.Contains(g.GetSync().GetLastError(), "appcuesUserID") {
				t.Fatalf("sync after an all-unmatched run = %v; want last_error to say why", g.GetSync())
			}

			seg := f.segment(t, ctx, "Trial", 4, 2)
			if _, err := f.ss.UpsertUsers(ctx, &segmentsyncv1.UpsertUsersRequest{Users: []*segmentsyncv1.User{{UserId: "u3", Properties: map[string]*segmentsyncv1.PropertyValue{
				"email": {Kind: &segmentsyncv1.PropertyValue_StringValue{StringValue: "u3@example.com"}}}}}}); err != nil {
				t.Fatal(err)
			}
			for _, c := range []struct{ prop, suggests string }{
				{"Email", `"email"`},
				{"appcuesUserId", `"appcuesUserID"`},
				{"appcues", `"appcuesUserID"`},
				{"emial", `"email"`},
				{"userid", `"user_id"`},
			} {
				_, err := f.admin.EnableSync(ctx, &segmentsyncv1.EnableSyncRequest{SegmentId: seg, ConnectionId: conn, IdentityProperty: c.prop, Schedule: segmentsyncv1.SyncSchedule_SYNC_SCHEDULE_ONE_TIME})
				if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "identity_property") || !strings.Contains(err.Error(), c.suggests) {
					t.Errorf("enable on %q: %v; want InvalidArgument naming identity_property and suggesting %s", c.prop, err, c.suggests)
				}
			}
			_, err = f.admin.EnableSync(ctx, &segmentsyncv1.EnableSyncRequest{SegmentId: seg, ConnectionId: conn, IdentityProperty: "plan_tier", Schedule: segmentsyncv1.SyncSchedule_SYNC_SCHEDULE_ONE_TIME})
			if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "/v1/user-properties") {
				t.Errorf("enable on a property unlike any: %v; want InvalidArgument pointing at /v1/user-properties", err)
			}

			en, err = f.admin.EnableSync(ctx, &segmentsyncv1.EnableSyncRequest{SegmentId: seg, ConnectionId: conn, IdentityProperty: "user_id", Schedule: segmentsyncv1.SyncSchedule_SYNC_SCHEDULE_ONE_TIME})
			if err != nil {
				t.Fatalf("user_id is always valid: %v", err)
			}
			id := en.GetSync().GetSyncId()
			if r := f.waitRun(t, ctx, id, 1, en.GetRun().GetRunId()); r.GetAdded() != 4 || r.GetError() != "" {
				t.Fatalf("user_id run = %v", r)
			}
			typo := "emial"
			if _, err := f.admin.UpdateSync(ctx, &segmentsyncv1.UpdateSyncRequest{SyncId: id, IdentityProperty: &typo}); status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), `"email"`) {
				t.Fatalf("update to %q: %v; want InvalidArgument suggesting email", typo, err)
			}
			if g, _ := f.ss.GetSync(ctx, &segmentsyncv1.GetSyncRequest{SyncId: id}); g.GetSync().GetIdentityProperty() != "user_id" {
				t.Fatalf("a refused update changed the sync: %v", g.GetSync())
			}
			email := "email"
			if u, err := f.admin.UpdateSync(ctx, &segmentsyncv1.UpdateSyncRequest{SyncId: id, IdentityProperty: &email}); err != nil || u.GetSync().GetIdentityProperty() != "email" {
				t.Fatalf("update to a held property = %v, %v", u, err)
			}
			// Its last holder leaving does not block updates that keep it.
			if _, err := f.ss.DeleteUser(ctx, &segmentsyncv1.DeleteUserRequest{UserId: "u3"}); err != nil {
				t.Fatal(err)
			}
			if u, err := f.admin.UpdateSync(ctx, &segmentsyncv1.UpdateSyncRequest{SyncId: id, IdentityProperty: &email, Mode: segmentsyncv1.SyncMode_SYNC_MODE_UPSERT}); err != nil || u.GetSync().GetMode() != segmentsyncv1.SyncMode_SYNC_MODE_UPSERT {
				t.Fatalf("update keeping a property nobody holds any more = %v, %v", u, err)
			}
		})
	}
}

// IdentifyUser, called with a member key as a tag on the page would, attaches
// AB Tasty's visitor id to users; the AB Tasty sync then delivers exactly
// those users, under their visitor ids.
func TestIdentifyAttachesVisitorIDsThatSyncsDeliver(t *testing.T) {
	for _, pg := range []bool{false, true} {
		t.Run(map[bool]string{false: "sqlite", true: "postgres"}[pg], func(t *testing.T) {
			f := startSync(t, syncOpts{postgres: pg})
			ctx := apptest.Context(t, 120*time.Second)
			cr, err := f.conn.CreateConnection(ctx, &connectorv1.CreateConnectionRequest{Type: "abtasty", Name: "AB", Credentials: map[string]string{"account_identifier": "acc", "client_id": "seghub", "client_secret": "seghub-secret"}})
			if err != nil {
				t.Fatal(err)
			}
			seg := f.segment(t, ctx, "Trial", 4, 0)
			got, err := f.ss.IdentifyUser(ctx, &segmentsyncv1.IdentifyUserRequest{UserId: "u0", Source: "abtasty", VisitorId: "vis-0"})
			if err != nil || got.GetCreated() || len(got.GetProperties()) != 1 || got.GetProperties()[0] != "ABTastyVisitorId" {
				t.Fatalf("identify u0 = %v, %v", got, err)
			}
			if _, err := f.ss.IdentifyUser(ctx, &segmentsyncv1.IdentifyUserRequest{UserId: "u1", Properties: map[string]string{"ABTastyVisitorId": "vis-1"}}); err != nil {
				t.Fatal(err)
			}
			// A new user is created; properties it had are kept by a later identify.
			if got, err := f.ss.IdentifyUser(ctx, &segmentsyncv1.IdentifyUserRequest{UserId: "new", Source: "abtasty", VisitorId: "vis-new"}); err != nil || !got.GetCreated() {
				t.Fatalf("identify a new user = %v, %v", got, err)
			}
			if _, err := f.ss.IdentifyUser(ctx, &segmentsyncv1.IdentifyUserRequest{UserId: "u0", Source: "appcues", VisitorId: "ac-0"}); err != nil {
				t.Fatal(err)
			}
			u, err := f.ss.GetUser(ctx, &segmentsyncv1.GetUserRequest{UserId: "u0"})
			if err != nil || u.GetUser().GetProperties()["ABTastyVisitorId"].GetStringValue() != "vis-0" || u.GetUser().GetProperties()["appcuesUserID"].GetStringValue() != "ac-0" {
				t.Fatalf("u0 after two identifies = %v, %v", u, err)
			}
			for _, c := range []struct {
				req   *segmentsyncv1.IdentifyUserRequest
				field string
			}{
				{&segmentsyncv1.IdentifyUserRequest{UserId: "u2", Source: "heap", VisitorId: "x"}, "source"},
				{&segmentsyncv1.IdentifyUserRequest{UserId: "u2", Source: "abtasty"}, "visitor_id"},
				{&segmentsyncv1.IdentifyUserRequest{UserId: "u2", VisitorId: "x"}, "source"},
				{&segmentsyncv1.IdentifyUserRequest{UserId: "u2"}, "visitor_id"},
				{&segmentsyncv1.IdentifyUserRequest{UserId: "u2", Properties: map[string]string{"user_id": "x"}}, "properties"},
				{&segmentsyncv1.IdentifyUserRequest{UserId: "u2", Source: "abtasty", VisitorId: "a", Properties: map[string]string{"ABTastyVisitorId": "b"}}, "properties"},
				{&segmentsyncv1.IdentifyUserRequest{Source: "abtasty", VisitorId: "a"}, "user_id"},
			} {
				_, err := f.ss.IdentifyUser(ctx, c.req)
				if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), c.field) {
					t.Errorf("identify %v: %v; want InvalidArgument naming %s", c.req, err, c.field)
				}
			}

			en, err := f.admin.EnableSync(ctx, &segmentsyncv1.EnableSyncRequest{SegmentId: seg, ConnectionId: cr.GetConnection().GetConnectionId(), Schedule: segmentsyncv1.SyncSchedule_SYNC_SCHEDULE_ONE_TIME})
			if err != nil {
				t.Fatal(err)
			}
			if en.GetSync().GetIdentityProperty() != "ABTastyVisitorId" {
				t.Fatalf("AB Tasty sync keyed on %q", en.GetSync().GetIdentityProperty())
			}
			r := f.waitRun(t, ctx, en.GetSync().GetSyncId(), 1, en.GetRun().GetRunId())
			if r.GetAdded() != 2 || r.GetUnmatched() != 2 || r.GetError() != "" {
				t.Fatalf("AB Tasty run = %v; want the two identified users sent and two unmatched", r)
			}
			visitors := map[string]bool{}
			for _, members := range f.sim.Snapshot().ABTasty["acc"] {
				for v := range members {
					visitors[v] = true
				}
			}
			if len(visitors) != 2 || !visitors["vis-0"] || !visitors["vis-1"] {
				t.Fatalf("AB Tasty holds %v; want vis-0 and vis-1", visitors)
			}
		})
	}
}

// A segment is targetable by a destination only when at least one member
// holds its identity property (the AB Tasty document's rule): ListSegments'
// targetable_by keeps those, across pages.
func TestListSegmentsTargetableByIdentityProperty(t *testing.T) {
	for _, pg := range []bool{false, true} {
		t.Run(map[bool]string{false: "sqlite", true: "postgres"}[pg], func(t *testing.T) {
			f := startSync(t, syncOpts{postgres: pg})
			ctx := apptest.Context(t, 120*time.Second)
			var segs []string
			for _, name := range []string{"A none", "B one", "C none", "D one", "E one"} {
				s, err := f.ss.CreateSegment(ctx, &segmentsyncv1.CreateSegmentRequest{Name: name})
				if err != nil {
					t.Fatal(err)
				}
				segs = append(segs, s.GetSegment().GetSegmentId())
			}
			if _, err := f.ss.CreateSegment(ctx, &segmentsyncv1.CreateSegmentRequest{Name: "F empty"}); err != nil {
				t.Fatal(err)
			}
			for i, seg := range segs {
				user := fmt.Sprintf("v%d", i)
				if strings.HasSuffix([]string{"A none", "B one", "C none", "D one", "E one"}[i], " one") {
					if _, err := f.ss.IdentifyUser(ctx, &segmentsyncv1.IdentifyUserRequest{UserId: user, Source: "abtasty", VisitorId: "vis-" + user}); err != nil {
						t.Fatal(err)
					}
				}
				if _, err := replace(ctx, f.ss, seg, []string{user, "plain"}, 10); err != nil {
					t.Fatal(err)
				}
			}
			list := func(prop string, size int32) []string {
				var names []string
				token := ""
				for {
					r, err := f.ss.ListSegments(ctx, &segmentsyncv1.ListSegmentsRequest{TargetableBy: prop, PageSize: size, PageToken: token})
					if err != nil {
						t.Fatal(err)
					}
					for _, s := range r.GetSegments() {
						names = append(names, s.GetName())
					}
					if token = r.GetNextPageToken(); token == "" {
						return names
					}
				}
			}
			for _, size := range []int32{1, 2, 50} {
				if got := strings.Join(list("ABTastyVisitorId", size), ","); got != "B one,D one,E one" {
					t.Errorf("targetable by ABTastyVisitorId, pages of %d: %s", size, got)
				}
			}
			if got := strings.Join(list("user_id", 2), ","); got != "A none,B one,C none,D one,E one" {
				t.Errorf("targetable by user_id: %s; want every non-empty segment", got)
			}
			if got := list("appcuesUserID", 2); len(got) != 0 {
				t.Errorf("targetable by a property nobody holds: %v", got)
			}
			if got := strings.Join(list("", 50), ","); got != "A none,B one,C none,D one,E one,F empty" {
				t.Errorf("no filter: %s", got)
			}
		})
	}
}
