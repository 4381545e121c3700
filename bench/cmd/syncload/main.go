// Command syncload measures the sync engine end to end on the embedded
// default: a full sync of a 1 M-member segment to the destination simulator
// (Appcues bulk import), then a dry run and a 1 % churn re-sync. The
// destination's rate limit is lifted (-unlimited) to measure seghub rather
// than the limit.
package main

import (
	"context"
	"flag"
	"fmt"
	"net/http/httptest"
	"os"
	"runtime/pprof"
	"time"

	"github.com/seghub/seghub/bench/internal/harness"
	connectorv1 "github.com/seghub/seghub/gen/seghub/connector/v1"
	segmentsyncv1 "github.com/seghub/seghub/gen/seghub/segmentsync/v1"
	"github.com/seghub/seghub/pkg/app"
	"github.com/seghub/seghub/pkg/config"
	"github.com/seghub/seghub/pkg/destinations"
	"github.com/seghub/seghub/services/connector"
	"github.com/seghub/seghub/services/destsim"
	"github.com/seghub/seghub/services/segmentsync"
)

func main() {
	members := flag.Int("members", 1_000_000, "segment size")
	unlimited := flag.Bool("unlimited", true, "lift the destination rate limit")
	cpuprofile := flag.String("cpuprofile", "", "write a CPU profile of the full sync here")
	flag.Parse()
	if err := run(*members, *unlimited, *cpuprofile); err != nil {
		fmt.Fprintln(os.Stderr, "syncload:", err)
		os.Exit(1)
	}
}

func run(members int, unlimited bool, cpuprofile string) error {
	ctx := context.Background()
	sim := destsim.New(destsim.DemoCredentials())
	srv := httptest.NewServer(sim)
	defer srv.Close()
	opts := segmentsync.Options{PollInterval: 50 * time.Millisecond}
	if unlimited {
		opts.AdapterConfig = func(c *destinations.Config) { c.Limiter = nil }
	}
	proc, err := harness.Start(ctx, func(c *config.Config) { c.AppcuesURL = srv.URL },
		func(ctx context.Context, p *app.Platform) (app.Service, error) { return connector.New(ctx, p) },
		func(ctx context.Context, p *app.Platform) (app.Service, error) {
			return segmentsync.NewWithOptions(ctx, p, opts)
		})
	if err != nil {
		return err
	}
	defer proc.Stop()
	conn, err := proc.DialAdmin()
	if err != nil {
		return err
	}
	ss := segmentsyncv1.NewSegmentSyncServiceClient(conn)
	cn, err := connectorv1.NewConnectorServiceClient(conn).CreateConnection(ctx, &connectorv1.CreateConnectionRequest{Type: "appcues", Name: "sim", Credentials: map[string]string{"account_id": "demo", "api_key": "demo-key", "api_secret": "demo-secret"}})
	if err != nil {
		return err
	}
	seg, err := ss.CreateSegment(ctx, &segmentsyncv1.CreateSegmentRequest{Name: "bench"})
	if err != nil {
		return err
	}
	sid := seg.GetSegment().GetSegmentId()
	if _, err := harness.Replace(ctx, ss, sid, "user-", 0, members); err != nil {
		return err
	}
	wait := func(runID, syncID string) (*segmentsyncv1.SyncRun, error) {
		for {
			runs, err := ss.ListSyncRuns(ctx, &segmentsyncv1.ListSyncRunsRequest{SyncId: syncID})
			if err != nil {
				return nil, err
			}
			for _, r := range runs.GetRuns() {
				if r.GetRunId() == runID && r.GetFinishTime() != nil {
					return r, nil
				}
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	if cpuprofile != "" {
		f, err := os.Create(cpuprofile)
		if err != nil {
			return err
		}
		_ = pprof.StartCPUProfile(f)
	}
	t0 := time.Now()
	en, err := ss.EnableSync(ctx, &segmentsyncv1.EnableSyncRequest{SegmentId: sid, ConnectionId: cn.GetConnection().GetConnectionId(), IdentityProperty: "user_id", Schedule: segmentsyncv1.SyncSchedule_SYNC_SCHEDULE_ONE_TIME})
	if err != nil {
		return err
	}
	r, err := wait(en.GetRun().GetRunId(), en.GetSync().GetSyncId())
	if err != nil {
		return err
	}
	d := time.Since(t0)
	if cpuprofile != "" {
		pprof.StopCPUProfile()
	}
	held := len(sim.Snapshot().Appcues["demo"])
	fmt.Printf("full sync of %d members: %v (%.0f users/s), status %v, added %d, destination holds %d\n", members, d.Round(time.Millisecond), float64(r.GetAdded())/d.Seconds(), r.GetStatus(), r.GetAdded(), held)

	churn := members / 100
	if _, err := harness.Replace(ctx, ss, sid, "user-", churn/2, members+churn/2); err != nil {
		return err
	}
	// A dry run of the churn: the same diff, nothing sent.
	for i := 0; i < 3; i++ {
		t0 = time.Now()
		dr, err := ss.DryRun(ctx, &segmentsyncv1.DryRunRequest{SyncId: en.GetSync().GetSyncId(), SampleSize: 5})
		if err != nil {
			return err
		}
		fmt.Printf("dry run of the churn: %v, to add %d, to remove %d, unmatched %d\n", time.Since(t0).Round(time.Millisecond), dr.GetToAdd(), dr.GetToRemove(), dr.GetUnmatched())
	}
	before := sim.Snapshot().Counters["requests"]
	t0 = time.Now()
	now, err := ss.SyncNow(ctx, &segmentsyncv1.SyncNowRequest{SyncId: en.GetSync().GetSyncId()})
	if err != nil {
		return err
	}
	r, err = wait(now.GetRun().GetRunId(), en.GetSync().GetSyncId())
	if err != nil {
		return err
	}
	fmt.Printf("1%% churn re-sync (%d out, %d in): %v, added %d removed %d, %d requests\n", churn/2, churn/2, time.Since(t0).Round(time.Millisecond), r.GetAdded(), r.GetRemoved(), sim.Snapshot().Counters["requests"]-before)
	return nil
}
