// Command segmentsyncload measures segmentsync's data plane in-process on the
// embedded default (SQLite): ReplaceMembers of 1 M ids, a 1 % churn, the
// stored size of 10 segments × 1 M members, and a WatchMembership snapshot of
// 1 M members to a client.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"runtime/pprof"
	"strconv"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/seghub/seghub/bench/internal/harness"
	segmentsyncv1 "github.com/seghub/seghub/gen/seghub/segmentsync/v1"
	"github.com/seghub/seghub/pkg/app"
	"github.com/seghub/seghub/pkg/auth"
	"github.com/seghub/seghub/services/segmentsync"
)

func main() {
	members := flag.Int("members", 1_000_000, "members per segment")
	segments := flag.Int("segments", 10, "segments for the size measurement")
	cpuProfile := flag.String("cpuprofile", "", "write a CPU profile of the first ReplaceMembers (1 M new ids) to this file")
	flag.Parse()
	profile = *cpuProfile
	if err := run(*members, *segments); err != nil {
		fmt.Fprintln(os.Stderr, "segmentsyncload:", err)
		os.Exit(1)
	}
}

// profile names the CPU profile file of the first upload ("" = none).
var profile string

func maxRSSMB() float64 {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return float64(ru.Maxrss) / 1024
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

	// WatchMembership snapshot of the first segment (1 M members + users) to a client.
	ic, err := grpc.NewClient(proc.Addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithPerRPCCredentials(auth.InternalCredentials{Key: proc.P.InternalKey, Insecure: true}),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(256<<20)))
	if err != nil {
		return err
	}
	wc := segmentsyncv1.NewSegmentSyncServiceClient(ic)
	for _, withUsers := range []bool{false, true} {
		t0 = time.Now()
		st, err := wc.WatchMembership(ctx, &segmentsyncv1.WatchMembershipRequest{AllEnvironments: true, IncludeUsers: withUsers, SegmentIds: []string{sid}})
		if err != nil {
			return err
		}
		var msgs, bytes int
		for {
			m, err := st.Recv()
			if err != nil {
				return err
			}
			msgs++
			if s := m.GetSegment(); s != nil {
				bytes += len(s.GetMembers())
			}
			if m.GetCaughtUp() != nil {
				break
			}
		}
		fmt.Printf("WatchMembership snapshot (include_users=%v) of a %d-member segment: %v, %d messages, bitmap %.2f MB\n", withUsers, members, time.Since(t0).Round(time.Millisecond), msgs, float64(bytes)/(1<<20))
	}
	return nil
}
