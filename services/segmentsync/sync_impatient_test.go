package segmentsync_test

import (
	"context"
	"fmt"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	segmentsyncv1 "github.com/seghub/seghub/gen/seghub/segmentsync/v1"
	"github.com/seghub/seghub/pkg/app/apptest"
	"github.com/seghub/seghub/services/destsim"
)

// Callers that give up on "Sync now" never leave a queued run without a job
// behind (which would answer every later SyncNow and never run).
func TestImpatientSyncNowNeverWedgesSync(t *testing.T) {
	sim := destsim.New(destsim.DemoCredentials())
	sim.SetFaults(destsim.Faults{LatencyMS: 300})
	srv := httptest.NewServer(sim)
	defer srv.Close()
	f := startSync(t, syncOpts{sim: sim, simURL: srv.URL, postgres: true, wallClock: true})
	ctx := apptest.Context(t, 120*time.Second)
	conn := f.appcues(t, ctx, "Appcues")
	seg := f.segment(t, ctx, "W", 3000, 3000)
	en, _ := f.admin.EnableSync(ctx, &segmentsyncv1.EnableSyncRequest{SegmentId: seg, ConnectionId: conn, Schedule: segmentsyncv1.SyncSchedule_SYNC_SCHEDULE_ONE_TIME})
	syncID := en.GetSync().GetSyncId()
	f.waitRun(t, ctx, syncID, 1, en.GetRun().GetRunId())
	var gone []string
	for i := range 2000 {
		gone = append(gone, fmt.Sprint("u", i))
	}
	_, _ = f.ss.RemoveMembers(ctx, &segmentsyncv1.RemoveMembersRequest{SegmentId: seg, UserIds: gone})
	// Eight impatient "Sync now" clicks at once (500 ms client deadline).
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			c, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
			defer cancel()
			r, err := f.admin.SyncNow(c, &segmentsyncv1.SyncNowRequest{SyncId: syncID})
			t.Logf("impatient SyncNow: %v %v", r.GetRun().GetRunId(), err)
		})
	}
	wg.Wait()
	time.Sleep(3 * time.Second) // every run that was really queued is done
	runs, _ := f.ss.ListSyncRuns(ctx, &segmentsyncv1.ListSyncRunsRequest{SyncId: syncID})
	for _, r := range runs.GetRuns() {
		t.Logf("run %s %v", r.GetRunId(), r.GetStatus())
	}
	// A later, patient "Sync now" must run.
	now, err := f.admin.SyncNow(ctx, &segmentsyncv1.SyncNowRequest{SyncId: syncID})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("patient SyncNow answered %v", now.GetRun())
	c, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	for {
		r, _ := f.ss.ListSyncRuns(c, &segmentsyncv1.ListSyncRunsRequest{SyncId: syncID})
		for _, x := range r.GetRuns() {
			if x.GetRunId() == now.GetRun().GetRunId() && x.GetFinishTime() != nil {
				return
			}
		}
		if c.Err() != nil {
			for _, x := range r.GetRuns() {
				t.Logf("run %s %v", x.GetRunId(), x.GetStatus())
			}
			t.Fatalf("run %s answered by SyncNow never finished: the sync is wedged", now.GetRun().GetRunId())
		}
		time.Sleep(50 * time.Millisecond)
	}
}
