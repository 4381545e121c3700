package client_test

import (
	"context"
	"strconv"
	"syscall"
	"testing"
	"time"

	segmentsyncv1 "github.com/seghub/seghub/gen/seghub/segmentsync/v1"
	"github.com/seghub/seghub/pkg/app/apptest"
	"github.com/seghub/seghub/services/targeting/client"
)

// loaded returns a client whose replica holds a 100 000-member segment of
// 200 000 users (even ids are members), and the user ids to ask about.
func loaded(b *testing.B) (*client.Client, string, []string) {
	b.Helper()
	e := process(b, apptest.Options{})
	ctx := apptest.Context(b, 5*time.Minute)
	ss := segmentsyncv1.NewSegmentSyncServiceClient(e.Dial(e.A.Admin))
	sg, err := ss.CreateSegment(ctx, &segmentsyncv1.CreateSegmentRequest{Name: "bench"})
	if err != nil {
		b.Fatal(err)
	}
	sid := sg.GetSegment().GetSegmentId()
	const users = 200_000
	ids := make([]string, users)
	var members []string
	for i := range ids {
		ids[i] = "user:" + strconv.Itoa(i)
		if i%2 == 0 {
			members = append(members, ids[i])
		}
	}
	w := &world{ss: ss}
	if err := w.replace(ctx, sid, members); err != nil {
		b.Fatal(err)
	}
	if _, err := ss.UpsertUsers(ctx, &segmentsyncv1.UpsertUsersRequest{Users: []*segmentsyncv1.User{{UserId: ids[1]}}}); err != nil {
		b.Fatal(err)
	}
	c, err := client.New(e.Dial(e.A.Admin), client.Options{})
	if err != nil {
		b.Fatal(err)
	}
	eventually(b, func() error {
		if m, err := c.IsMember(ctx, sid, ids[users-2]); err != nil || !m || !c.Ready() {
			return context.DeadlineExceeded
		}
		return nil
	})
	// Stop the feed and the server: the replica keeps answering from what it
	// holds, and nothing else in this process competes with the lookups.
	_ = c.Close()
	e.Stop()
	return c, sid, ids
}

// cpuTime is the process's user+system CPU time so far.
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// reportCPU reports CPU per lookup and lookups per CPU-second: on a shared
// machine wall time per op also counts other processes' turns.
func reportCPU(b *testing.B, start time.Duration, ops int) {
	cpu := cpuTime(b) - start
	b.ReportMetric(float64(cpu.Nanoseconds())/float64(ops), "cpu-ns/op")
	b.ReportMetric(float64(ops)/cpu.Seconds()/1e6, "M-lookups/cpu-s")
}

// BenchmarkIsMember is one in-process membership decision on one goroutine,
// for a hot set of 1 024 users (what a service asking about its active users
// sees: the index's cache lines stay in cache) and for uniformly random users
// of the 200 000 (every lookup misses the CPU caches a few times).
// M-lookups/cpu-s is the lookups per second of one core.
func BenchmarkIsMember(b *testing.B) {
	c, sid, ids := loaded(b)
	ctx := context.Background()
	for _, bc := range []struct {
		name  string
		users int
		step  int
	}{{"hot-1k-users", 1024, 1}, {"random-200k-users", len(ids), 7919}} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			start, n, i := cpuTime(b), 0, 0
			for b.Loop() {
				if _, err := c.IsMember(ctx, sid, ids[i%bc.users]); err != nil {
					b.Fatal(err)
				}
				i += bc.step
				n++
			}
			reportCPU(b, start, n)
		})
	}
}

// BenchmarkIsMemberParallel is the hot set on every core (GOMAXPROCS
// goroutines): the replica's read lock is shared, so this shows what that
// costs.
func BenchmarkIsMemberParallel(b *testing.B) {
	c, sid, ids := loaded(b)
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	start := cpuTime(b)
	defer func() { reportCPU(b, start, b.N) }()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			if _, err := c.IsMember(ctx, sid, ids[i%1024]); err != nil {
				b.Error(err)
				return
			}
			i++
		}
	})
}
