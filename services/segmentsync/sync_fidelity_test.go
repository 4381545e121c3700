package segmentsync_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	segmentsyncv1 "github.com/seghub/seghub/gen/seghub/segmentsync/v1"
	"github.com/seghub/seghub/pkg/app/apptest"
)

// Turning a segment's sync off and on resumes the one sync of that segment
// and connection: the name frozen at its first run (no second property at
// Appcues) and what it delivered (nothing resent). Only start_over begins
// again.
func TestToggleOffAndOnResumesTheSync(t *testing.T) {
	for _, pg := range []bool{false, true} {
		t.Run(map[bool]string{false: "sqlite", true: "postgres"}[pg], func(t *testing.T) {
			f := startSync(t, syncOpts{postgres: pg})
			ctx := apptest.Context(t, 120*time.Second)
			conn := f.appcues(t, ctx, "Appcues")
			seg := f.segment(t, ctx, "Trial", 10, 10)
			enable := &segmentsyncv1.EnableSyncRequest{SegmentId: seg, ConnectionId: conn, Schedule: segmentsyncv1.SyncSchedule_SYNC_SCHEDULE_ONE_TIME}
			en, err := f.admin.EnableSync(ctx, enable)
			if err != nil {
				t.Fatal(err)
			}
			syncID := en.GetSync().GetSyncId()
			if r := f.waitRun(t, ctx, syncID, 1, en.GetRun().GetRunId()); r.GetAdded() != 10 {
				t.Fatalf("first run = %v", r)
			}
			renamed := "Renamed"
			if _, err := f.ss.UpdateSegment(ctx, &segmentsyncv1.UpdateSegmentRequest{SegmentId: seg, Name: &renamed}); err != nil {
				t.Fatal(err)
			}
			if _, err := f.admin.DisableSync(ctx, &segmentsyncv1.DisableSyncRequest{SyncId: syncID}); err != nil {
				t.Fatal(err)
			}
			again, err := f.admin.EnableSync(ctx, enable)
			if err != nil {
				t.Fatal(err)
			}
			if again.GetSync().GetSyncId() != syncID {
				t.Fatalf("re-enabling made sync %s, want %s resumed", again.GetSync().GetSyncId(), syncID)
			}
			if r := f.waitRun(t, ctx, syncID, 2, again.GetRun().GetRunId()); r.GetAdded() != 0 || r.GetRemoved() != 0 {
				t.Fatalf("resumed run resent: %v", r)
			}
			if got := f.appcuesMembers("[seghub] Renamed"); len(got) != 0 {
				t.Fatalf("a second property appeared at Appcues with %d members", len(got))
			}
			g, _ := f.ss.GetSync(ctx, &segmentsyncv1.GetSyncRequest{SyncId: syncID})
			if g.GetSync().GetFrozenDisplayName() != "Trial" || g.GetSync().GetDeliveredCount() != 10 {
				t.Fatalf("resumed sync = %v", g.GetSync())
			}
			// Enabling an enabled sync again is refused with what to do instead.
			_, err = f.admin.EnableSync(ctx, enable)
			if status.Code(err) != codes.AlreadyExists || !strings.Contains(err.Error(), syncID) {
				t.Fatalf("enabling an enabled sync: %v", err)
			}
			// start_over freezes the current name and sends everything again.
			enable.StartOver = true
			over, err := f.admin.EnableSync(ctx, enable)
			if err != nil || over.GetSync().GetSyncId() != syncID {
				t.Fatalf("start over = %v, %v", over, err)
			}
			if r := f.waitRun(t, ctx, syncID, 3, over.GetRun().GetRunId()); r.GetAdded() != 10 {
				t.Fatalf("start-over run = %v", r)
			}
			g, _ = f.ss.GetSync(ctx, &segmentsyncv1.GetSyncRequest{SyncId: syncID})
			if g.GetSync().GetFrozenDisplayName() != "Renamed" || len(f.appcuesMembers("[seghub] Renamed")) != 10 {
				t.Fatalf("after start over: sync %v", g.GetSync())
			}
			list, _ := f.ss.ListSyncs(ctx, &segmentsyncv1.ListSyncsRequest{SegmentId: seg})
			if len(list.GetSyncs()) != 1 {
				t.Fatalf("segment has %d syncs to one connection", len(list.GetSyncs()))
			}
		})
	}
}

// A segment made private after its sync was enabled stops leaving seghub:
// its runs end SEGMENT_NOT_PUBLIC, send nothing, and say why on the run and
// the sync; once it is public again the sync resumes.
func TestPrivateSegmentStopsSyncUntilPublic(t *testing.T) {
	f := startSync(t, syncOpts{})
	ctx := apptest.Context(t, 120*time.Second)
	conn := f.appcues(t, ctx, "Appcues")
	seg := f.segment(t, ctx, "Beta", 5, 5)
	en, err := f.admin.EnableSync(ctx, &segmentsyncv1.EnableSyncRequest{SegmentId: seg, ConnectionId: conn, Schedule: segmentsyncv1.SyncSchedule_SYNC_SCHEDULE_RECURRING})
	if err != nil {
		t.Fatal(err)
	}
	syncID := en.GetSync().GetSyncId()
	f.waitRun(t, ctx, syncID, 1, en.GetRun().GetRunId())
	if _, err := f.ss.UpdateSegment(ctx, &segmentsyncv1.UpdateSegmentRequest{SegmentId: seg, Visibility: segmentsyncv1.Visibility_VISIBILITY_PRIVATE}); err != nil {
		t.Fatal(err)
	}
	_, _ = f.ss.RemoveMembers(ctx, &segmentsyncv1.RemoveMembersRequest{SegmentId: seg, UserIds: []string{"u0"}})
	before := f.sim.Snapshot().Counters["requests"]
	// Both a scheduled run and a manual one stop.
	f.clock.Add(2 * time.Hour)
	if n, err := f.svc.Engine().Tick(ctx); err != nil || n != 1 {
		t.Fatalf("tick queued %d, %v", n, err)
	}
	r := f.waitRun(t, ctx, syncID, 2)
	if r.GetStatus() != segmentsyncv1.SyncRunStatus_SYNC_RUN_STATUS_SEGMENT_NOT_PUBLIC || !strings.Contains(r.GetError(), "no longer public") || r.GetRemoved() != 0 {
		t.Fatalf("scheduled run of a private segment = %v", r)
	}
	now, err := f.admin.SyncNow(ctx, &segmentsyncv1.SyncNowRequest{SyncId: syncID})
	if err != nil {
		t.Fatal(err)
	}
	if r := f.waitRun(t, ctx, syncID, 3, now.GetRun().GetRunId()); r.GetStatus() != segmentsyncv1.SyncRunStatus_SYNC_RUN_STATUS_SEGMENT_NOT_PUBLIC {
		t.Fatalf("manual run of a private segment = %v", r)
	}
	if after := f.sim.Snapshot().Counters["requests"]; after != before {
		t.Fatalf("runs of a private segment sent %d requests", after-before)
	}
	g, _ := f.ss.GetSync(ctx, &segmentsyncv1.GetSyncRequest{SyncId: syncID})
	if !g.GetSync().GetEnabled() || g.GetSync().GetLastStatus() != segmentsyncv1.SyncRunStatus_SYNC_RUN_STATUS_SEGMENT_NOT_PUBLIC || !strings.Contains(g.GetSync().GetLastError(), "no longer public") {
		t.Fatalf("sync of a private segment = %v", g.GetSync())
	}
	if got := f.appcuesMembers("[seghub] Beta"); len(got) != 5 {
		t.Fatalf("appcues holds %d, want the 5 delivered before", len(got))
	}
	// Public again: the next run delivers what changed meanwhile.
	if _, err := f.ss.UpdateSegment(ctx, &segmentsyncv1.UpdateSegmentRequest{SegmentId: seg, Visibility: segmentsyncv1.Visibility_VISIBILITY_PUBLIC}); err != nil {
		t.Fatal(err)
	}
	f.clock.Add(2 * time.Hour)
	if n, err := f.svc.Engine().Tick(ctx); err != nil || n != 1 {
		t.Fatalf("tick queued %d, %v", n, err)
	}
	r = f.waitRun(t, ctx, syncID, 4)
	if r.GetStatus() != segmentsyncv1.SyncRunStatus_SYNC_RUN_STATUS_SUCCEEDED || r.GetRemoved() != 1 {
		t.Fatalf("run once public again = %v", r)
	}
	if got := f.appcuesMembers("[seghub] Beta"); len(got) != 4 || got["ac-0"] {
		t.Fatalf("appcues holds %d after resuming", len(got))
	}
}

// Appcues allows ten recurring syncs at a time per environment: two Appcues
// connections share them, and the refusal says how many are in use.
func TestRecurringLimitSharedByConnectionsOfAType(t *testing.T) {
	f := startSync(t, syncOpts{})
	ctx := apptest.Context(t, 120*time.Second)
	a, b := f.appcues(t, ctx, "Appcues A"), f.appcues(t, ctx, "Appcues B")
	for i := 0; i < 10; i++ {
		seg := f.segment(t, ctx, fmt.Sprint("R", i), 1, 1)
		conn := a
		if i%2 == 1 {
			conn = b
		}
		if _, err := f.admin.EnableSync(ctx, &segmentsyncv1.EnableSyncRequest{SegmentId: seg, ConnectionId: conn, Schedule: segmentsyncv1.SyncSchedule_SYNC_SCHEDULE_RECURRING}); err != nil {
			t.Fatal(err)
		}
	}
	seg := f.segment(t, ctx, "R-extra", 1, 1)
	_, err := f.admin.EnableSync(ctx, &segmentsyncv1.EnableSyncRequest{SegmentId: seg, ConnectionId: b, Schedule: segmentsyncv1.SyncSchedule_SYNC_SCHEDULE_RECURRING})
	if status.Code(err) != codes.ResourceExhausted || !strings.Contains(err.Error(), "10 of 10 in use") || !strings.Contains(err.Error(), "per environment") {
		t.Fatalf("11th recurring Appcues sync on a second connection: %v", err)
	}
	// A one-time sync is not limited, and turning it recurring is.
	en, err := f.admin.EnableSync(ctx, &segmentsyncv1.EnableSyncRequest{SegmentId: seg, ConnectionId: b, Schedule: segmentsyncv1.SyncSchedule_SYNC_SCHEDULE_ONE_TIME})
	if err != nil {
		t.Fatal(err)
	}
	_, err = f.admin.UpdateSync(ctx, &segmentsyncv1.UpdateSyncRequest{SyncId: en.GetSync().GetSyncId(), Schedule: segmentsyncv1.SyncSchedule_SYNC_SCHEDULE_RECURRING})
	if status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("turning an 11th Appcues sync recurring: %v", err)
	}
}
