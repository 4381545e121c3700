// Command servingbench measures targeting's serving path the way a deployment
// sees it, in one run: the all-in-one seghub binary (`seghub serve`, embedded
// default) in its own process; a public segment of -members users; gRPC
// CheckMembership from this process (its own CPU reported); REST
// GET /v1/targeting/segments/{s}/members/{u} from wrk; redis-benchmark
// SISMEMBER against the same members in the local Redis; BatchCheckStream
// decisions/s over one stream, as repeated checks and in the packed form; and
// the floor (floor.go): grpc-go and net/http alone answering the same
// requests with a constant, in a process of their own. Server CPU per request
// is the change of utime+stime in /proc/<pid>/stat over a phase divided by its
// requests (Redis's and the floor's from their own processes the same way).
//
//	cd bench && go run ./cmd/servingbench -bin ../bin/seghub
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	segmentsyncv1 "github.com/seghub/seghub/gen/seghub/segmentsync/v1"
	targetingv1 "github.com/seghub/seghub/gen/seghub/targeting/v1"

	"github.com/seghub/seghub/bench/internal/harness"
)

type options struct {
	bin, redis, serverCPUs, clientCPUs, profileDir string
	members, conc, conns, batch, inflight          int
	dur, profileFor                                time.Duration
	env                                            []string
	floor, packed                                  bool
}

func main() {
	var o options
	var env string
	flag.StringVar(&o.bin, "bin", "", "seghub binary to serve (default: build ./cmd/seghub of this tree)")
	flag.IntVar(&o.members, "members", 100000, "members of the public benchmark segment")
	flag.IntVar(&o.conc, "c", 50, "concurrent requests of every load client (gRPC, wrk, redis-benchmark)")
	flag.IntVar(&o.conns, "conns", 4, "gRPC connections the gRPC client spreads its requests over")
	flag.DurationVar(&o.dur, "d", 10*time.Second, "duration of each phase")
	flag.StringVar(&o.redis, "redis", "127.0.0.1:6379", "Redis to compare with")
	flag.IntVar(&o.batch, "batch", 1000, "checks per BatchCheckStream message")
	flag.IntVar(&o.inflight, "inflight", 8, "BatchCheckStream messages in flight on the one stream")
	flag.StringVar(&o.serverCPUs, "server-cpus", "", "taskset CPU list for the server (and Redis's load client runs on -client-cpus); empty: no pinning")
	flag.StringVar(&o.clientCPUs, "client-cpus", "", "taskset CPU list for the load clients")
	flag.StringVar(&o.profileDir, "profile", "", "directory: take a CPU profile of the server during each seghub phase (go tool pprof of its SEGHUB_PPROF_ADDR)")
	flag.DurationVar(&o.profileFor, "profile-seconds", 5*time.Second, "length of each profile")
	flag.StringVar(&env, "env", "", "extra SEGHUB_* settings for the server, comma-separated K=V")
	flag.BoolVar(&o.floor, "floor", true, "also measure the floor: grpc-go and net/http alone answering a constant, in their own process")
	flag.BoolVar(&o.packed, "packed", true, "also measure BatchCheckStream's packed form (one segment, packed ids, bitset answers)")
	floorServe := flag.Bool("floor-serve", false, "serve the floor (started by servingbench itself)")
	flag.Parse()
	if *floorServe {
		if err := serveFloor(); err != nil {
			fmt.Fprintln(os.Stderr, "servingbench floor:", err)
			os.Exit(1)
		}
		return
	}
	if env != "" {
		o.env = strings.Split(env, ",")
	}
	if err := run(o); err != nil {
		fmt.Fprintln(os.Stderr, "servingbench:", err)
		os.Exit(1)
	}
}

type row struct {
	path, cpuPerReq, rps, p50, p99, client string
}

func run(o options) error {
	ctx := context.Background()
	dir, err := os.MkdirTemp("", "servingbench")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	if o.bin == "" {
		o.bin = filepath.Join(dir, "seghub")
		build := exec.Command("go", "build", "-o", o.bin, "./cmd/seghub")
		build.Dir = ".."
		build.Stdout, build.Stderr = os.Stderr, os.Stderr
		if err := build.Run(); err != nil {
			return fmt.Errorf("build seghub: %w", err)
		}
	}
	if o.clientCPUs != "" {
		// This process is the gRPC load client.
		if out, err := exec.Command("taskset", "-pc", o.clientCPUs, strconv.Itoa(os.Getpid())).CombinedOutput(); err != nil {
			return fmt.Errorf("taskset: %v: %s", err, out)
		}
	}
	if o.profileDir != "" {
		if err := os.MkdirAll(o.profileDir, 0o755); err != nil {
			return err
		}
	}
	srv, err := startServer(o)
	if err != nil {
		return err
	}
	defer srv.Stop()
	fmt.Printf("seghub pid %d, gRPC %s, REST %s\n", srv.PID(), srv.GRPCAddr, srv.HTTPAddr)

	conns := make([]*grpc.ClientConn, o.conns)
	for i := range conns {
		if conns[i], err = grpc.NewClient(srv.GRPCAddr, grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithPerRPCCredentials(harness.Bearer(srv.AdminKey)),
			grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(64<<20), grpc.MaxCallSendMsgSize(64<<20))); err != nil {
			return err
		}
		defer conns[i].Close()
	}
	sid, err := loadSegment(ctx, conns[0], o.members)
	if err != nil {
		return err
	}
	fmt.Printf("segment %s of %d members served\n", sid, o.members)

	seg := target{name: "seghub", pid: srv.PID(), ppr: srv.ppr, httpAddr: srv.HTTPAddr, key: srv.AdminKey}
	var floor *floorProcess
	var floorConns []*grpc.ClientConn
	if o.floor {
		var prefix []string
		if o.serverCPUs != "" {
			prefix = []string{"taskset", "-c", o.serverCPUs}
		}
		if floor, err = startFloor(prefix); err != nil {
			return err
		}
		defer floor.stop()
		fmt.Printf("floor pid %d, gRPC %s, REST %s\n", floor.cmd.Process.Pid, floor.grpcAddr, floor.httpAddr)
		floorConns = make([]*grpc.ClientConn, o.conns)
		for i := range floorConns {
			if floorConns[i], err = grpc.NewClient(floor.grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithPerRPCCredentials(harness.Bearer(srv.AdminKey))); err != nil {
				return err
			}
			defer floorConns[i].Close()
		}
	}

	var rows []row
	// Warm up (connections, caches, stacks) before measuring.
	if _, err := grpcPhase(ctx, o, conns, sid, 2*time.Second, seg, ""); err != nil {
		return err
	}
	r, err := grpcPhase(ctx, o, conns, sid, o.dur, seg, "grpc")
	if err != nil {
		return err
	}
	rows = append(rows, r)
	var floorT target
	if floor != nil {
		floorT = target{name: "floor", pid: floor.cmd.Process.Pid, ppr: floor.pprofAddr, httpAddr: floor.httpAddr, key: srv.AdminKey}
		if _, err := grpcPhase(ctx, o, floorConns, sid, 2*time.Second, floorT, ""); err != nil {
			return err
		}
		if r, err = grpcPhase(ctx, o, floorConns, sid, o.dur, floorT, "grpc-floor"); err != nil {
			return err
		}
		rows = append(rows, r)
	}
	if r, err = restPhase(o, seg, sid, dir, "rest"); err != nil {
		return err
	}
	rows = append(rows, r)
	if floor != nil {
		if r, err = restPhase(o, floorT, sid, dir, "rest-floor"); err != nil {
			return err
		}
		rows = append(rows, r)
	}
	r, err = redisPhase(o)
	if err != nil {
		return err
	}
	rows = append([]row{r}, rows...)
	r, err = batchPhase(ctx, o, conns[0], sid, seg, false)
	if err != nil {
		return err
	}
	rows = append(rows, r)
	if o.packed {
		if r, err = batchPhase(ctx, o, conns[0], sid, seg, true); err != nil {
			return err
		}
		rows = append(rows, r)
	}

	fmt.Printf("\n| path | server CPU per request | throughput | p50 | p99 | load client CPU |\n|---|---|---|---|---|---|\n")
	for _, r := range rows {
		fmt.Printf("| %s | %s | %s | %s | %s | %s |\n", r.path, r.cpuPerReq, r.rps, r.p50, r.p99, r.client)
	}
	return nil
}

// --- the server process ---

type server struct {
	*harness.Binary
	ppr string // net/http/pprof address (SEGHUB_PPROF_ADDR)
}

func startServer(o options) (*server, error) {
	ppr, err := harness.FreeAddr()
	if err != nil {
		return nil, err
	}
	var prefix []string
	if o.serverCPUs != "" {
		prefix = []string{"taskset", "-c", o.serverCPUs}
	}
	// `make run` without the demo seed: its recurring sync would add work
	// to the measured process.
	b, err := harness.StartBinary(harness.BinaryOptions{Bin: o.bin, Prefix: prefix, Env: append([]string{"SEGHUB_PPROF_ADDR=" + ppr, "SEGHUB_SEED=false"}, o.env...)})
	if err != nil {
		return nil, err
	}
	return &server{Binary: b, ppr: ppr}, nil
}

// cpu is a process's CPU time so far (0 when it cannot be read).
func cpu(pid int) time.Duration {
	d, _ := harness.ProcCPU(pid)
	return d
}

// target is a measured server process: seghub or the floor.
type target struct {
	name     string
	pid      int
	ppr      string // net/http/pprof address
	httpAddr string
	key      string
}

// profile takes a CPU profile of the server for d into path.
func (t target) profile(path string, d time.Duration) error {
	cmd := exec.Command("go", "tool", "pprof", "-proto", "-output", path, fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", t.ppr, int(d.Seconds())))
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("pprof: %v: %s", err, out)
	}
	return nil
}

func loadSegment(ctx context.Context, conn *grpc.ClientConn, members int) (string, error) {
	ss := segmentsyncv1.NewSegmentSyncServiceClient(conn)
	seg, err := ss.CreateSegment(ctx, &segmentsyncv1.CreateSegmentRequest{Name: "servingbench", Visibility: segmentsyncv1.Visibility_VISIBILITY_PUBLIC})
	if err != nil {
		return "", fmt.Errorf("create segment: %w", err)
	}
	sid := seg.GetSegment().GetSegmentId()
	if _, err := harness.Replace(ctx, ss, sid, "user:", 0, members); err != nil {
		return "", fmt.Errorf("replace members: %w", err)
	}
	tg := targetingv1.NewTargetingServiceClient(conn)
	for deadline := time.Now().Add(2 * time.Minute); ; {
		r, err := tg.CheckMembership(ctx, &targetingv1.CheckMembershipRequest{SegmentId: sid, UserId: "user:" + strconv.Itoa(members-1)})
		if err == nil && r.GetIsMember() {
			return sid, nil
		}
		if time.Now().After(deadline) {
			return "", fmt.Errorf("targeting does not serve the segment: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// selfCPU is this process's CPU time (the gRPC load client's own cost).
func selfCPU() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func us(d time.Duration, n int64) string {
	if n == 0 {
		return "-"
	}
	return fmt.Sprintf("%.1f µs", float64(d.Nanoseconds())/float64(n)/1000)
}

func ms(d time.Duration) string { return fmt.Sprintf("%.2f ms", float64(d.Microseconds())/1000) }

// --- phases ---

func grpcPhase(ctx context.Context, o options, conns []*grpc.ClientConn, sid string, dur time.Duration, srv target, name string) (row, error) {
	clients := make([]targetingv1.TargetingServiceClient, len(conns))
	for i, c := range conns {
		clients[i] = targetingv1.NewTargetingServiceClient(c)
	}
	var ops atomic.Int64
	var failed atomic.Value
	lat := make([]harness.Latencies, o.conc)
	var wg sync.WaitGroup
	profErr := make(chan error, 1)
	if name != "" && o.profileDir != "" {
		go func() {
			profErr <- srv.profile(filepath.Join(o.profileDir, name+".pb.gz"), min(o.profileFor, dur-time.Second))
		}()
	} else {
		profErr <- nil
	}
	c0, s0, t0 := selfCPU(), cpu(srv.pid), time.Now()
	deadline := t0.Add(dur)
	for w := 0; w < o.conc; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := clients[w%len(clients)]
			r := rand.New(rand.NewPCG(uint64(w), 1))
			req := &targetingv1.CheckMembershipRequest{SegmentId: sid}
			for time.Now().Before(deadline) {
				req.UserId = "user:" + strconv.Itoa(r.IntN(o.members*2)) // half members, half not
				start := time.Now()
				if _, err := c.CheckMembership(ctx, req); err != nil {
					failed.Store(err)
					return
				}
				lat[w] = append(lat[w], time.Since(start))
				ops.Add(1)
			}
		}()
	}
	wg.Wait()
	el, sc, cc := time.Since(t0), cpu(srv.pid)-s0, selfCPU()-c0
	if err, _ := failed.Load().(error); err != nil {
		return row{}, err
	}
	if err := <-profErr; err != nil {
		return row{}, err
	}
	var all harness.Latencies
	for _, l := range lat {
		all = append(all, l...)
	}
	n := ops.Load()
	return row{
		path:      fmt.Sprintf("%sgRPC `CheckMembership` (Go client, %d connections, %d concurrent)", floorLabel(srv), len(conns), o.conc),
		cpuPerReq: us(sc, n), rps: fmt.Sprintf("%.0f req/s", float64(n)/el.Seconds()),
		p50: ms(all.Quantile(0.5)), p99: ms(all.Quantile(0.99)),
		client: fmt.Sprintf("%.2f cores (%s/req)", cc.Seconds()/el.Seconds(), us(cc, n)),
	}, nil
}

var (
	wrkRPS     = regexp.MustCompile(`Requests/sec:\s+([\d.]+)`)
	wrkReqs    = regexp.MustCompile(`(\d+) requests in`)
	wrkLatency = regexp.MustCompile(`(?m)^\s+(50|99)%\s+([\d.]+)(us|ms|s)\s*$`)
	wrkNon2xx  = regexp.MustCompile(`Non-2xx or 3xx responses: (\d+)`)
)

// floorLabel marks the floor's rows.
func floorLabel(t target) string {
	if t.name == "floor" {
		return "floor (grpc-go / net/http alone, constant answer): "
	}
	return ""
}

func restPhase(o options, srv target, sid, dir, name string) (row, error) {
	script := filepath.Join(dir, "lookup.lua")
	lua := fmt.Sprintf(`math.randomseed(os.time())
request = function()
  return wrk.format("GET", "/v1/targeting/segments/%s/members/user:" .. math.random(0, %d))
end
`, sid, 2*o.members-1)
	if err := os.WriteFile(script, []byte(lua), 0o600); err != nil {
		return row{}, err
	}
	// Warm-up, then the measured run.
	args := []string{"wrk", "-t2", fmt.Sprintf("-c%d", o.conc), "--latency", "-s", script, "-H", "Authorization: Bearer " + srv.key}
	if o.clientCPUs != "" {
		args = append([]string{"taskset", "-c", o.clientCPUs}, args...)
	}
	warm := exec.Command(args[0], append(args[1:], "-d2s", "http://"+srv.httpAddr)...)
	if out, err := warm.CombinedOutput(); err != nil {
		return row{}, fmt.Errorf("wrk: %v: %s", err, out)
	}
	profErr := make(chan error, 1)
	if o.profileDir != "" {
		go func() {
			profErr <- srv.profile(filepath.Join(o.profileDir, name+".pb.gz"), min(o.profileFor, o.dur-time.Second))
		}()
	} else {
		profErr <- nil
	}
	cmd := exec.Command(args[0], append(args[1:], fmt.Sprintf("-d%ds", int(o.dur.Seconds())), "http://"+srv.httpAddr)...)
	s0, t0 := cpu(srv.pid), time.Now()
	out, err := cmd.CombinedOutput()
	el, sc := time.Since(t0), cpu(srv.pid)-s0
	if err != nil {
		return row{}, fmt.Errorf("wrk: %v: %s", err, out)
	}
	if err := <-profErr; err != nil {
		return row{}, err
	}
	text := string(out)
	if m := wrkNon2xx.FindStringSubmatch(text); m != nil {
		return row{}, fmt.Errorf("wrk saw %s non-2xx answers:\n%s", m[1], text)
	}
	m := wrkReqs.FindStringSubmatch(text)
	rps := wrkRPS.FindStringSubmatch(text)
	if m == nil || rps == nil {
		return row{}, fmt.Errorf("unparsed wrk output:\n%s", text)
	}
	n, _ := strconv.ParseInt(m[1], 10, 64)
	q := map[string]string{}
	for _, l := range wrkLatency.FindAllStringSubmatch(text, -1) {
		q[l[1]] = l[2] + " " + l[3]
	}
	cc := cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
	return row{
		path:      fmt.Sprintf("%sREST `GET /v1/targeting/segments/{s}/members/{u}` (wrk -t2 -c%d)", floorLabel(srv), o.conc),
		cpuPerReq: us(sc, n), rps: rps[1] + " req/s", p50: q["50"], p99: q["99"],
		client: fmt.Sprintf("%.2f cores (%s/req)", cc.Seconds()/el.Seconds(), us(cc, n)),
	}, nil
}

var csvRow = regexp.MustCompile(`"SISMEMBER[^"]*","([\d.]+)","[\d.]+","[\d.]+","([\d.]+)","[\d.]+","([\d.]+)"`)

func redisPhase(o options) (row, error) {
	if err := harness.LoadRedisSet(o.redis, "seghub:bench", "user:", o.members); err != nil {
		return row{}, fmt.Errorf("load redis: %w", err)
	}
	pid, err := redisPID(o.redis)
	if err != nil {
		return row{}, err
	}
	host, port, _ := net.SplitHostPort(o.redis)
	// About as many requests as the gRPC phase answers in its duration.
	n := 50000 * int(o.dur.Seconds())
	args := []string{"redis-benchmark", "-h", host, "-p", port, "-c", strconv.Itoa(o.conc), "-n", strconv.Itoa(n), "-P", "1", "-r", strconv.Itoa(o.members * 2), "--csv", "SISMEMBER", "seghub:bench", "user:__rand_int__"}
	if o.clientCPUs != "" {
		args = append([]string{"taskset", "-c", o.clientCPUs}, args...)
	}
	cmd := exec.Command(args[0], args[1:]...)
	s0, t0 := cpu(pid), time.Now()
	out, err := cmd.CombinedOutput()
	el, sc := time.Since(t0), cpu(pid)-s0
	if err != nil {
		return row{}, fmt.Errorf("redis-benchmark: %v\n%s", err, out)
	}
	m := csvRow.FindStringSubmatch(string(out))
	if m == nil {
		return row{}, fmt.Errorf("unparsed redis-benchmark output: %s", out)
	}
	cc := cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
	return row{
		path:      fmt.Sprintf("Redis %s `SISMEMBER` (redis-benchmark -c %d -P 1, same members)", redisVersion(o.redis), o.conc),
		cpuPerReq: us(sc, int64(n)), rps: m[1] + " req/s", p50: m[2] + " ms", p99: m[3] + " ms",
		client: fmt.Sprintf("%.2f cores (%s/req)", cc.Seconds()/el.Seconds(), us(cc, int64(n))),
	}, nil
}

func batchPhase(ctx context.Context, o options, conn *grpc.ClientConn, sid string, srv target, packed bool) (row, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	st, err := targetingv1.NewTargetingServiceClient(conn).BatchCheckStream(ctx)
	if err != nil {
		return row{}, err
	}
	// A few prepared messages, sent round-robin: the client's cost is
	// encoding, not building user ids.
	r := rand.New(rand.NewPCG(7, 7))
	msgs := make([]*targetingv1.BatchCheckStreamRequest, 16)
	for i := range msgs {
		m := &targetingv1.BatchCheckStreamRequest{}
		for range o.batch {
			user := "user:" + strconv.Itoa(r.IntN(o.members*2))
			if packed {
				// Each id followed by a newline, one segment for all.
				m.PackedUserIds = append(append(m.PackedUserIds, user...), '\n')
			} else {
				m.Checks = append(m.Checks, &targetingv1.MembershipCheck{SegmentId: sid, UserId: user})
			}
		}
		if packed {
			m.PackedSegmentId = sid
		}
		msgs[i] = m
	}
	window := make(chan struct{}, o.inflight)
	var decisions atomic.Int64
	recvErr := make(chan error, 1)
	go func() {
		for {
			resp, err := st.Recv()
			if err != nil {
				if errors.Is(err, io.EOF) {
					err = nil
				}
				recvErr <- err
				return
			}
			if packed {
				if len(resp.GetPackedIsMember()) != (o.batch+7)/8 {
					cancel()
					recvErr <- errNoPacked
					return
				}
				decisions.Add(int64(o.batch))
			} else {
				decisions.Add(int64(len(resp.GetIsMember())))
			}
			<-window
		}
	}()
	name := "batch"
	path := fmt.Sprintf("gRPC `BatchCheckStream`, one stream, %d checks a message, %d in flight", o.batch, o.inflight)
	if packed {
		name = "batch-packed"
		path = fmt.Sprintf("gRPC `BatchCheckStream` packed form (one segment, %d packed ids a message, bitset answers), one stream, %d in flight", o.batch, o.inflight)
	}
	profErr := make(chan error, 1)
	if o.profileDir != "" {
		go func() {
			profErr <- srv.profile(filepath.Join(o.profileDir, name+".pb.gz"), min(o.profileFor, o.dur-time.Second))
		}()
	} else {
		profErr <- nil
	}
	c0, s0, t0 := selfCPU(), cpu(srv.pid), time.Now()
	deadline := t0.Add(o.dur)
	var sendErr error
	for i := 0; time.Now().Before(deadline); i++ {
		select {
		case window <- struct{}{}:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			break
		}
		if sendErr = st.Send(msgs[i%len(msgs)]); sendErr != nil {
			break
		}
	}
	_ = st.CloseSend()
	err = <-recvErr
	el, sc, cc := time.Since(t0), cpu(srv.pid)-s0, selfCPU()-c0
	if pe := <-profErr; pe != nil && err == nil {
		err = pe
	}
	if errors.Is(err, errNoPacked) {
		return row{path: path, cpuPerReq: "not served by this binary"}, nil
	}
	if err != nil {
		return row{}, err
	}
	if sendErr != nil {
		return row{}, sendErr
	}
	n := decisions.Load()
	return row{
		path:      path,
		cpuPerReq: fmt.Sprintf("%.0f ns a decision", float64(sc.Nanoseconds())/float64(n)),
		rps:       fmt.Sprintf("**%.2f M decisions/s**", float64(n)/el.Seconds()/1e6), p50: "", p99: "",
		client: fmt.Sprintf("%.2f cores", cc.Seconds()/el.Seconds()),
	}, nil
}

// errNoPacked is a server answering the packed form without its bitset: a
// seghub from before the packed form, which ignores the fields.
var errNoPacked = errors.New("the server does not answer the packed form")

// --- Redis ---

func redisCommand(addr string, args ...string) (string, error) {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return "", err
	}
	defer c.Close()
	fmt.Fprintf(c, "*%d\r\n", len(args))
	for _, a := range args {
		fmt.Fprintf(c, "$%d\r\n%s\r\n", len(a), a)
	}
	r := bufio.NewReader(c)
	line, err := r.ReadString('\n')
	if err != nil {
		return "", err
	}
	if !strings.HasPrefix(line, "$") {
		return line, nil
	}
	n, _ := strconv.Atoi(strings.TrimSpace(line[1:]))
	b := make([]byte, n+2)
	_, err = io.ReadFull(r, b)
	return string(b[:n]), err
}

func redisInfo(addr, field string) string {
	s, err := redisCommand(addr, "INFO", "server")
	if err != nil {
		return ""
	}
	for _, l := range strings.Split(s, "\r\n") {
		if v, ok := strings.CutPrefix(l, field+":"); ok {
			return v
		}
	}
	return ""
}

func redisVersion(addr string) string { return redisInfo(addr, "redis_version") }

func redisPID(addr string) (int, error) {
	pid, err := strconv.Atoi(redisInfo(addr, "process_id"))
	if err != nil {
		return 0, fmt.Errorf("redis process id: %w", err)
	}
	if _, err := os.Stat(fmt.Sprintf("/proc/%d/stat", pid)); err != nil {
		return 0, fmt.Errorf("redis-server (pid %d) is not visible in /proc: %w", pid, err)
	}
	return pid, nil
}
