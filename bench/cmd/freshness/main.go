// Command freshness measures how soon a membership change is answered:
// from the moment a change is sent (AddMembers over gRPC, or a signed Heap
// webhook page through the gateway) until the targeting service's own index
// answers it (polled with BatchCheck) and until an in-process client
// (services/targeting/client, in this process) answers it. It runs against
// a separately started seghub (the all-in-one, `seghub serve`), so the load
// is in its own process.
//
// Changes go out in batches every -interval: -rate changes/s means
// rate×interval new members per batch. A batch is visible when its last
// member is (the feed is applied in order, and a batch is one transaction).
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/seghub/seghub/bench/internal/harness"
	segmentsyncv1 "github.com/seghub/seghub/gen/seghub/segmentsync/v1"
	targetingv1 "github.com/seghub/seghub/gen/seghub/targeting/v1"
	"github.com/seghub/seghub/pkg/destinations"
	"github.com/seghub/seghub/services/targeting/client"
)

type options struct {
	grpcAddr, httpAddr, key string
	rates                   []int
	interval, dur, poll     time.Duration
	paths                   []string
	natsURL                 string
}

func main() {
	var o options
	rates := flag.String("rates", "1000,10000", "changes per second, one phase each")
	paths := flag.String("paths", "grpc,webhook", "change paths: grpc (AddMembers), webhook (Heap webhook page via the gateway)")
	flag.StringVar(&o.grpcAddr, "grpc", "127.0.0.1:9090", "seghub gRPC address")
	flag.StringVar(&o.httpAddr, "http", "127.0.0.1:8080", "seghub REST gateway address (webhooks)")
	flag.StringVar(&o.key, "key", os.Getenv("SEGHUB_KEY"), "admin key of the environment (default $SEGHUB_KEY)")
	flag.DurationVar(&o.interval, "interval", 10*time.Millisecond, "time between change batches")
	flag.DurationVar(&o.dur, "d", 10*time.Second, "duration of each phase")
	flag.DurationVar(&o.poll, "poll", time.Millisecond, "how often the service is asked whether pending batches are visible")
	flag.StringVar(&o.natsURL, "nats", "nats://127.0.0.1:4222", "NATS server for the peer probe (pub → sub latency at one message per interval, in the same run); empty skips it")
	flag.Parse()
	for _, r := range strings.Split(*rates, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(r))
		if err != nil || n <= 0 {
			fmt.Fprintf(os.Stderr, "freshness: bad rate %q\n", r)
			os.Exit(2)
		}
		o.rates = append(o.rates, n)
	}
	o.paths = strings.Split(*paths, ",")
	if o.key == "" {
		fmt.Fprintln(os.Stderr, "freshness: -key (an admin key) is required")
		os.Exit(2)
	}
	if err := run(context.Background(), o); err != nil {
		fmt.Fprintln(os.Stderr, "freshness:", err)
		os.Exit(1)
	}
}

// writer sends one batch of new members; it returns when the change is acknowledged.
type writer func(ctx context.Context, users []string) error

func run(ctx context.Context, o options) error {
	conn, err := grpc.NewClient(o.grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithPerRPCCredentials(harness.Bearer(o.key)))
	if err != nil {
		return err
	}
	defer conn.Close()
	ss := segmentsyncv1.NewSegmentSyncServiceClient(conn)
	tg := targetingv1.NewTargetingServiceClient(conn)
	c, err := client.New(conn, client.Options{})
	if err != nil {
		return err
	}
	defer c.Close()
	wctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	err = c.WaitReady(wctx)
	cancel()
	if err != nil {
		return err
	}
	fmt.Printf("in-process client ready at version %d\n\n", c.Version())
	fmt.Println("Times from sending a batch; \"ack → service\" is from the write's acknowledgment (the change path alone: change log → NATS → feed → index).")
	fmt.Println()
	fmt.Println("| path | target changes/s | sent changes/s | batches | write ack p50 / p99 | → service p50 / p99 / max | ack → service p50 / p99 | → in-process client p50 / p99 / max | ack → client p50 / p99 | peer: NATS pub → sub p50 / p99 |")
	fmt.Println("|---|---|---|---|---|---|---|---|---|---|")
	run := strconv.FormatInt(time.Now().UnixNano(), 36)
	for _, path := range o.paths {
		sid, write, err := setup(ctx, o, ss, path, run)
		if err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
		for _, rate := range o.rates {
			if err := phase(ctx, o, tg, c, sid, write, path, rate, run); err != nil {
				return fmt.Errorf("%s at %d/s: %w", path, rate, err)
			}
		}
	}
	return nil
}

// setup prepares a segment for a path and returns its writer.
func setup(ctx context.Context, o options, ss segmentsyncv1.SegmentSyncServiceClient, path, run string) (string, writer, error) {
	switch path {
	case "grpc":
		sg, err := ss.CreateSegment(ctx, &segmentsyncv1.CreateSegmentRequest{Name: "freshness " + run})
		if err != nil {
			return "", nil, err
		}
		sid := sg.GetSegment().GetSegmentId()
		return sid, func(ctx context.Context, users []string) error {
			_, err := ss.AddMembers(ctx, &segmentsyncv1.AddMembersRequest{SegmentId: sid, UserIds: users})
			return err
		}, nil
	case "webhook":
		return webhookSetup(ctx, o, ss, run)
	}
	return "", nil, fmt.Errorf("unknown path %q (grpc or webhook)", path)
}

// webhookSetup creates a Heap source connection and returns a writer that
// posts each batch as a one-page sync task, signed as Heap signs.
func webhookSetup(ctx context.Context, o options, ss segmentsyncv1.SegmentSyncServiceClient, run string) (string, writer, error) {
	body, err := rest(ctx, o, "POST", "/v1/connections", `{"type":"heap","name":"freshness `+run+`"}`)
	if err != nil {
		return "", nil, err
	}
	var created struct {
		Connection struct {
			WebhookPath string `json:"webhook_path"`
		} `json:"connection"`
		SigningSecret string `json:"signing_secret"`
	}
	if err := json.Unmarshal(body, &created); err != nil || created.SigningSecret == "" {
		return "", nil, fmt.Errorf("create heap source: %s", body)
	}
	external := "fresh-" + run
	task := 0
	var mu sync.Mutex
	write := func(ctx context.Context, users []string) error {
		mu.Lock()
		task++
		t := task
		mu.Unlock()
		add := make([]map[string]string, len(users))
		for i, u := range users {
			add[i] = map[string]string{"id": u}
		}
		page, _ := json.Marshal(map[string]any{"id_token": "tok", "action_type": "segment.users.sync", "data": map[string]any{
			"segment":   map[string]any{"id": external, "name": "Heap: freshness " + run},
			"sync_info": map[string]any{"page_number": 1, "total_pages": 1, "sync_task_id": "task-" + strconv.Itoa(t)},
			"add":       add, "remove": []any{}}})
		req, err := http.NewRequestWithContext(ctx, "POST", "http://"+o.httpAddr+created.Connection.WebhookPath, bytes.NewReader(page))
		if err != nil {
			return err
		}
		req.Header.Set("Heap-Hash", destinations.Sign(created.SigningSecret, time.Now(), page))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		if resp.StatusCode != 200 {
			return fmt.Errorf("webhook: %d %s", resp.StatusCode, b)
		}
		return nil
	}
	// The first page creates the segment; find its id by external id.
	if err := write(ctx, []string{"fresh-" + run + "-seed"}); err != nil {
		return "", nil, err
	}
	token := ""
	for {
		r, err := ss.ListSegments(ctx, &segmentsyncv1.ListSegmentsRequest{PageSize: 1000, PageToken: token})
		if err != nil {
			return "", nil, err
		}
		for _, sg := range r.GetSegments() {
			if sg.GetExternalId() == external {
				return sg.GetSegmentId(), write, nil
			}
		}
		if token = r.GetNextPageToken(); token == "" {
			return "", nil, fmt.Errorf("segment of external id %s not found after its first page", external)
		}
	}
}

func rest(ctx context.Context, o options, method, path, body string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, method, "http://"+o.httpAddr+path, strings.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+o.key)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode != 200 {
		return nil, fmt.Errorf("%s %s: %d %s", method, path, resp.StatusCode, b)
	}
	return b, err
}

// The observers of a batch: the targeting service's index and the
// in-process client.
const (
	service = iota
	inProcess
)

// phase sends rate changes/s for o.dur and reports when they became visible.
func phase(ctx context.Context, o options, tg targetingv1.TargetingServiceClient, c *client.Client, sid string, write writer, path string, rate int, run string) error {
	per := max(1, int(float64(rate)*o.interval.Seconds()))
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	peer := harness.StartPeer(ctx, o.natsURL, "bench.freshness."+run, o.interval)
	batches := harness.NewBatches(2)
	var pollers sync.WaitGroup
	pollers.Add(2)
	go func() { defer pollers.Done(); batches.PollTargeting(ctx, service, o.poll, tg, sid) }()
	go func() { defer pollers.Done(); pollClient(ctx, c, sid, batches) }()

	elapsed, werr := batches.Send(o.interval, o.dur, func(n int) (string, func() error) {
		users := make([]string, per)
		for i := range users {
			users[i] = "fr-" + run + "-" + path + strconv.Itoa(rate) + "-" + strconv.Itoa(n) + "-" + strconv.Itoa(i)
		}
		return users[per-1], func() error { return write(ctx, users) }
	})
	if werr != nil {
		return werr
	}
	// Wait (bounded) for the stragglers.
	batches.Wait(60 * time.Second)
	cancel()
	pollers.Wait()
	t := batches.Times()
	ack, svc, cli, ackSvc, ackCli := t.Ack, t.Seen[service], t.Seen[inProcess], t.AckSeen[service], t.AckSeen[inProcess]
	note := ""
	if t.Missing > 0 {
		note = fmt.Sprintf(" (%d batches not seen within 60 s)", t.Missing)
	}
	fmt.Printf("| %s | %d | %.0f | %d × %d%s | %s / %s | %s / %s / %s | %s / %s | %s / %s / %s | %s / %s | %s |\n", path, rate, float64(len(ack)*per)/elapsed.Seconds(), len(ack), per, note,
		q(ack, 0.5), q(ack, 0.99), q(svc, 0.5), q(svc, 0.99), q(svc, 1), q(ackSvc, 0.5), q(ackSvc, 0.99), q(cli, 0.5), q(cli, 0.99), q(cli, 1), q(ackCli, 0.5), q(ackCli, 0.99), peer())
	return nil
}

// pollClient asks the in-process client continuously (it is cheap).
func pollClient(ctx context.Context, c *client.Client, sid string, batches *harness.Batches) {
	for ctx.Err() == nil {
		ask := batches.Unseen(inProcess, math.MaxInt)
		now := time.Now()
		batches.MarkSeen(inProcess, ask, func(i int) bool {
			yes, err := c.IsMember(ctx, sid, ask[i].Last)
			return err == nil && yes
		}, now)
		time.Sleep(100 * time.Microsecond)
	}
}

// q formats a quantile for the table.
var q = harness.TableQuantile
