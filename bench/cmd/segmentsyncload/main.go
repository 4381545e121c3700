// Command segmentsyncload measures segmentsync's data plane in-process on the
// embedded default (SQLite): ReplaceMembers of 1 M ids, a 1 % churn, the
// stored size of 10 segments × 1 M members, and WatchMembership snapshots of
// a 1 M-member segment and of the environment's users (filled up to
// -snapshot-users) to a client in a separate process (this binary, re-run
// with -watch).
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"runtime/pprof"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/seghub/seghub/bench/internal/harness"
	segmentsyncv1 "github.com/seghub/seghub/gen/seghub/segmentsync/v1"
	"github.com/seghub/seghub/pkg/app"
	"github.com/seghub/seghub/services/segmentsync"
)

func main() {
	members := flag.Int("members", 1_000_000, "members per segment")
	segments := flag.Int("segments", 10, "segments for the size measurement")
	cpuProfile := flag.String("cpuprofile", "", "write a CPU profile of the first ReplaceMembers (1 M new ids) to this file")
	snapshotUsers := flag.Int("snapshot-users", 2_000_000, "users in the environment for the WatchMembership snapshots (topped up by one more segment)")
	watchProfile := flag.String("watch-cpuprofile", "", "write a CPU profile of the server during the packed users snapshot to this file")
	watch := flag.String("watch", "", "internal: run as the watching client of the server at this address (keys from the environment) and print one line")
	mode := flag.String("watch-mode", "", "internal: with -watch, what to watch: members, batches, packed, client")
	flag.Parse()
	if *watch != "" {
		if err := watchClient(*watch, *mode); err != nil {
			fmt.Fprintln(os.Stderr, "segmentsyncload -watch:", err)
			os.Exit(1)
		}
		return
	}
	profile, fill, watchProf = *cpuProfile, *snapshotUsers, *watchProfile
	if err := run(*members, *segments); err != nil {
		fmt.Fprintln(os.Stderr, "segmentsyncload:", err)
		os.Exit(1)
	}
}

// profile names the CPU profile file of the first upload ("" = none),
// watchProf that of the server during the packed snapshot; fill is the
// users the snapshots carry.
var (
	profile, watchProf string
	fill               int
)

func maxRSSMB() float64 {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return float64(ru.Maxrss) / 1024
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func run(members, segments int) error {
	ctx := context.Background()
	proc, err := harness.Start(ctx, nil, func(ctx context.Context, p *app.Platform) (app.Service, error) { return segmentsync.New(ctx, p) })
	if err != nil {
		return err
	}
	defer proc.Stop()
	conn, err := proc.Dial()
	if err != nil {
		return err
	}
	c := segmentsyncv1.NewSegmentSyncServiceClient(conn)
	rssBefore := maxRSSMB()
	seg, err := c.CreateSegment(ctx, &segmentsyncv1.CreateSegmentRequest{Name: "bench-0"})
	if err != nil {
		return err
	}
	sid := seg.GetSegment().GetSegmentId()
	if profile != "" {
		f, err := os.Create(profile)
		if err != nil {
			return err
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
	}
	t0 := time.Now()
	res, err := harness.Replace(ctx, c, sid, "user:", 0, members)
	if err != nil {
		return err
	}
	if profile != "" {
		pprof.StopCPUProfile()
	}
	fmt.Printf("ReplaceMembers %d new ids (users created): %v, added %d, peak RSS %.0f MB (before %.0f MB; client and server in one process)\n", members, time.Since(t0).Round(time.Millisecond), res.GetAdded(), maxRSSMB(), rssBefore)

	churn := members / 100
	t0 = time.Now()
	res, err = harness.Replace(ctx, c, sid, "user:", churn/2, members+churn/2)
	if err != nil {
		return err
	}
	fmt.Printf("ReplaceMembers with 1%% churn (%d out, %d in): %v, added %d removed %d\n", churn/2, churn/2, time.Since(t0).Round(time.Millisecond), res.GetAdded(), res.GetRemoved())

	t0 = time.Now()
	ar, err := c.AddMembers(ctx, &segmentsyncv1.AddMembersRequest{SegmentId: sid, UserIds: []string{"user:" + strconv.Itoa(members+churn)}})
	if err != nil {
		return err
	}
	fmt.Printf("AddMembers of 1 id to a %d-member segment: %v (version %d)\n", ar.GetMemberCount()-1, time.Since(t0).Round(time.Microsecond), ar.GetVersion())

	for i := 1; i < segments; i++ {
		s, err := c.CreateSegment(ctx, &segmentsyncv1.CreateSegmentRequest{Name: "bench-" + strconv.Itoa(i)})
		if err != nil {
			return err
		}
		// Overlapping ranges of the same user base, shifted per segment.
		off := i * members / 20
		if _, err := harness.Replace(ctx, c, s.GetSegment().GetSegmentId(), "user:", off, off+members); err != nil {
			return err
		}
	}
	var bytes, count int64
	if err := proc.P.DB.QueryRowContext(ctx, `SELECT COALESCE(SUM(LENGTH(members)), 0), COUNT(*) FROM ss_segments`).Scan(&bytes, &count); err != nil {
		return err
	}
	fmt.Printf("stored membership of %d segments × %d members: %.2f MB of bitmaps\n", count, members, float64(bytes)/(1<<20))

	// Top the environment up to fill users for the snapshots.
	var users int64
	if err := proc.P.DB.QueryRowContext(ctx, `SELECT COUNT(*) FROM ss_users`).Scan(&users); err != nil {
		return err
	}
	if int(users) < fill {
		s, err := c.CreateSegment(ctx, &segmentsyncv1.CreateSegmentRequest{Name: "bench-fill"})
		if err != nil {
			return err
		}
		t0 = time.Now()
		res, err := harness.Replace(ctx, c, s.GetSegment().GetSegmentId(), "user:", 0, fill)
		if err != nil {
			return err
		}
		fmt.Printf("ReplaceMembers of %d ids, %d of them new (fills the environment to %d users): %v\n", fill, int(res.GetAdded())-int(users), fill, time.Since(t0).Round(time.Millisecond))
	}
	if err := proc.P.DB.QueryRowContext(ctx, `SELECT COUNT(*) FROM ss_users`).Scan(&users); err != nil {
		return err
	}
	// WatchMembership snapshots, to a client in its own process: the first
	// segment only (membership), then every segment with the environment's
	// users as UserBatch and as packed UserChunk, then the targeting
	// in-process client (the follower applying the packed feed) until loaded.
	self, err := os.Executable()
	if err != nil {
		return err
	}
	for _, mode := range []string{"members", "batches", "packed", "client"} {
		var prof *os.File
		if mode == "packed" && watchProf != "" {
			if prof, err = os.Create(watchProf); err != nil {
				return err
			}
			if err := pprof.StartCPUProfile(prof); err != nil {
				return err
			}
		}
		cpu0 := cpuTime()
		cmd := exec.CommandContext(ctx, self, "-watch", proc.Addr, "-watch-mode", mode, "-watch-segment", sid)
		cmd.Env = append(os.Environ(), "SEGHUB_BENCH_INTERNAL_KEY="+proc.P.InternalKey, "SEGHUB_BENCH_ADMIN_KEY="+proc.AdminKey)
		cmd.Stderr = os.Stderr
		out, err := cmd.Output()
		if prof != nil {
			pprof.StopCPUProfile()
			prof.Close()
		}
		if err != nil {
			return fmt.Errorf("watch client %s: %w", mode, err)
		}
		ru := cmd.ProcessState.SysUsage().(*syscall.Rusage)
		clientCPU := time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
		fmt.Printf("WatchMembership snapshot, %s (environment of %d users): %s; CPU: server %v, client process %v\n", mode, users, strings.TrimSpace(string(out)),
			(cpuTime() - cpu0).Round(time.Millisecond), clientCPU.Round(time.Millisecond))
	}
	return nil
}
