// Command targetingload measures targeting against Redis on the same machine
// in the same run: unary CheckMembership vs redis-benchmark SISMEMBER at the
// same concurrency without pipelining, BatchCheck decisions/s, and
// ListEligibleExperiences with 100 experiences.
package main

import (
	"context"
	"flag"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"regexp"
	"runtime/pprof"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/seghub/seghub/bench/internal/harness"
	segmentsyncv1 "github.com/seghub/seghub/gen/seghub/segmentsync/v1"
	targetingv1 "github.com/seghub/seghub/gen/seghub/targeting/v1"
	"github.com/seghub/seghub/pkg/app"
	"github.com/seghub/seghub/pkg/config"
	"github.com/seghub/seghub/services/segmentsync"
	"github.com/seghub/seghub/services/targeting"
)

func main() {
	members := flag.Int("members", 100000, "members of the benchmark segment")
	conc := flag.Int("c", 50, "concurrent clients (both seghub and redis-benchmark)")
	dur := flag.Duration("d", 10*time.Second, "duration of each seghub phase")
	requests := flag.Int("n", 500000, "redis-benchmark requests")
	redisAddr := flag.String("redis", "127.0.0.1:6379", "Redis to compare with")
	conns := flag.Int("conns", 4, "gRPC connections the clients share")
	sample := flag.Float64("trace-sample", 1, "SEGHUB_TRACE_SAMPLE of the server")
	flag.Parse()
	if err := run(*members, *conc, *conns, *dur, *requests, *redisAddr, *sample); err != nil {
		fmt.Fprintln(os.Stderr, "targetingload:", err)
		os.Exit(1)
	}
}

func run(members, conc, nconns int, dur time.Duration, requests int, redisAddr string, sample float64) error {
	ctx := context.Background()
	proc, err := harness.Start(ctx, func(c *config.Config) { c.TraceSample = sample },
		func(ctx context.Context, p *app.Platform) (app.Service, error) { return segmentsync.New(ctx, p) },
		func(ctx context.Context, p *app.Platform) (app.Service, error) { return targeting.New(ctx, p) })
	if err != nil {
		return err
	}
	defer proc.Stop()
	conn, err := proc.Dial()
	if err != nil {
		return err
	}
	ss := segmentsyncv1.NewSegmentSyncServiceClient(conn)
	seg, err := ss.CreateSegment(ctx, &segmentsyncv1.CreateSegmentRequest{Name: "bench"})
	if err != nil {
		return err
	}
	sid := seg.GetSegment().GetSegmentId()
	if _, err := harness.Replace(ctx, ss, sid, "user:", 0, members); err != nil {
		return err
	}
	clients := make([]targetingv1.TargetingServiceClient, nconns)
	for i := range clients {
		c, err := proc.Dial()
		if err != nil {
			return err
		}
		defer c.Close()
		clients[i] = targetingv1.NewTargetingServiceClient(c)
	}
	// Wait until the index serves the whole segment.
	for {
		r, err := clients[0].CheckMembership(ctx, &targetingv1.CheckMembershipRequest{SegmentId: sid, UserId: "user:" + strconv.Itoa(members-1)})
		if err == nil && r.GetIsMember() {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	fmt.Printf("segment of %d members loaded; %d clients over %d connections\n", members, conc, nconns)

	// Unary CheckMembership.
	if path := os.Getenv("TARGETINGLOAD_CPUPROFILE"); path != "" {
		f, err := os.Create(path)
		if err != nil {
			return err
		}
		_ = pprof.StartCPUProfile(f)
		defer pprof.StopCPUProfile()
	}
	var ops atomic.Int64
	lat := make([]harness.Latencies, conc)
	var wg sync.WaitGroup
	deadline := time.Now().Add(dur)
	for w := 0; w < conc; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := clients[w%nconns]
			r := rand.New(rand.NewPCG(uint64(w), 1))
			for time.Now().Before(deadline) {
				u := "user:" + strconv.Itoa(r.IntN(members*2)) // half members, half not
				t0 := time.Now()
				if _, err := c.CheckMembership(ctx, &targetingv1.CheckMembershipRequest{SegmentId: sid, UserId: u}); err != nil {
					fmt.Fprintln(os.Stderr, err)
					return
				}
				lat[w] = append(lat[w], time.Since(t0))
				ops.Add(1)
			}
		}()
	}
	start := time.Now()
	wg.Wait()
	elapsed := time.Since(start)
	var all harness.Latencies
	for _, l := range lat {
		all = append(all, l...)
	}
	seghubRPS := float64(ops.Load()) / elapsed.Seconds()
	fmt.Printf("seghub CheckMembership: %.0f req/s, %s\n", seghubRPS, all)
	pprof.StopCPUProfile()

	// Redis SISMEMBER on a set of the same members, same concurrency.
	if err := harness.LoadRedisSet(redisAddr, "seghub:bench", "user:", members); err != nil {
		return fmt.Errorf("load redis: %w", err)
	}
	host, port, _ := net.SplitHostPort(redisAddr)
	out, err := exec.Command("redis-benchmark", "-h", host, "-p", port, "-c", strconv.Itoa(conc), "-n", strconv.Itoa(requests), "-P", "1", "-r", strconv.Itoa(members*2), "--csv", "SISMEMBER", "seghub:bench", "user:__rand_int__").CombinedOutput()
	if err != nil {
		return fmt.Errorf("redis-benchmark: %v\n%s", err, out)
	}
	redisRPS, p50, p99 := parseRedisCSV(string(out))
	fmt.Printf("redis SISMEMBER: %.0f req/s, p50 %.3fms p99 %.3fms\n", redisRPS, p50, p99)
	fmt.Printf("ratio seghub/redis: %.2f\n", seghubRPS/redisRPS)

	// BatchCheck: 1000 checks per request.
	var decisions atomic.Int64
	deadline = time.Now().Add(dur)
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := clients[w%nconns]
			r := rand.New(rand.NewPCG(uint64(w), 2))
			checks := make([]*targetingv1.MembershipCheck, 1000)
			for i := range checks {
				checks[i] = &targetingv1.MembershipCheck{SegmentId: sid}
			}
			for time.Now().Before(deadline) {
				for _, ch := range checks {
					ch.UserId = "user:" + strconv.Itoa(r.IntN(members*2))
				}
				resp, err := c.BatchCheck(ctx, &targetingv1.BatchCheckRequest{Checks: checks})
				if err != nil {
					fmt.Fprintln(os.Stderr, err)
					return
				}
				decisions.Add(int64(len(resp.GetIsMember())))
			}
		}()
	}
	start = time.Now()
	wg.Wait()
	fmt.Printf("seghub BatchCheck (1000/request, 4 clients): %.0f decisions/s\n", float64(decisions.Load())/time.Since(start).Seconds())

	// ListEligibleExperiences with 100 experiences.
	tg := clients[0]
	for i := 0; i < 100; i++ {
		a := &targetingv1.Audience{Match: &targetingv1.ConditionGroup{Combinator: targetingv1.Combinator_COMBINATOR_AND, Conditions: []*targetingv1.Condition{
			{Operator: targetingv1.Operator_OPERATOR_IN_SEGMENT, SegmentId: sid},
			{Operator: targetingv1.Operator_OPERATOR_NOT_EQUALS, Property: "plan", Value: &targetingv1.Condition_StringValue{StringValue: fmt.Sprint("p", i)}},
		}}}
		if _, err := tg.CreateExperience(ctx, &targetingv1.CreateExperienceRequest{Name: fmt.Sprint("tour ", i), Type: targetingv1.ExperienceType_EXPERIENCE_TYPE_PRODUCT_TOUR, Audience: a}); err != nil {
			return err
		}
	}
	ops.Store(0)
	lat = make([]harness.Latencies, conc)
	deadline = time.Now().Add(dur)
	for w := 0; w < conc; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := clients[w%nconns]
			r := rand.New(rand.NewPCG(uint64(w), 3))
			for time.Now().Before(deadline) {
				t0 := time.Now()
				resp, err := c.ListEligibleExperiences(ctx, &targetingv1.ListEligibleExperiencesRequest{UserId: "user:" + strconv.Itoa(r.IntN(members))})
				if err != nil || len(resp.GetExperiences()) != 100 {
					fmt.Fprintln(os.Stderr, "eligible:", err, len(resp.GetExperiences()))
					return
				}
				lat[w] = append(lat[w], time.Since(t0))
				ops.Add(1)
			}
		}()
	}
	start = time.Now()
	wg.Wait()
	all = nil
	for _, l := range lat {
		all = append(all, l...)
	}
	fmt.Printf("seghub ListEligibleExperiences (100 experiences, all eligible): %.0f req/s, %s\n", float64(ops.Load())/time.Since(start).Seconds(), all)
	return nil
}

var csvRow = regexp.MustCompile(`"SISMEMBER[^"]*","([\d.]+)","[\d.]+","[\d.]+","([\d.]+)","[\d.]+","([\d.]+)"`)

func parseRedisCSV(out string) (rps, p50, p99 float64) {
	m := csvRow.FindStringSubmatch(out)
	if m == nil {
		fmt.Fprintln(os.Stderr, "unparsed redis-benchmark output:", out)
		return 0, 0, 0
	}
	rps, _ = strconv.ParseFloat(m[1], 64)
	p50, _ = strconv.ParseFloat(m[2], 64)
	p99, _ = strconv.ParseFloat(m[3], 64)
	return
}
