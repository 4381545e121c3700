// Command syncload measures the sync engine end to end on the embedded
// default (or PostgreSQL with -postgres): a full sync of a 1 M-member
// segment to the destination simulator (Appcues bulk import), then a dry run
// and a 1 % churn re-sync. The destination's rate limit is lifted
// (-unlimited) to measure seghub rather than the limit. The simulator runs in
// a process of its own (this binary with -serve-sim) unless -sim-process=false.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"runtime/pprof"
	"strings"
	"syscall"
	"time"

	"github.com/seghub/seghub/bench/internal/harness"
	connectorv1 "github.com/seghub/seghub/gen/seghub/connector/v1"
	segmentsyncv1 "github.com/seghub/seghub/gen/seghub/segmentsync/v1"
	"github.com/seghub/seghub/pkg/app"
	"github.com/seghub/seghub/pkg/config"
	"github.com/seghub/seghub/pkg/destinations"
	"github.com/seghub/seghub/pkg/store"
	"github.com/seghub/seghub/services/connector"
	"github.com/seghub/seghub/services/destsim"
	"github.com/seghub/seghub/services/segmentsync"
)

func main() {
	members := flag.Int("members", 1_000_000, "segment size")
	unlimited := flag.Bool("unlimited", true, "lift the destination rate limit")
	cpuprofile := flag.String("cpuprofile", "", "write a CPU profile of the full sync here")
	simProcess := flag.Bool("sim-process", true, "run the simulator in a process of its own")
	serveSim := flag.Bool("serve-sim", false, "serve the simulator on a free loopback port, print its URL, and wait (used by -sim-process)")
	postgres := flag.String("postgres", "", "PostgreSQL server URL: the run uses a fresh database on it, dropped at the end (default: embedded SQLite)")
	flag.Parse()
	if *serveSim {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			fmt.Fprintln(os.Stderr, "syncload:", err)
			os.Exit(1)
		}
		fmt.Println("http://" + l.Addr().String())
		_ = http.Serve(l, destsim.New(destsim.DemoCredentials()))
		return
	}
	if err := run(*members, *unlimited, *cpuprofile, *simProcess, *postgres); err != nil {
		fmt.Fprintln(os.Stderr, "syncload:", err)
		os.Exit(1)
	}
}

// simulator is the destination simulator, in this process or another.
type simulator struct {
	url   string
	local *destsim.Sim
	stop  func()
}

func startSim(separate bool) (*simulator, error) {
	if !separate {
		sim := destsim.New(destsim.DemoCredentials())
		srv := httptest.NewServer(sim)
		return &simulator{url: srv.URL, local: sim, stop: srv.Close}, nil
	}
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(self, "-serve-sim")
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	url, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		_ = cmd.Process.Kill()
		return nil, fmt.Errorf("the simulator process printed no URL: %w", err)
	}
	return &simulator{url: strings.TrimSpace(url), stop: func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }}, nil
}

// state returns the simulator's state.
func (s *simulator) state() (destsim.State, error) {
	if s.local != nil {
		return s.local.Snapshot(), nil
	}
	resp, err := http.Get(s.url + "/_sim/state")
	if err != nil {
		return destsim.State{}, err
	}
	defer resp.Body.Close()
	var st destsim.State
	return st, json.NewDecoder(resp.Body).Decode(&st)
}

// freshDatabase creates a database on the PostgreSQL server at url and
// returns its URL and a function dropping it.
func freshDatabase(ctx context.Context, url string) (string, func(), error) {
	db, err := store.Open(ctx, url)
	if err != nil {
		return "", nil, err
	}
	name := fmt.Sprintf("syncload_%d", time.Now().UnixNano())
	if _, err := db.SQL().ExecContext(ctx, `CREATE DATABASE `+name); err != nil {
		db.Close()
		return "", nil, err
	}
	i := strings.LastIndex(url, "/")
	q := ""
	if j := strings.Index(url[i:], "?"); j >= 0 {
		q = url[i+j:]
	}
	return url[:i+1] + name + q, func() {
		_, _ = db.SQL().ExecContext(context.Background(), `DROP DATABASE `+name+` WITH (FORCE)`)
		db.Close()
	}, nil
}

func run(members int, unlimited bool, cpuprofile string, separateSim bool, postgres string) error {
	ctx := context.Background()
	sim, err := startSim(separateSim)
	if err != nil {
		return err
	}
	defer sim.stop()
	dbURL := ""
	if postgres != "" {
		u, drop, err := freshDatabase(ctx, postgres)
		if err != nil {
			return err
		}
		defer drop()
		dbURL = u
	}
	opts := segmentsync.Options{PollInterval: 50 * time.Millisecond}
	if unlimited {
		opts.AdapterConfig = func(c *destinations.Config) { c.Limiter = nil }
	}
	proc, err := harness.Start(ctx, func(c *config.Config) { c.AppcuesURL, c.DatabaseURL = sim.url, dbURL },
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
	t0, cpu0 := time.Now(), cpuTime()
	en, err := ss.EnableSync(ctx, &segmentsyncv1.EnableSyncRequest{SegmentId: sid, ConnectionId: cn.GetConnection().GetConnectionId(), IdentityProperty: "user_id", Schedule: segmentsyncv1.SyncSchedule_SYNC_SCHEDULE_ONE_TIME})
	if err != nil {
		return err
	}
	r, err := wait(en.GetRun().GetRunId(), en.GetSync().GetSyncId())
	if err != nil {
		return err
	}
	d, cpu := time.Since(t0), cpuTime()-cpu0
	if cpuprofile != "" {
		pprof.StopCPUProfile()
	}
	st, err := sim.state()
	if err != nil {
		return err
	}
	held := len(st.Appcues["demo"])
	fmt.Printf("full sync of %d members: %v (%.0f users/s), seghub CPU %v, status %v, added %d, destination holds %d\n", members, d.Round(time.Millisecond), float64(r.GetAdded())/d.Seconds(), cpu.Round(time.Millisecond), r.GetStatus(), r.GetAdded(), held)

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
	if st, err = sim.state(); err != nil {
		return err
	}
	before := st.Counters["requests"]
	t0, cpu0 = time.Now(), cpuTime()
	now, err := ss.SyncNow(ctx, &segmentsyncv1.SyncNowRequest{SyncId: en.GetSync().GetSyncId()})
	if err != nil {
		return err
	}
	r, err = wait(now.GetRun().GetRunId(), en.GetSync().GetSyncId())
	if err != nil {
		return err
	}
	took, cpu := time.Since(t0), cpuTime()-cpu0
	if st, err = sim.state(); err != nil {
		return err
	}
	fmt.Printf("1%% churn re-sync (%d out, %d in): %v, seghub CPU %v, added %d removed %d, %d requests, destination holds %d\n", churn/2, churn/2, took.Round(time.Millisecond), cpu.Round(time.Millisecond), r.GetAdded(), r.GetRemoved(), st.Counters["requests"]-before, len(st.Appcues["demo"]))
	return nil
}

// cpuTime is the CPU this process used so far (user and system): seghub's
// share of a run, the simulator excluded when it runs in its own process;
// unlike wall time it does not grow with other processes' load.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
