package segmentsync_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
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
	// clock is shared with an earlier process (restart tests).
	clock *clock
	// tick runs River's periodic scheduler (on start, then every
	// syncengine.TickInterval) instead of leaving Tick to the test.
	tick bool
	// wallClock runs the engine on the real clock (run timestamps compared).
	wallClock bool
	// lease is SEGHUB_SYNC_RUN_LEASE (default 10 s).
	lease time.Duration
	// traced samples requests' root spans (span tests).
	traced bool
}

func startSync(t *testing.T, o syncOpts) *syncFixture {
	t.Helper()
	f := &syncFixture{sim: o.sim, clock: o.clock}
	if f.clock == nil {
		f.clock = &clock{t: time.Now()}
	}
	now := f.clock.Now
	if o.wallClock {
		now = time.Now
	}
	if f.sim == nil {
		f.sim = destsim.New(destsim.DemoCredentials())
		srv := httptest.NewServer(f.sim)
		t.Cleanup(srv.Close)
		o.simURL = srv.URL
	}
	f.e = apptest.New(t, apptest.Options{NeedBus: true, TraceRequests: o.traced, Postgres: o.postgres, DataDir: o.dataDir, DatabaseURL: o.dbURL, Configure: func(c *config.Config) {
		c.AppcuesURL, c.CommandBarURL, c.ABTastyURL, c.AnalyticsURL = o.simURL, o.simURL, o.simURL, o.simURL
		if o.lease != 0 {
			c.SyncRunLease = o.lease
		}
	}})
	cn, err := connector.New(context.Background(), f.e.P)
	if err != nil {
		t.Fatal(err)
	}
	f.svc, err = segmentsync.NewWithOptions(context.Background(), f.e.P, segmentsync.Options{
		AdapterConfig: func(c *destinations.Config) { c.MaxAttempts, c.MaxBackoff = 40, 10*time.Millisecond },
		Now:           now, NoTick: !o.tick, PollInterval: 20 * time.Millisecond, Rate: o.rate})
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
			case segmentsyncv1.SyncRunStatus_SYNC_RUN_STATUS_SUCCEEDED, segmentsyncv1.SyncRunStatus_SYNC_RUN_STATUS_PARTIAL, segmentsyncv1.SyncRunStatus_SYNC_RUN_STATUS_FAILED,
				segmentsyncv1.SyncRunStatus_SYNC_RUN_STATUS_SEGMENT_NOT_PUBLIC:
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
	if status.Code(err) != codes.ResourceExhausted || !strings.Contains(err.Error(), "at most 10") || !strings.Contains(err.Error(), "10 of 10 in use") {
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
	conn := f.appcues(t, ctx, "Appcues") // connected before the faults: its check is one call
	f.sim.SetFaults(destsim.Faults{Rate429: 0.15, Rate5xx: 0.15})
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

// A recurring schedule survives a restart, and the slots missed while the
// process was down run once when it starts again, not once per slot.
func TestRecurringMissedWhileDownRunsOnceOnStart(t *testing.T) {
	for _, pg := range []bool{false, true} {
		t.Run(map[bool]string{false: "sqlite", true: "postgres"}[pg], func(t *testing.T) {
			sim := destsim.New(destsim.DemoCredentials())
			srv := httptest.NewServer(sim)
			defer srv.Close()
			dir := t.TempDir()
			f := startSync(t, syncOpts{postgres: pg, dataDir: dir, sim: sim, simURL: srv.URL})
			ctx := apptest.Context(t, 120*time.Second)
			conn := f.appcues(t, ctx, "Appcues")
			seg := f.segment(t, ctx, "Hourly", 5, 5)
			en, err := f.admin.EnableSync(ctx, &segmentsyncv1.EnableSyncRequest{SegmentId: seg, ConnectionId: conn, Schedule: segmentsyncv1.SyncSchedule_SYNC_SCHEDULE_RECURRING})
			if err != nil {
				t.Fatal(err)
			}
			syncID := en.GetSync().GetSyncId()
			if r := f.waitRun(t, ctx, syncID, 1, en.GetRun().GetRunId()); r.GetAdded() != 5 {
				t.Fatalf("first run = %v", r)
			}
			// A member joins before the stop, so the missed run has work to do.
			_, _ = f.ss.UpsertUsers(ctx, &segmentsyncv1.UpsertUsersRequest{Users: []*segmentsyncv1.User{{UserId: "late", Properties: map[string]*segmentsyncv1.PropertyValue{"appcuesUserID": {Kind: &segmentsyncv1.PropertyValue_StringValue{StringValue: "ac-late"}}}}}})
			if _, err := f.ss.AddMembers(ctx, &segmentsyncv1.AddMembersRequest{SegmentId: seg, UserIds: []string{"late"}}); err != nil {
				t.Fatal(err)
			}
			keys, url := f.e.A, f.e.Config.DatabaseURL
			f.e.Stop()

			// Down for five hourly slots and a bit; the new process's own
			// scheduler (River's periodic tick, run on start) finds it due.
			f.clock.Add(5*time.Hour + 10*time.Minute)
			f2 := startSync(t, syncOpts{dataDir: dir, dbURL: url, sim: sim, simURL: srv.URL, clock: f.clock, tick: true})
			f2.ss = segmentsyncv1.NewSegmentSyncServiceClient(f2.e.Dial(keys.Member))
			r := f2.waitRun(t, ctx, syncID, 2)
			if r.GetTrigger() != segmentsyncv1.SyncRunTrigger_SYNC_RUN_TRIGGER_SCHEDULE || r.GetStatus() != segmentsyncv1.SyncRunStatus_SYNC_RUN_STATUS_SUCCEEDED || r.GetAdded() != 1 {
				t.Fatalf("run after restart = %v", r)
			}
			if got := f2.appcuesMembers("[seghub] Hourly"); len(got) != 6 || !got["ac-late"] {
				t.Fatalf("appcues holds %d (ac-late %v), want 6", len(got), got["ac-late"])
			}
			// The next slot is one interval from now, so nothing else is due.
			g, err := f2.ss.GetSync(ctx, &segmentsyncv1.GetSyncRequest{SyncId: syncID})
			if err != nil {
				t.Fatal(err)
			}
			now := f.clock.Now()
			if next := g.GetSync().GetNextRunTime().AsTime(); !g.GetSync().GetEnabled() || next.Before(now.Add(time.Hour)) || next.After(now.Add(time.Hour+2*time.Minute)) {
				t.Fatalf("after restart: enabled %v, next run %v, now %v", g.GetSync().GetEnabled(), next, now)
			}
			if n, err := f2.svc.Engine().Tick(ctx); err != nil || n != 0 {
				t.Fatalf("a tick after the catch-up run queued %d (%v)", n, err)
			}
			runs, err := f2.ss.ListSyncRuns(ctx, &segmentsyncv1.ListSyncRunsRequest{SyncId: syncID})
			if err != nil || len(runs.GetRuns()) != 2 {
				t.Fatalf("runs after restart = %v, %v; want the first run and one catch-up run", runs, err)
			}
		})
	}
}

// At most one run of a sync at a time: "Sync now" while a run is under way
// answers with that run instead of starting another, and concurrent requests
// on an idle sync run one after the other.
func TestAtMostOneRunPerSync(t *testing.T) {
	for _, pg := range []bool{false, true} {
		t.Run(map[bool]string{false: "sqlite", true: "postgres"}[pg], func(t *testing.T) {
			sim := destsim.New(destsim.DemoCredentials())
			sim.SetFaults(destsim.Faults{LatencyMS: 400})
			// Count requests in flight at the destination: two overlapping runs of
			// one sync would put two there at once.
			var inFlight, peak atomic.Int64
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if strings.HasPrefix(r.URL.Path, "/v2/accounts/") {
					n := inFlight.Add(1)
					defer inFlight.Add(-1)
					for p := peak.Load(); n > p && !peak.CompareAndSwap(p, n); p = peak.Load() {
					}
				}
				sim.ServeHTTP(w, r)
			}))
			defer srv.Close()
			f := startSync(t, syncOpts{postgres: pg, sim: sim, simURL: srv.URL, wallClock: true})
			ctx := apptest.Context(t, 120*time.Second)
			conn := f.appcues(t, ctx, "Appcues")
			const prop = "[seghub] Slow"
			seg := f.segment(t, ctx, "Slow", 8000, 8000) // 8 batches of 1000, each at least 150 ms
			en, err := f.admin.EnableSync(ctx, &segmentsyncv1.EnableSyncRequest{SegmentId: seg, ConnectionId: conn, Schedule: segmentsyncv1.SyncSchedule_SYNC_SCHEDULE_ONE_TIME})
			if err != nil {
				t.Fatal(err)
			}
			syncID, first := en.GetSync().GetSyncId(), en.GetRun().GetRunId()
			for deadline := time.Now().Add(30 * time.Second); len(f.appcuesMembers(prop)) == 0; time.Sleep(5 * time.Millisecond) {
				if time.Now().After(deadline) {
					t.Fatal("the first run never delivered a batch")
				}
			}

			syncNow := func(n int) []*segmentsyncv1.SyncNowResponse {
				out := make([]*segmentsyncv1.SyncNowResponse, n)
				errs := make([]error, n)
				var wg sync.WaitGroup
				for i := range n {
					wg.Go(func() { out[i], errs[i] = f.admin.SyncNow(ctx, &segmentsyncv1.SyncNowRequest{SyncId: syncID}) })
				}
				wg.Wait()
				for _, err := range errs {
					if err != nil {
						t.Fatal(err)
					}
				}
				return out
			}
			for _, a := range syncNow(5) {
				if a.GetRun().GetRunId() != first {
					t.Fatalf("SyncNow during run %s answered %v; want the run in progress", first, a.GetRun())
				}
			}
			if held := len(f.appcuesMembers(prop)); held == 8000 {
				t.Fatal("the first run finished before SyncNow was called; the test proves nothing")
			}
			if r := f.waitRun(t, ctx, syncID, 1, first); r.GetStatus() != segmentsyncv1.SyncRunStatus_SYNC_RUN_STATUS_SUCCEEDED || r.GetAdded() != 8000 {
				t.Fatalf("first run = %v", r)
			}
			runs, _ := f.ss.ListSyncRuns(ctx, &segmentsyncv1.ListSyncRunsRequest{SyncId: syncID})
			if len(runs.GetRuns()) != 1 {
				t.Fatalf("SyncNow during a run added runs: %v", runs.GetRuns())
			}

			// Churn, then eight requests at once on the idle sync: those that pass
			// the pending-run check together each queue a run, and the runs take
			// turns.
			var gone []string
			for i := range 3000 {
				gone = append(gone, fmt.Sprint("u", i))
			}
			if _, err := f.ss.RemoveMembers(ctx, &segmentsyncv1.RemoveMembersRequest{SegmentId: seg, UserIds: gone}); err != nil {
				t.Fatal(err)
			}
			ids := map[string]bool{}
			for _, a := range syncNow(8) {
				ids[a.GetRun().GetRunId()] = true
			}
			// Wait until every run is over (succeeded, or canceled by a caller
			// that found another run's job in the way).
			for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(20 * time.Millisecond) {
				runs, _ = f.ss.ListSyncRuns(ctx, &segmentsyncv1.ListSyncRunsRequest{SyncId: syncID})
				over := 0
				for _, r := range runs.GetRuns() {
					if r.GetFinishTime() != nil {
						over++
					}
				}
				if over == len(runs.GetRuns()) {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("runs not over: %v", runs.GetRuns())
				}
			}
			for _, r := range runs.GetRuns() {
				delete(ids, r.GetRunId())
			}
			if len(ids) != 0 {
				t.Fatalf("SyncNow answered runs %v that ListSyncRuns does not list", ids)
			}
			var ran []*segmentsyncv1.SyncRun
			var removed uint64
			for _, r := range runs.GetRuns() {
				switch r.GetStatus() {
				case segmentsyncv1.SyncRunStatus_SYNC_RUN_STATUS_SUCCEEDED:
					ran = append(ran, r)
					removed += r.GetRemoved()
				case segmentsyncv1.SyncRunStatus_SYNC_RUN_STATUS_CANCELED:
					if !strings.Contains(r.GetError(), "queued or running") {
						t.Fatalf("canceled run = %v", r)
					}
				default:
					t.Fatalf("run = %v", r)
				}
			}
			for i, a := range ran {
				for _, b := range ran[i+1:] {
					if a.GetStartTime().AsTime().Before(b.GetFinishTime().AsTime()) && b.GetStartTime().AsTime().Before(a.GetFinishTime().AsTime()) {
						t.Fatalf("runs overlap:\n%v\n%v", a, b)
					}
				}
			}
			if removed != 3000 || len(ran) < 2 {
				t.Fatalf("after the concurrent requests %d runs succeeded, removing %d; want 3000 removed", len(ran), removed)
			}
			if got := f.appcuesMembers(prop); len(got) != 5000 || got["ac-0"] || !got["ac-3000"] {
				t.Fatalf("appcues holds %d, want 5000", len(got))
			}
			if p := peak.Load(); p != 1 {
				t.Fatalf("%d requests of one sync were in flight at once", p)
			}
		})
	}
}

// ListSyncs is scoped to the caller's environment; a new identity property
// re-keys the destination on the next run; disabling without
// clear_destination stops the schedule and leaves the destination as it is.
func TestListUpdateIdentityAndDisable(t *testing.T) {
	f := startSync(t, syncOpts{})
	ctx := apptest.Context(t, 60*time.Second)
	conn := f.appcues(t, ctx, "Appcues")
	keyed := f.segment(t, ctx, "Keyed", 6, 6)
	hourly := f.segment(t, ctx, "Hourly", 4, 4)
	// Every keyed member also carries an email, the identity switched to below.
	var users []*segmentsyncv1.User
	for i := range 6 {
		users = append(users, &segmentsyncv1.User{UserId: fmt.Sprint("u", i), Properties: map[string]*segmentsyncv1.PropertyValue{"email": {Kind: &segmentsyncv1.PropertyValue_StringValue{StringValue: fmt.Sprintf("u%d@example.com", i)}}}})
	}
	if _, err := f.ss.UpsertUsers(ctx, &segmentsyncv1.UpsertUsersRequest{Users: users}); err != nil {
		t.Fatal(err)
	}
	enK, err := f.admin.EnableSync(ctx, &segmentsyncv1.EnableSyncRequest{SegmentId: keyed, ConnectionId: conn, Schedule: segmentsyncv1.SyncSchedule_SYNC_SCHEDULE_ONE_TIME, Mode: segmentsyncv1.SyncMode_SYNC_MODE_MIRROR})
	if err != nil {
		t.Fatal(err)
	}
	enH, err := f.admin.EnableSync(ctx, &segmentsyncv1.EnableSyncRequest{SegmentId: hourly, ConnectionId: conn, Schedule: segmentsyncv1.SyncSchedule_SYNC_SCHEDULE_RECURRING})
	if err != nil {
		t.Fatal(err)
	}
	keyedID, hourlyID := enK.GetSync().GetSyncId(), enH.GetSync().GetSyncId()
	f.waitRun(t, ctx, keyedID, 1, enK.GetRun().GetRunId())
	f.waitRun(t, ctx, hourlyID, 1, enH.GetRun().GetRunId())

	// Environment B has a sync of its own.
	ssB := segmentsyncv1.NewSegmentSyncServiceClient(f.e.Dial(f.e.B.Admin))
	connB, err := connectorv1.NewConnectorServiceClient(f.e.Dial(f.e.B.Admin)).CreateConnection(ctx, &connectorv1.CreateConnectionRequest{Type: "appcues", Name: "Appcues B", Credentials: map[string]string{"account_id": "demo", "api_key": "demo-key", "api_secret": "demo-secret"}})
	if err != nil {
		t.Fatal(err)
	}
	segB, err := ssB.CreateSegment(ctx, &segmentsyncv1.CreateSegmentRequest{Name: "B only"})
	if err != nil {
		t.Fatal(err)
	}
	_, _ = ssB.UpsertUsers(ctx, &segmentsyncv1.UpsertUsersRequest{Users: []*segmentsyncv1.User{{UserId: "b0", Properties: map[string]*segmentsyncv1.PropertyValue{"appcuesUserID": {Kind: &segmentsyncv1.PropertyValue_StringValue{StringValue: "ac-b0"}}}}}})
	_, _ = ssB.AddMembers(ctx, &segmentsyncv1.AddMembersRequest{SegmentId: segB.GetSegment().GetSegmentId(), UserIds: []string{"b0"}})
	enB, err := ssB.EnableSync(ctx, &segmentsyncv1.EnableSyncRequest{SegmentId: segB.GetSegment().GetSegmentId(), ConnectionId: connB.GetConnection().GetConnectionId(), Schedule: segmentsyncv1.SyncSchedule_SYNC_SCHEDULE_ONE_TIME})
	if err != nil {
		t.Fatal(err)
	}
	syncIDs := func(c segmentsyncv1.SegmentSyncServiceClient, req *segmentsyncv1.ListSyncsRequest) []string {
		t.Helper()
		l, err := c.ListSyncs(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, s := range l.GetSyncs() {
			out = append(out, s.GetSyncId())
		}
		return out
	}
	if got := syncIDs(f.ss, &segmentsyncv1.ListSyncsRequest{}); len(got) != 2 || !slices.Contains(got, keyedID) || !slices.Contains(got, hourlyID) {
		t.Fatalf("ListSyncs in A = %v, want %s and %s", got, keyedID, hourlyID)
	}
	if got := syncIDs(f.ss, &segmentsyncv1.ListSyncsRequest{SegmentId: hourly}); len(got) != 1 || got[0] != hourlyID {
		t.Fatalf("ListSyncs of segment %s = %v", hourly, got)
	}
	if got := syncIDs(ssB, &segmentsyncv1.ListSyncsRequest{}); len(got) != 1 || got[0] != enB.GetSync().GetSyncId() {
		t.Fatalf("ListSyncs in B = %v, want only %s", got, enB.GetSync().GetSyncId())
	}
	if _, err := f.ss.GetSync(ctx, &segmentsyncv1.GetSyncRequest{SyncId: enB.GetSync().GetSyncId()}); status.Code(err) != codes.NotFound {
		t.Fatalf("A reading B's sync: %v", err)
	}
	if _, err := ssB.DisableSync(ctx, &segmentsyncv1.DisableSyncRequest{SyncId: hourlyID}); status.Code(err) != codes.NotFound {
		t.Fatalf("B disabling A's sync: %v", err)
	}

	// A new identity property: the old ids leave and the new ones arrive.
	const keyedProp = "[seghub] Keyed"
	if got := f.appcuesMembers(keyedProp); len(got) != 6 || !got["ac-0"] {
		t.Fatalf("before re-keying appcues holds %v", got)
	}
	email := "email"
	u, err := f.admin.UpdateSync(ctx, &segmentsyncv1.UpdateSyncRequest{SyncId: keyedID, IdentityProperty: &email})
	if err != nil || u.GetSync().GetIdentityProperty() != "email" {
		t.Fatalf("update = %v, %v", u, err)
	}
	now, err := f.admin.SyncNow(ctx, &segmentsyncv1.SyncNowRequest{SyncId: keyedID})
	if err != nil {
		t.Fatal(err)
	}
	if r := f.waitRun(t, ctx, keyedID, 2, now.GetRun().GetRunId()); r.GetAdded() != 6 || r.GetRemoved() != 6 || r.GetUnmatched() != 0 {
		t.Fatalf("re-keying run = %v", r)
	}
	got := f.appcuesMembers(keyedProp)
	for i := range 6 {
		if got[fmt.Sprintf("ac-%d", i)] || !got[fmt.Sprintf("u%d@example.com", i)] {
			t.Fatalf("after re-keying appcues holds %v", got)
		}
	}
	if len(got) != 6 {
		t.Fatalf("after re-keying appcues holds %v", got)
	}

	// Disabling (clear_destination false) stops the schedule, keeps the destination.
	const hourlyProp = "[seghub] Hourly"
	d, err := f.admin.DisableSync(ctx, &segmentsyncv1.DisableSyncRequest{SyncId: hourlyID})
	if err != nil || d.GetSync().GetEnabled() || d.GetSync().GetNextRunTime() != nil || d.GetRun() != nil {
		t.Fatalf("disable = %v, %v", d, err)
	}
	f.clock.Add(5 * time.Hour)
	if n, err := f.svc.Engine().Tick(ctx); err != nil || n != 0 {
		t.Fatalf("tick five hours after disabling queued %d (%v)", n, err)
	}
	if _, err := f.admin.SyncNow(ctx, &segmentsyncv1.SyncNowRequest{SyncId: hourlyID}); status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("SyncNow on a disabled sync: %v", err)
	}
	runs, _ := f.ss.ListSyncRuns(ctx, &segmentsyncv1.ListSyncRunsRequest{SyncId: hourlyID})
	if len(runs.GetRuns()) != 1 {
		t.Fatalf("a disabled sync ran again: %v", runs.GetRuns())
	}
	if got := f.appcuesMembers(hourlyProp); len(got) != 4 || !got["ac-0"] || !got["ac-3"] {
		t.Fatalf("after disabling appcues holds %v, want the 4 members delivered", got)
	}
}
