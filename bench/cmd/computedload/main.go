// Command computedload measures how soon an event changes a computed
// segment's membership as a targeting lookup sees it: from sending a batch
// of events (TrackBatch over gRPC) until the targeting service's index
// answers that the batch's last user is a member (polled with BatchCheck).
// It runs against a separately started seghub (`seghub serve`), so the load
// is in its own process.
//
// Each phase creates a computed segment "did <event> at least once in the
// last 7 days" on an event name of its own, waits until it is live, then
// sends -rate events/s, every event from a new user (so every event changes
// the membership), in batches every -interval.
//
// With -backfill-events it measures a backfill instead (backfill.go): with
// -publish-store (the embedded JetStream's directory, seghub stopped) or
// -publish-nats it stores the events in the relay's stream and exits;
// without, it creates a computed segment over them and times it from
// COMPUTING to LIVE.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/seghub/seghub/bench/internal/harness"
	eventrelayv1 "github.com/seghub/seghub/gen/seghub/eventrelay/v1"
	segmentsyncv1 "github.com/seghub/seghub/gen/seghub/segmentsync/v1"
	targetingv1 "github.com/seghub/seghub/gen/seghub/targeting/v1"
)

type options struct {
	grpcAddr, key       string
	rates               []int
	interval, dur, poll time.Duration
	natsURL             string
	publish             publishOptions
	pid                 int
}

func main() {
	var o options
	rates := flag.String("rates", "1000,10000", "events per second, one phase each")
	flag.StringVar(&o.grpcAddr, "grpc", "127.0.0.1:9090", "seghub gRPC address")
	flag.StringVar(&o.key, "key", os.Getenv("SEGHUB_KEY"), "admin key of the environment (default $SEGHUB_KEY)")
	flag.DurationVar(&o.interval, "interval", 10*time.Millisecond, "time between event batches")
	flag.DurationVar(&o.dur, "d", 10*time.Second, "duration of each phase")
	flag.DurationVar(&o.poll, "poll", time.Millisecond, "how often targeting is asked whether pending batches are visible")
	flag.StringVar(&o.natsURL, "nats", "", "NATS server for the peer probe (pub → sub latency at one message per interval, in the same run); empty skips it")
	flag.IntVar(&o.publish.events, "backfill-events", 0, "backfill bench: how many events (0: the latency bench)")
	flag.IntVar(&o.publish.users, "backfill-users", 1_000_000, "backfill bench: over how many users")
	flag.StringVar(&o.publish.env, "env", "", "backfill publish: environment id of the events")
	flag.StringVar(&o.publish.storeDir, "publish-store", "", "backfill publish: embedded JetStream directory (<data-dir>/nats) of a stopped seghub")
	flag.StringVar(&o.publish.natsURL, "publish-nats", "", "backfill publish: external NATS URL")
	flag.StringVar(&o.publish.csv, "publish-csv", "", "backfill publish: also write the events to this CSV (env,user,source,name,ts,rcv) for the batch SQL side")
	flag.Uint64Var(&o.publish.seed, "seed", 1, "backfill publish: random seed")
	flag.IntVar(&o.pid, "pid", 0, "backfill timing: seghub's pid, for its CPU time")
	flag.Parse()
	if o.publish.events > 0 && (o.publish.storeDir != "" || o.publish.natsURL != "") {
		if o.publish.env == "" || o.publish.users <= 0 {
			fmt.Fprintln(os.Stderr, "computedload: publishing needs -env and -backfill-users > 0")
			os.Exit(2)
		}
		if err := publishBackfill(context.Background(), o.publish); err != nil {
			fmt.Fprintln(os.Stderr, "computedload:", err)
			os.Exit(1)
		}
		return
	}
	for _, r := range strings.Split(*rates, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(r))
		if err != nil || n <= 0 {
			fmt.Fprintf(os.Stderr, "computedload: bad rate %q\n", r)
			os.Exit(2)
		}
		o.rates = append(o.rates, n)
	}
	if o.key == "" {
		fmt.Fprintln(os.Stderr, "computedload: -key (an admin key) is required")
		os.Exit(2)
	}
	if err := run(context.Background(), o); err != nil {
		fmt.Fprintln(os.Stderr, "computedload:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, o options) error {
	conn, err := grpc.NewClient(o.grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithPerRPCCredentials(harness.Bearer(o.key)))
	if err != nil {
		return err
	}
	defer conn.Close()
	ss := segmentsyncv1.NewSegmentSyncServiceClient(conn)
	tg := targetingv1.NewTargetingServiceClient(conn)
	ev := eventrelayv1.NewEventRelayServiceClient(conn)
	if o.publish.events > 0 {
		return timeBackfill(ctx, segmentsyncv1.NewSegmentSyncServiceClient(conn), o.publish.events, o.pid)
	}
	fmt.Println("Times from sending a batch of events; \"ack →\" from the relay's acknowledgment (stored in JetStream): the computed path alone")
	fmt.Println("(stream → consumer → aggregates + evaluation → change log → NATS → targeting feed → index).")
	fmt.Println()
	fmt.Println("| target events/s | sent events/s | batches | track ack p50 / p99 | → targeting p50 / p99 / max | ack → targeting p50 / p99 | peer: NATS pub → sub p50 / p99 |")
	fmt.Println("|---|---|---|---|---|---|---|")
	run := strconv.FormatInt(time.Now().UnixNano(), 36)
	for _, rate := range o.rates {
		if err := phase(ctx, o, ss, tg, ev, rate, run); err != nil {
			return fmt.Errorf("at %d/s: %w", rate, err)
		}
	}
	return nil
}

// phase creates its computed segment, sends rate events/s for o.dur and
// reports when each batch's change became visible.
func phase(ctx context.Context, o options, ss segmentsyncv1.SegmentSyncServiceClient, tg targetingv1.TargetingServiceClient, ev eventrelayv1.EventRelayServiceClient, rate int, run string) error {
	name := fmt.Sprintf("Bench Step %s %d", run, rate)
	sg, err := ss.CreateSegment(ctx, &segmentsyncv1.CreateSegmentRequest{Name: "computedload " + run + " " + strconv.Itoa(rate), Rule: &segmentsyncv1.SegmentRule{
		Event: &segmentsyncv1.EventCondition{Source: "api", Name: name, CountOperator: segmentsyncv1.CountOperator_COUNT_OPERATOR_AT_LEAST, Times: 1, WithinDays: 7}}})
	if err != nil {
		return err
	}
	sid := sg.GetSegment().GetSegmentId()
	for deadline := time.Now().Add(5 * time.Minute); ; {
		g, err := ss.GetSegment(ctx, &segmentsyncv1.GetSegmentRequest{SegmentId: sid})
		if err != nil {
			return err
		}
		if g.GetSegment().GetComputeState() == segmentsyncv1.ComputeState_COMPUTE_STATE_LIVE {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("segment %s not live after 5 minutes (%d%%)", sid, g.GetSegment().GetComputePercent())
		}
		time.Sleep(100 * time.Millisecond)
	}
	// Targeting must know the segment before lookups mean anything.
	for {
		_, err := tg.CheckMembership(ctx, &targetingv1.CheckMembershipRequest{SegmentId: sid, UserId: "nobody"})
		if err == nil {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}

	per := max(1, int(float64(rate)*o.interval.Seconds()))
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	peer := harness.StartPeer(ctx, o.natsURL, "bench.computedload."+run, o.interval)
	const targeting = 0 // the one observer
	batches := harness.NewBatches(1)
	var pollers sync.WaitGroup
	pollers.Add(1)
	go func() { defer pollers.Done(); batches.PollTargeting(ctx, targeting, o.poll, tg, sid) }()

	elapsed, werr := batches.Send(o.interval, o.dur, func(n int) (string, func() error) {
		events := make([]*eventrelayv1.Event, per)
		for i := range events {
			events[i] = &eventrelayv1.Event{Source: "api", Name: name, UserId: "cl-" + run + "-" + strconv.Itoa(rate) + "-" + strconv.Itoa(n) + "-" + strconv.Itoa(i)}
		}
		return events[per-1].GetUserId(), func() error {
			r, err := ev.TrackBatch(ctx, &eventrelayv1.TrackBatchRequest{Events: events})
			if err == nil && len(r.GetRejected()) > 0 {
				err = fmt.Errorf("rejected: %v", r.GetRejected()[0])
			}
			return err
		}
	})
	if werr != nil {
		return werr
	}
	batches.Wait(120 * time.Second)
	cancel()
	pollers.Wait()
	t := batches.Times()
	ack, seen, ackSeen := t.Ack, t.Seen[targeting], t.AckSeen[targeting]
	note := ""
	if t.Missing > 0 {
		note = fmt.Sprintf(" (%d batches not seen within 120 s)", t.Missing)
	}
	fmt.Printf("| %d | %.0f | %d × %d%s | %s / %s | %s / %s / %s | %s / %s | %s |\n", rate, float64(len(ack)*per)/elapsed.Seconds(), len(ack), per, note,
		q(ack, 0.5), q(ack, 0.99), q(seen, 0.5), q(seen, 0.99), q(seen, 1), q(ackSeen, 0.5), q(ackSeen, 0.99), peer())
	return nil
}

// q formats a quantile for the table.
var q = harness.TableQuantile
