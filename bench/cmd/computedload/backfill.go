package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	segmentsyncv1 "github.com/seghub/seghub/gen/seghub/segmentsync/v1"
	"github.com/seghub/seghub/pkg/natsbus"
)

// Backfill bench: events go straight into the relay's stream (publishing
// them through the API would measure ingestion), then a computed segment
// over them is created and timed from COMPUTING to LIVE.

// backfillNames are the events' names: the definition counts A and B, C is
// noise every backfill still reads.
var backfillNames = []string{"Bench Backfill A", "Bench Backfill B", "Bench Backfill C"}

const backfillPartitions = 16 // the relay's DefaultPartitions

// bfEnvelope mirrors the relay's stored event (relay.Envelope).
type bfEnvelope struct {
	ID       string `json:"id"`
	Env      string `json:"env"`
	Source   string `json:"src"`
	User     string `json:"user"`
	Name     string `json:"name"`
	Time     int64  `json:"ts"`
	Forward  bool   `json:"fwd"`
	Received int64  `json:"rcv"`
}

// bfSubject is relay.Layout.Subject of namespace "seghub".
func bfSubject(e *bfEnvelope) string {
	h := fnv.New32a()
	_, _ = h.Write([]byte(e.User))
	return "seghub.events." + e.Env + "." + strconv.Itoa(int(h.Sum32()%backfillPartitions)) + "." + e.Source
}

type publishOptions struct {
	events, users int
	env           string
	storeDir      string // embedded JetStream data (seghub stopped)
	natsURL       string // or an external NATS
	csv           string // also write the events as CSV for the batch SQL side
	seed          uint64
}

// publishBackfill stores o.events events of o.users users, spread over the
// last 30 days, in the events stream.
func publishBackfill(ctx context.Context, o publishOptions) error {
	b, err := natsbus.Connect(ctx, natsbus.Options{URL: o.natsURL, StoreDir: o.storeDir, Name: "computedload"})
	if err != nil {
		return err
	}
	defer b.Close()
	// The relay's EnsureStream settings (defaults), so seghub's own
	// CreateOrUpdateStream on start changes nothing.
	if _, err := b.JS.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name: "SEGHUB_EVENTS", Description: "seghub events: ingested, durable, delivered to sinks",
		Subjects: []string{"seghub.events.>"}, Storage: jetstream.FileStorage, Retention: jetstream.LimitsPolicy,
		MaxAge: 7 * 24 * time.Hour, Duplicates: 2 * time.Minute, Replicas: 1,
	}); err != nil {
		return fmt.Errorf("events stream: %w", err)
	}
	var w *bufio.Writer
	if o.csv != "" {
		f, err := os.Create(o.csv)
		if err != nil {
			return err
		}
		defer f.Close()
		w = bufio.NewWriterSize(f, 1<<20)
		defer w.Flush()
	}
	r := rand.New(rand.NewPCG(o.seed, 18))
	now := time.Now().UnixMicro()
	const month = int64(30 * 24 * time.Hour / time.Microsecond)
	start := time.Now()
	var futures []jetstream.PubAckFuture
	for i := range o.events {
		e := &bfEnvelope{ID: "bf-" + strconv.Itoa(i), Env: o.env, Source: "api", User: "bf-" + strconv.Itoa(r.IntN(o.users)),
			Name: backfillNames[r.IntN(len(backfillNames))], Time: now - r.Int64N(month), Received: now}
		data, err := json.Marshal(e)
		if err != nil {
			return err
		}
		f, err := b.JS.PublishMsgAsync(&nats.Msg{Subject: bfSubject(e), Data: data}, jetstream.WithStallWait(30*time.Second))
		if err != nil {
			return fmt.Errorf("publish event %d: %w", i, err)
		}
		futures = append(futures, f)
		if len(futures) == 50000 {
			if err := waitAcks(ctx, futures); err != nil {
				return err
			}
			futures = futures[:0]
		}
		if w != nil {
			fmt.Fprintf(w, "%s,%s,%s,%s,%d,%d\n", e.Env, e.User, e.Source, e.Name, e.Time, e.Received)
		}
		if (i+1)%1_000_000 == 0 {
			fmt.Fprintf(os.Stderr, "published %d events in %s\n", i+1, time.Since(start).Round(time.Second))
		}
	}
	if err := waitAcks(ctx, futures); err != nil {
		return err
	}
	el := time.Since(start)
	fmt.Printf("published %d events of %d users in %s (%.0f events/s)\n", o.events, o.users, el.Round(time.Millisecond), float64(o.events)/el.Seconds())
	return nil
}

func waitAcks(ctx context.Context, fs []jetstream.PubAckFuture) error {
	for _, f := range fs {
		select {
		case <-f.Ok():
		case err := <-f.Err():
			return fmt.Errorf("store event: %w", err)
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

// backfillRule is the definition timed: "A at least 3 times in the last 30
// days and B at least once in the last 7 days" (two event conditions).
func backfillRule() *segmentsyncv1.SegmentRule {
	return &segmentsyncv1.SegmentRule{All: []*segmentsyncv1.SegmentRule{
		{Event: &segmentsyncv1.EventCondition{Source: "api", Name: backfillNames[0], CountOperator: segmentsyncv1.CountOperator_COUNT_OPERATOR_AT_LEAST, Times: 3, WithinDays: 30}},
		{Event: &segmentsyncv1.EventCondition{Source: "api", Name: backfillNames[1], CountOperator: segmentsyncv1.CountOperator_COUNT_OPERATOR_AT_LEAST, Times: 1, WithinDays: 7}},
	}}
}

// timeBackfill creates the computed segment and polls it until it is live,
// reporting the time, events/s over events, and seghub's CPU time (pid > 0).
func timeBackfill(ctx context.Context, ss segmentsyncv1.SegmentSyncServiceClient, events, pid int) error {
	cpu0, err := cpuTime(pid)
	if err != nil {
		return err
	}
	start := time.Now()
	sg, err := ss.CreateSegment(ctx, &segmentsyncv1.CreateSegmentRequest{Name: "computedload backfill " + strconv.FormatInt(start.Unix(), 36), Rule: backfillRule()})
	if err != nil {
		return err
	}
	sid := sg.GetSegment().GetSegmentId()
	lastPct := uint32(101)
	var g *segmentsyncv1.GetSegmentResponse
	for {
		g, err = ss.GetSegment(ctx, &segmentsyncv1.GetSegmentRequest{SegmentId: sid})
		if err != nil {
			return err
		}
		if g.GetSegment().GetComputeState() == segmentsyncv1.ComputeState_COMPUTE_STATE_LIVE {
			break
		}
		if p := g.GetSegment().GetComputePercent(); p != lastPct && p%10 == 0 {
			lastPct = p
			fmt.Fprintf(os.Stderr, "%s: computing %d%%\n", time.Since(start).Round(time.Second), p)
		}
		time.Sleep(100 * time.Millisecond)
	}
	el := time.Since(start)
	cpu1, err := cpuTime(pid)
	if err != nil {
		return err
	}
	fmt.Printf("segment %s: COMPUTING → LIVE in %s over %d events (%.0f events/s); seghub CPU %s (%.0f %% of one core); %d members\n",
		sid, el.Round(time.Millisecond), events, float64(events)/el.Seconds(), (cpu1 - cpu0).Round(time.Millisecond),
		100*(cpu1-cpu0).Seconds()/el.Seconds(), g.GetSegment().GetMemberCount())
	return nil
}

// cpuTime is pid's user + system CPU time from /proc/<pid>/stat (0 when
// pid is 0).
func cpuTime(pid int) (time.Duration, error) {
	if pid <= 0 {
		return 0, nil
	}
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, err
	}
	// Fields after the command (which may hold spaces) start past ")".
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+2:]))
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("read /proc/%d/stat", pid)
	}
	const hz = 100 // USER_HZ on Linux
	return time.Duration(ut+st) * time.Second / hz, nil
}
