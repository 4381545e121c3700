package segmentsync_test

import (
	"context"
	"fmt"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	connectorv1 "github.com/seghub/seghub/gen/seghub/connector/v1"
	segmentsyncv1 "github.com/seghub/seghub/gen/seghub/segmentsync/v1"
	"github.com/seghub/seghub/pkg/app/apptest"
	"github.com/seghub/seghub/pkg/config"
	"github.com/seghub/seghub/pkg/destinations"
	"github.com/seghub/seghub/services/connector"
	"github.com/seghub/seghub/services/destsim"
	"github.com/seghub/seghub/services/segmentsync"
)

// clock is a controllable clock for schedules.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time      { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Add(d time.Duration) { c.mu.Lock(); c.t = c.t.Add(d); c.mu.Unlock() }

type syncFixture struct {
	e     *apptest.Env
	sim   *destsim.Sim
	ss    segmentsyncv1.SegmentSyncServiceClient
	admin segmentsyncv1.SegmentSyncServiceClient
	conn  connectorv1.ConnectorServiceClient
	svc   *segmentsync.Service
	clock *clock
}

type syncOpts struct {
	rate     func(destinations.Type) (int, int)
	postgres bool
	dataDir  string
	dbURL    string
	sim      *destsim.Sim
	simURL   string
}

func startSync(t *testing.T, o syncOpts) *syncFixture {
	t.Helper()
	f := &syncFixture{sim: o.sim, clock: &clock{t: time.Now()}}
	if f.sim == nil {
		f.sim = destsim.New(destsim.DemoCredentials())
		srv := httptest.NewServer(f.sim)
		t.Cleanup(srv.Close)
		o.simURL = srv.URL
	}
	f.e = apptest.New(t, apptest.Options{NeedBus: true, Postgres: o.postgres, DataDir: o.dataDir, DatabaseURL: o.dbURL, Configure: func(c *config.Config) {
		c.AppcuesURL, c.CommandBarURL, c.ABTastyURL, c.AnalyticsURL = o.simURL, o.simURL, o.simURL, o.simURL
	}})
	cn, err := connector.New(context.Background(), f.e.P)
	if err != nil {
		t.Fatal(err)
	}
	f.svc, err = segmentsync.NewWithOptions(context.Background(), f.e.P, segmentsync.Options{
		AdapterConfig: func(c *destinations.Config) { c.MaxAttempts, c.MaxBackoff = 40, 10*time.Millisecond },
		Now:           f.clock.Now, NoTick: true, PollInterval: 20 * time.Millisecond, Rate: o.rate})
	if err != nil {
		t.Fatal(err)
	}
	f.e.Add(cn, f.svc)
	f.e.Start()
	f.ss = segmentsyncv1.NewSegmentSyncServiceClient(f.e.Dial(f.e.A.Member))
	f.admin = segmentsyncv1.NewSegmentSyncServiceClient(f.e.Dial(f.e.A.Admin))
	f.conn = connectorv1.NewConnectorServiceClient(f.e.Dial(f.e.A.Admin))
	return f
}

func (f *syncFixture) appcues(t *testing.T, ctx context.Context, name string) string {
	t.Helper()
	r, err := f.conn.CreateConnection(ctx, &connectorv1.CreateConnectionRequest{Type: "appcues", Name: name, Credentials: map[string]string{"account_id": "demo", "api_key": "demo-key", "api_secret": "demo-secret"}})
	if err != nil {
		t.Fatal(err)
	}
	return r.GetConnection().GetConnectionId()
}

// segment creates a segment of users u0..u(n-1); the first withID carry appcuesUserID "ac-i".
func (f *syncFixture) segment(t *testing.T, ctx context.Context, name string, n, withID int) string {
	t.Helper()
	s, err := f.ss.CreateSegment(ctx, &segmentsyncv1.CreateSegmentRequest{Name: name})
	if err != nil {
		t.Fatal(err)
	}
	var users []*segmentsyncv1.User
	var ids []string
	for i := 0; i < n; i++ {
		u := &segmentsyncv1.User{UserId: fmt.Sprintf("u%d", i)}
		if i < withID {
			u.Properties = map[string]*segmentsyncv1.PropertyValue{"appcuesUserID": {Kind: &segmentsyncv1.PropertyValue_StringValue{StringValue: fmt.Sprintf("ac-%d", i)}}}
		}
		users = append(users, u)
		ids = append(ids, u.UserId)
		if len(users) == 1000 {
			if _, err := f.ss.UpsertUsers(ctx, &segmentsyncv1.UpsertUsersRequest{Users: users}); err != nil {
				t.Fatal(err)
			}
			users = nil
		}
	}
	if len(users) > 0 {
		if _, err := f.ss.UpsertUsers(ctx, &segmentsyncv1.UpsertUsersRequest{Users: users}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := replace(ctx, f.ss, s.GetSegment().GetSegmentId(), ids, 5000); err != nil {
		t.Fatal(err)
	}
	return s.GetSegment().GetSegmentId()
}

// waitRun waits until run runID (or, with runID "", any run beyond the
// first nth-1) of a sync is finished and returns it.
func (f *syncFixture) waitRun(t *testing.T, ctx context.Context, syncID string, nth int, runID ...string) *segmentsyncv1.SyncRun {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		runs, err := f.ss.ListSyncRuns(ctx, &segmentsyncv1.ListSyncRunsRequest{SyncId: syncID})
		if err != nil {
			t.Fatal(err)
		}
		var r *segmentsyncv1.SyncRun
		for _, x := range runs.GetRuns() {
			if len(runID) > 0 && x.GetRunId() == runID[0] {
				r = x
			}
		}
		if len(runID) == 0 && len(runs.GetRuns()) >= nth {
			r = runs.GetRuns()[0]
		}
		if r != nil {
			switch r.GetStatus() {
			case segmentsyncv1.SyncRunStatus_SYNC_RUN_STATUS_SUCCEEDED, segmentsyncv1.SyncRunStatus_SYNC_RUN_STATUS_PARTIAL, segmentsyncv1.SyncRunStatus_SYNC_RUN_STATUS_FAILED:
				return r
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("run %d of %s did not finish: %v", nth, syncID, runs)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// members returns who holds the Appcues property for name.
func (f *syncFixture) appcuesMembers(prop string) map[string]bool {
	out := map[string]bool{}
	for user, p := range f.sim.Snapshot().Appcues["demo"] {
		if p[prop] == true {
			out[user] = true
		}
	}
	return out
}

func TestSyncOneTimeFrozenNameUnmatchedAndModes(t *testing.T) {
	for _, pg := range []bool{false, true} {
		t.Run(map[bool]string{false: "sqlite", true: "postgres"}[pg], func(t *testing.T) {
			f := startSync(t, syncOpts{postgres: pg})
			ctx := apptest.Context(t, 120*time.Second)
			conn := f.appcues(t, ctx, "Appcues")
			seg := f.segment(t, ctx, "Trial users", 30, 25)

			// Members may not enable syncs; private segments do not sync.
			_, err := f.ss.EnableSync(ctx, &segmentsyncv1.EnableSyncRequest{SegmentId: seg, ConnectionId: conn, Schedule: segmentsyncv1.SyncSchedule_SYNC_SCHEDULE_ONE_TIME})
			if status.Code(err) != codes.PermissionDenied {
				t.Fatalf("member enabling a sync: %v", err)
			}
			priv, _ := f.ss.CreateSegment(ctx, &segmentsyncv1.CreateSegmentRequest{Name: "Private", Visibility: segmentsyncv1.Visibility_VISIBILITY_PRIVATE})
			_, err = f.admin.EnableSync(ctx, &segmentsyncv1.EnableSyncRequest{SegmentId: priv.GetSegment().GetSegmentId(), ConnectionId: conn, Schedule: segmentsyncv1.SyncSchedule_SYNC_SCHEDULE_ONE_TIME})
			if status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "private") {
				t.Fatalf("private segment: %v", err)
			}

			en, err := f.admin.EnableSync(ctx, &segmentsyncv1.EnableSyncRequest{SegmentId: seg, ConnectionId: conn, Schedule: segmentsyncv1.SyncSchedule_SYNC_SCHEDULE_ONE_TIME})
			if err != nil {
				t.Fatal(err)
			}
			syncID := en.GetSync().GetSyncId()
			if en.GetSync().GetIdentityProperty() != "appcuesUserID" {
				t.Fatalf("identity property = %s (the connection's default)", en.GetSync().GetIdentityProperty())
			}
			r := f.waitRun(t, ctx, syncID, 1, en.GetRun().GetRunId())
			if r.GetStatus() != segmentsyncv1.SyncRunStatus_SYNC_RUN_STATUS_SUCCEEDED || r.GetAdded() != 25 || r.GetUnmatched() != 5 || r.GetTraceId() == "" {
				t.Fatalf("first run = %v", r)
			}
			prop := "[seghub] Trial users"
			if got := f.appcuesMembers(prop); len(got) != 25 || !got["ac-0"] || got["u29"] {
				t.Fatalf("appcues holds %d members", len(got))
			}
			g, _ := f.ss.GetSync(ctx, &segmentsyncv1.GetSyncRequest{SyncId: syncID})
			if g.GetSync().GetFrozenDisplayName() != "Trial users" || g.GetSync().GetLastSyncedTime() == nil || g.GetSync().GetDeliveredCount() != 25 {
				t.Fatalf("sync = %v", g.GetSync())
			}

			// Renaming the segment does not rename it at the destination.
			newName := "Renamed trial"
			if _, err := f.ss.UpdateSegment(ctx, &segmentsyncv1.UpdateSegmentRequest{SegmentId: seg, Name: &newName}); err != nil {
				t.Fatal(err)
			}
			// Churn: two leave, one new member with an id arrives.
			_, _ = f.ss.RemoveMembers(ctx, &segmentsyncv1.RemoveMembersRequest{SegmentId: seg, UserIds: []string{"u0", "u1"}})
			_, _ = f.ss.UpsertUsers(ctx, &segmentsyncv1.UpsertUsersRequest{Users: []*segmentsyncv1.User{{UserId: "new", Properties: map[string]*segmentsyncv1.PropertyValue{"appcuesUserID": {Kind: &segmentsyncv1.PropertyValue_StringValue{StringValue: "ac-new"}}}}}})
			_, _ = f.ss.AddMembers(ctx, &segmentsyncv1.AddMembersRequest{SegmentId: seg, UserIds: []string{"new"}})

			// A dry run reports the diff and sends nothing.
			before := f.sim.Snapshot().Counters["requests"]
			dr, err := f.ss.DryRun(ctx, &segmentsyncv1.DryRunRequest{SyncId: syncID, SampleSize: 5})
			if err != nil || dr.GetToAdd() != 1 || dr.GetToRemove() != 2 || dr.GetUnmatched() != 5 || dr.GetSampleAdds()[0] != "ac-new" {
				t.Fatalf("dry run = %v, %v", dr, err)
			}
			if after := f.sim.Snapshot().Counters["requests"]; after != before {
				t.Fatalf("dry run sent %d requests", after-before)
			}

			// Upsert: adds only.
			if _, err := f.admin.UpdateSync(ctx, &segmentsyncv1.UpdateSyncRequest{SyncId: syncID, Mode: segmentsyncv1.SyncMode_SYNC_MODE_UPSERT}); err != nil {
				t.Fatal(err)
			}
			now, err := f.admin.SyncNow(ctx, &segmentsyncv1.SyncNowRequest{SyncId: syncID})
			if err != nil {
				t.Fatal(err)
			}
			r = f.waitRun(t, ctx, syncID, 2, now.GetRun().GetRunId())
			if r.GetAdded() != 1 || r.GetRemoved() != 0 {
				t.Fatalf("upsert run = %v", r)
			}
			got := f.appcuesMembers(prop)
			if !got["ac-new"] || !got["ac-0"] || len(got) != 26 {
				t.Fatalf("after upsert appcues holds %d (ac-0 %v)", len(got), got["ac-0"])
			}
			if len(f.appcuesMembers("[seghub] Renamed trial")) != 0 {
				t.Fatal("the destination saw the new segment name")
			}
			// Mirror: the two who left are removed, and only the diff is sent.
			_, _ = f.admin.UpdateSync(ctx, &segmentsyncv1.UpdateSyncRequest{SyncId: syncID, Mode: segmentsyncv1.SyncMode_SYNC_MODE_MIRROR})
			now, _ = f.admin.SyncNow(ctx, &segmentsyncv1.SyncNowRequest{SyncId: syncID})
			r = f.waitRun(t, ctx, syncID, 3, now.GetRun().GetRunId())
			if r.GetAdded() != 0 || r.GetRemoved() != 2 {
				t.Fatalf("mirror run = %v", r)
			}
			if got := f.appcuesMembers(prop); len(got) != 24 || got["ac-0"] {
				t.Fatalf("after mirror appcues holds %d", len(got))
			}
			// A changed identity value removes the old id and adds the new one.
			_, _ = f.ss.UpsertUsers(ctx, &segmentsyncv1.UpsertUsersRequest{Users: []*segmentsyncv1.User{{UserId: "u5", Properties: map[string]*segmentsyncv1.PropertyValue{"appcuesUserID": {Kind: &segmentsyncv1.PropertyValue_StringValue{StringValue: "ac-5-new"}}}}}})
			now, _ = f.admin.SyncNow(ctx, &segmentsyncv1.SyncNowRequest{SyncId: syncID})
			r = f.waitRun(t, ctx, syncID, 4, now.GetRun().GetRunId())
			got = f.appcuesMembers(prop)
			if r.GetAdded() != 1 || r.GetRemoved() != 1 || got["ac-5"] || !got["ac-5-new"] {
				t.Fatalf("identity change run = %v (ac-5 %v, ac-5-new %v)", r, got["ac-5"], got["ac-5-new"])
			}
			// Disabling with clear_destination removes everything delivered.
			d, err := f.admin.DisableSync(ctx, &segmentsyncv1.DisableSyncRequest{SyncId: syncID, ClearDestination: true})
			if err != nil || d.GetSync().GetEnabled() {
				t.Fatalf("disable = %v, %v", d, err)
			}
			f.waitRun(t, ctx, syncID, 5, d.GetRun().GetRunId())
			if got := f.appcuesMembers(prop); len(got) != 0 {
				t.Fatalf("after clearing appcues holds %d", len(got))
			}
			_, err = f.admin.SyncNow(ctx, &segmentsyncv1.SyncNowRequest{SyncId: syncID})
			if status.Code(err) != codes.FailedPrecondition {
				t.Fatalf("SyncNow on a disabled sync: %v", err)
			}
		})
	}
}

func TestRecurringScheduleAndLimit(t *testing.T) {
	f := startSync(t, syncOpts{})
	ctx := apptest.Context(t, 120*time.Second)
	conn := f.appcues(t, ctx, "Appcues")
	var first string
	for i := 0; i < 10; i++ {
		seg := f.segment(t, ctx, fmt.Sprint("R", i), 3, 3)
		en, err := f.admin.EnableSync(ctx, &segmentsyncv1.EnableSyncRequest{SegmentId: seg, ConnectionId: conn, Schedule: segmentsyncv1.SyncSchedule_SYNC_SCHEDULE_RECURRING})
		if err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			first = en.GetSync().GetSyncId()
			if en.GetSync().GetInterval().AsDuration() != time.Hour {
				t.Fatalf("default Appcues interval = %v", en.GetSync().GetInterval().AsDuration())
			}
		}
	}
	seg := f.segment(t, ctx, "R-extra", 3, 3)
	_, err := f.admin.EnableSync(ctx, &segmentsyncv1.EnableSyncRequest{SegmentId: seg, ConnectionId: conn, Schedule: segmentsyncv1.SyncSchedule_SYNC_SCHEDULE_RECURRING})
	if status.Code(err) != codes.ResourceExhausted || !strings.Contains(err.Error(), "at most 10") || !strings.Contains(err.Error(), "10 are in use") {
		t.Fatalf("11th recurring sync: %v", err)
	}
	// One-time syncs are unlimited.
	if _, err := f.admin.EnableSync(ctx, &segmentsyncv1.EnableSyncRequest{SegmentId: seg, ConnectionId: conn, Schedule: segmentsyncv1.SyncSchedule_SYNC_SCHEDULE_ONE_TIME}); err != nil {
		t.Fatal(err)
	}
	f.waitRun(t, ctx, first, 1)
	// Nothing is due before the interval; after five missed intervals each
	// sync runs once, not five times.
	if n, err := f.svc.Engine().Tick(ctx); err != nil || n != 0 {
		t.Fatalf("tick before the interval queued %d, %v", n, err)
	}
	f.clock.Add(5*time.Hour + 10*time.Minute)
	n, err := f.svc.Engine().Tick(ctx)
	if err != nil || n != 10 {
		t.Fatalf("tick after 5 missed hours queued %d (%v), want 10 (one per sync)", n, err)
	}
	if n, _ := f.svc.Engine().Tick(ctx); n != 0 {
		t.Fatalf("a second tick queued %d", n)
	}
	r := f.waitRun(t, ctx, first, 2)
	if r.GetTrigger() != segmentsyncv1.SyncRunTrigger_SYNC_RUN_TRIGGER_SCHEDULE {
		t.Fatalf("scheduled run = %v", r)
	}
	g, _ := f.ss.GetSync(ctx, &segmentsyncv1.GetSyncRequest{SyncId: first})
	if next := g.GetSync().GetNextRunTime().AsTime(); next.Before(f.clock.Now().Add(time.Hour)) || next.After(f.clock.Now().Add(time.Hour+2*time.Minute)) {
		t.Fatalf("next run %v is not one interval (+ jitter) after now %v", next, f.clock.Now())
	}
	_, err = f.admin.UpdateSync(ctx, &segmentsyncv1.UpdateSyncRequest{SyncId: first, Interval: durationpb.New(time.Minute)})
	if status.Code(err) != codes.InvalidArgument {
		t.Fatalf("1-minute interval: %v", err)
	}
}

// AB Tasty: invalid visitor ids fail permanently, are reported, and are
// retried by the next run; data retention is reported.
func TestFailedIdentitiesRetriedAndRetention(t *testing.T) {
	f := startSync(t, syncOpts{})
	ctx := apptest.Context(t, 60*time.Second)
	cr, err := f.conn.CreateConnection(ctx, &connectorv1.CreateConnectionRequest{Type: "abtasty", Name: "AB", Credentials: map[string]string{"account_identifier": "acc", "client_id": "seghub", "client_secret": "seghub-secret"}})
	if err != nil {
		t.Fatal(err)
	}
	seg := f.segment(t, ctx, "Visitors", 6, 0)
	var users []*segmentsyncv1.User
	for i := 0; i < 6; i++ {
		v := fmt.Sprintf("visitor-%d", i)
		if i >= 4 {
			v = fmt.Sprintf("Bad Visitor %d!", i)
		}
		users = append(users, &segmentsyncv1.User{UserId: fmt.Sprint("u", i), Properties: map[string]*segmentsyncv1.PropertyValue{"ABTastyVisitorId": {Kind: &segmentsyncv1.PropertyValue_StringValue{StringValue: v}}}})
	}
	_, _ = f.ss.UpsertUsers(ctx, &segmentsyncv1.UpsertUsersRequest{Users: users})
	en, err := f.admin.EnableSync(ctx, &segmentsyncv1.EnableSyncRequest{SegmentId: seg, ConnectionId: cr.GetConnection().GetConnectionId(), Schedule: segmentsyncv1.SyncSchedule_SYNC_SCHEDULE_ONE_TIME})
	if err != nil {
		t.Fatal(err)
	}
	r := f.waitRun(t, ctx, en.GetSync().GetSyncId(), 1, en.GetRun().GetRunId())
	if r.GetStatus() != segmentsyncv1.SyncRunStatus_SYNC_RUN_STATUS_PARTIAL || r.GetAdded() != 4 || r.GetFailed() != 2 || len(r.GetFailedIdentities()) != 2 {
		t.Fatalf("first run = %v", r)
	}
	if exp := r.GetDataExpireTime().AsTime(); exp.Before(f.clock.Now().Add(29 * 24 * time.Hour)) {
		t.Fatalf("one-time AB Tasty sync does not say when its data lapses: %v", r.GetDataExpireTime())
	}
	// The failures are fixed at the source; the next run retries exactly them.
	_, _ = f.ss.UpsertUsers(ctx, &segmentsyncv1.UpsertUsersRequest{Users: []*segmentsyncv1.User{
		{UserId: "u4", Properties: map[string]*segmentsyncv1.PropertyValue{"ABTastyVisitorId": {Kind: &segmentsyncv1.PropertyValue_StringValue{StringValue: "visitor-4"}}}},
		{UserId: "u5", Properties: map[string]*segmentsyncv1.PropertyValue{"ABTastyVisitorId": {Kind: &segmentsyncv1.PropertyValue_StringValue{StringValue: "visitor-5"}}}}}})
	now, _ := f.admin.SyncNow(ctx, &segmentsyncv1.SyncNowRequest{SyncId: en.GetSync().GetSyncId()})
	r = f.waitRun(t, ctx, en.GetSync().GetSyncId(), 2, now.GetRun().GetRunId())
	if r.GetStatus() != segmentsyncv1.SyncRunStatus_SYNC_RUN_STATUS_SUCCEEDED || r.GetAdded() != 2 || r.GetRetried() != 2 {
		t.Fatalf("second run = %v", r)
	}
	if n := len(f.sim.Snapshot().ABTasty["acc"]["Visitors"]); n != 6 {
		t.Fatalf("AB Tasty holds %d visitors", n)
	}
}

// 30 % of calls answered 429 or 5xx still end in exactly the segment.
func TestSyncUnderFaultsEndsExact(t *testing.T) {
	f := startSync(t, syncOpts{})
	ctx := apptest.Context(t, 120*time.Second)
	f.sim.SetFaults(destsim.Faults{Rate429: 0.15, Rate5xx: 0.15})
	conn := f.appcues(t, ctx, "Appcues")
	seg := f.segment(t, ctx, "Faulty", 3000, 3000)
	en, err := f.admin.EnableSync(ctx, &segmentsyncv1.EnableSyncRequest{SegmentId: seg, ConnectionId: conn, Schedule: segmentsyncv1.SyncSchedule_SYNC_SCHEDULE_ONE_TIME})
	if err != nil {
		t.Fatal(err)
	}
	r := f.waitRun(t, ctx, en.GetSync().GetSyncId(), 1, en.GetRun().GetRunId())
	if r.GetStatus() != segmentsyncv1.SyncRunStatus_SYNC_RUN_STATUS_SUCCEEDED {
		t.Fatalf("run = %v", r)
	}
	if got := f.appcuesMembers("[seghub] Faulty"); len(got) != 3000 {
		t.Fatalf("appcues holds %d, want 3000", len(got))
	}
	// A small churn goes out as single-profile PATCHes, under the same faults.
	var gone []string
	for i := 0; i < 15; i++ {
		gone = append(gone, fmt.Sprint("u", i))
	}
	_, _ = f.ss.RemoveMembers(ctx, &segmentsyncv1.RemoveMembersRequest{SegmentId: seg, UserIds: gone})
	now, err := f.admin.SyncNow(ctx, &segmentsyncv1.SyncNowRequest{SyncId: en.GetSync().GetSyncId()})
	if err != nil {
		t.Fatal(err)
	}
	r = f.waitRun(t, ctx, en.GetSync().GetSyncId(), 2, now.GetRun().GetRunId())
	if got := f.appcuesMembers("[seghub] Faulty"); r.GetRemoved() != 15 || len(got) != 2985 || got["ac-0"] {
		t.Fatalf("after churn: run %v, appcues holds %d", r, len(got))
	}
	if c := f.sim.Snapshot().Counters; c["injected_429"]+c["injected_5xx"] == 0 {
		t.Fatalf("no faults injected: %v", c)
	}
}

// An engine stopped mid-run: the next process resumes from the checkpoints
// and the destination ends holding exactly the segment, without re-sending
// acknowledged batches.
func TestRunResumesAfterStop(t *testing.T) {
	for _, pg := range []bool{false, true} {
		t.Run(map[bool]string{false: "sqlite", true: "postgres"}[pg], func(t *testing.T) {
			sim := destsim.New(destsim.DemoCredentials())
			srv := httptest.NewServer(sim)
			defer srv.Close()
			sim.SetFaults(destsim.Faults{LatencyMS: 60})
			dir := t.TempDir()
			f := startSync(t, syncOpts{postgres: pg, dataDir: dir, sim: sim, simURL: srv.URL})
			ctx := apptest.Context(t, 120*time.Second)
			conn := f.appcues(t, ctx, "Appcues")
			seg := f.segment(t, ctx, "Big", 12000, 12000)
			en, err := f.admin.EnableSync(ctx, &segmentsyncv1.EnableSyncRequest{SegmentId: seg, ConnectionId: conn, Schedule: segmentsyncv1.SyncSchedule_SYNC_SCHEDULE_ONE_TIME})
			if err != nil {
				t.Fatal(err)
			}
			// Stop once some, not all, batches are acknowledged.
			for len(f.appcuesMembers("[seghub] Big")) < 2000 {
				time.Sleep(5 * time.Millisecond)
			}
			keys, url := f.e.A, f.e.Config.DatabaseURL
			f.e.Stop()
			held := len(f.appcuesMembers("[seghub] Big"))
			if held >= 12000 {
				t.Fatalf("the run finished before the stop (%d held); the test proves nothing", held)
			}
			requestsBefore := sim.Snapshot().Counters["requests"]

			f2 := startSync(t, syncOpts{dataDir: dir, dbURL: url, sim: sim, simURL: srv.URL})
			ss2 := segmentsyncv1.NewSegmentSyncServiceClient(f2.e.Dial(keys.Member))
			f2.ss = ss2
			r := f2.waitRun(t, ctx, en.GetSync().GetSyncId(), 1, en.GetRun().GetRunId())
			if r.GetStatus() != segmentsyncv1.SyncRunStatus_SYNC_RUN_STATUS_SUCCEEDED {
				t.Fatalf("resumed run = %v", r)
			}
			if got := f.appcuesMembers("[seghub] Big"); len(got) != 12000 {
				t.Fatalf("destination holds %d, want 12000", len(got))
			}
			// 12 batches of 1000 in all; the resumed process sent only the
			// ones not acknowledged before the stop (at most one resent).
			sent := sim.Snapshot().Counters["requests"] - requestsBefore
			if max := (12000-held)/1000 + 2; sent > max {
				t.Fatalf("resumed process sent %d requests for %d missing members (max %d)", sent, 12000-held, max)
			}
		})
	}
}

// Two runs to one connection at once share its token bucket: together they
// take no more than the burst plus the rate.
func TestConcurrentRunsShareRateLimit(t *testing.T) {
	f := startSync(t, syncOpts{rate: func(destinations.Type) (int, int) { return 600, 2 }}) // 10 a second
	ctx := apptest.Context(t, 60*time.Second)
	conn := f.appcues(t, ctx, "Appcues")
	segA := f.segment(t, ctx, "A", 10, 10)
	segB := f.segment(t, ctx, "B", 10, 10)
	start := time.Now()
	var runs []*segmentsyncv1.EnableSyncResponse
	for _, seg := range []string{segA, segB} {
		en, err := f.admin.EnableSync(ctx, &segmentsyncv1.EnableSyncRequest{SegmentId: seg, ConnectionId: conn, Schedule: segmentsyncv1.SyncSchedule_SYNC_SCHEDULE_ONE_TIME})
		if err != nil {
			t.Fatal(err)
		}
		runs = append(runs, en)
	}
	for _, en := range runs {
		if r := f.waitRun(t, ctx, en.GetSync().GetSyncId(), 1, en.GetRun().GetRunId()); r.GetAdded() != 10 {
			t.Fatalf("run = %v", r)
		}
	}
	// 20 single-profile PATCHes (small batches) at 10/s after a burst of 2.
	if elapsed, min := time.Since(start), 1700*time.Millisecond; elapsed < min {
		t.Fatalf("two runs sent 20 requests in %v; the connection's limit allows no less than %v", elapsed, min)
	}
	if len(f.appcuesMembers("[seghub] A")) != 10 || len(f.appcuesMembers("[seghub] B")) != 10 {
		t.Fatal("destination state incomplete")
	}
}

// A destination refusing the credentials fails the run with a clear status
// and marks the connection needs_reauth.
func TestAuthFailureMarksNeedsReauth(t *testing.T) {
	f := startSync(t, syncOpts{})
	ctx := apptest.Context(t, 60*time.Second)
	conn := f.appcues(t, ctx, "Appcues")
	seg := f.segment(t, ctx, "S", 5, 5)
	f.sim.SetCredentials(destsim.Credentials{AppcuesAccounts: map[string]string{"demo": "rotated:keys"}})
	en, err := f.admin.EnableSync(ctx, &segmentsyncv1.EnableSyncRequest{SegmentId: seg, ConnectionId: conn, Schedule: segmentsyncv1.SyncSchedule_SYNC_SCHEDULE_ONE_TIME})
	if err != nil {
		t.Fatal(err)
	}
	r := f.waitRun(t, ctx, en.GetSync().GetSyncId(), 1, en.GetRun().GetRunId())
	if r.GetStatus() != segmentsyncv1.SyncRunStatus_SYNC_RUN_STATUS_FAILED || !strings.Contains(r.GetError(), "re-authorise") {
		t.Fatalf("run = %v", r)
	}
	c, _ := f.conn.GetConnection(ctx, &connectorv1.GetConnectionRequest{ConnectionId: conn})
	if c.GetConnection().GetStatus() != connectorv1.ConnectionStatus_CONNECTION_STATUS_NEEDS_REAUTH {
		t.Fatalf("connection status = %v", c.GetConnection().GetStatus())
	}
}

// A recurring AB Tasty sync re-sends its full state before the data lapses.
func TestRetentionRefresh(t *testing.T) {
	f := startSync(t, syncOpts{})
	ctx := apptest.Context(t, 60*time.Second)
	cr, err := f.conn.CreateConnection(ctx, &connectorv1.CreateConnectionRequest{Type: "abtasty", Name: "AB", Credentials: map[string]string{"account_identifier": "acc", "client_id": "seghub", "client_secret": "seghub-secret"}})
	if err != nil {
		t.Fatal(err)
	}
	seg := f.segment(t, ctx, "Visitors", 3, 0)
	var users []*segmentsyncv1.User
	for i := 0; i < 3; i++ {
		users = append(users, &segmentsyncv1.User{UserId: fmt.Sprint("u", i), Properties: map[string]*segmentsyncv1.PropertyValue{"ABTastyVisitorId": {Kind: &segmentsyncv1.PropertyValue_StringValue{StringValue: fmt.Sprint("v-", i)}}}})
	}
	_, _ = f.ss.UpsertUsers(ctx, &segmentsyncv1.UpsertUsersRequest{Users: users})
	en, err := f.admin.EnableSync(ctx, &segmentsyncv1.EnableSyncRequest{SegmentId: seg, ConnectionId: cr.GetConnection().GetConnectionId(), Schedule: segmentsyncv1.SyncSchedule_SYNC_SCHEDULE_RECURRING, Interval: durationpb.New(30 * 24 * time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	f.waitRun(t, ctx, en.GetSync().GetSyncId(), 1, en.GetRun().GetRunId())
	// 28 days on: within the retention margin (3 days) of the 30-day lapse,
	// although the 30-day interval is not over, a full re-send runs.
	f.clock.Add(28 * 24 * time.Hour)
	if n, err := f.svc.Engine().Tick(ctx); err != nil || n != 1 {
		t.Fatalf("tick near expiry queued %d (%v)", n, err)
	}
	r := f.waitRun(t, ctx, en.GetSync().GetSyncId(), 2)
	if r.GetTrigger() != segmentsyncv1.SyncRunTrigger_SYNC_RUN_TRIGGER_RETENTION_REFRESH || r.GetAdded() != 3 {
		t.Fatalf("refresh run = %v (a full re-send adds all 3 again)", r)
	}
}
