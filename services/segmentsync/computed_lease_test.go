package segmentsync_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/encoding/protojson"

	segmentsyncv1 "github.com/seghub/seghub/gen/seghub/segmentsync/v1"
	"github.com/seghub/seghub/pkg/app/apptest"
	"github.com/seghub/seghub/pkg/config"
	"github.com/seghub/seghub/pkg/store/storetest"
	"github.com/seghub/seghub/services/segmentsync"
)

func eventually(t *testing.T, what string, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s", what, d)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Two segmentsync replicas on one PostgreSQL store and one NATS: one holds
// the computed-segment lease and applies events, the other stands by; when
// the holder stops, the other takes over within the lease TTL and every
// event counts exactly once: each user's sixth event (half of them sent
// before the hand-over, half after) moves every user from "exactly 5 times"
// to "exactly 6 times".
func TestComputedSegmentsOneConsumerPerDeployment(t *testing.T) {
	const ttl = 2 * time.Second
	dbURL := storetest.PostgresURL(t)
	ns := fmt.Sprintf("t%d", time.Now().UnixNano())
	replica := func(logs *apptest.LogBuffer) (*apptest.Env, *segmentsync.Service) {
		e := apptest.New(t, apptest.Options{DatabaseURL: dbURL, ExternalNATS: true, LogOutput: logs,
			Configure: func(c *config.Config) { c.BusNamespace = ns }})
		svc, err := segmentsync.NewWithOptions(context.Background(), e.P, segmentsync.Options{ComputedLeaseTTL: ttl, ComputedBatch: 10})
		if err != nil {
			t.Fatal(err)
		}
		e.Add(svc)
		return e, svc
	}
	var logs1, logs2 apptest.LogBuffer
	e1, svc1 := replica(&logs1)
	e2, svc2 := replica(&logs2)

	// The relay's stream exists before the replicas start, so that any
	// evaluator running would consume at once.
	ctx := apptest.Context(t, 2*time.Minute)
	js := e2.P.Bus.JS // outlives the first replica
	stream := strings.ToUpper(ns) + "_EVENTS"
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: stream, Subjects: []string{ns + ".events.>"}}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = js.DeleteStream(context.Background(), stream) })

	e1.Start()
	eventually(t, "the first replica takes the lease", 10*time.Second, svc1.EvaluatesComputed)
	e2.Start()
	eventually(t, "the second replica stands by", 10*time.Second, func() bool { return strings.Contains(logs2.String(), "standing by") })
	if svc2.EvaluatesComputed() {
		t.Fatal("both replicas evaluate computed segments")
	}

	env := e1.A.EnvironmentID
	// send publishes n events of each user in a burst: with batches of 10,
	// two consumers would each take part of it.
	send := func(n int, users []string) {
		t.Helper()
		for range n {
			for _, user := range users {
				us := time.Now().UnixMicro()
				data, _ := json.Marshal(map[string]any{"id": fmt.Sprintf("ev-%s-%d", user, time.Now().UnixNano()), "env": env, "src": "appcues", "user": user, "name": "Flow Completed", "ts": us, "rcv": us})
				if _, err := js.PublishAsync(ns+".events."+env+".0.appcues", data); err != nil {
					t.Fatal(err)
				}
			}
		}
		select {
		case <-js.PublishAsyncComplete():
		case <-ctx.Done():
			t.Fatal("events not stored in time")
		}
	}
	c1, c2 := client(e1, e1.A.Member), client(e2, e1.A.Member)
	create := func(name, op string, times int) string {
		var rule segmentsyncv1.SegmentRule
		if err := protojson.Unmarshal(fmt.Appendf(nil, `{"event":{"source":"appcues","name":"Flow Completed","count_operator":%q,"times":%d,"within_days":30}}`, op, times), &rule); err != nil {
			t.Fatal(err)
		}
		r, err := c1.CreateSegment(ctx, &segmentsyncv1.CreateSegmentRequest{Name: name, Rule: &rule})
		if err != nil {
			t.Fatal(err)
		}
		return r.GetSegment().GetSegmentId()
	}
	five := create("Completed five flows", "COUNT_OPERATOR_EXACTLY", 5)
	six := create("Completed six flows", "COUNT_OPERATOR_EXACTLY", 6)
	// count reads a segment through the second replica: the store is shared.
	count := func(id string) uint64 {
		g, err := c2.GetSegment(ctx, &segmentsyncv1.GetSegmentRequest{SegmentId: id})
		if err != nil || g.GetSegment().GetComputeState() != segmentsyncv1.ComputeState_COMPUTE_STATE_LIVE {
			return 1 << 62
		}
		return g.GetSegment().GetMemberCount()
	}
	eventually(t, "both segments live", 30*time.Second, func() bool { return count(five) == 0 && count(six) == 0 })
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("counts %d %d\nfirst replica:\n%s\nsecond replica:\n%s", count(five), count(six), logs1.String(), logs2.String())
		}
	})

	var users []string
	for i := range 40 {
		users = append(users, fmt.Sprintf("u%02d", i))
	}
	send(5, users)
	eventually(t, "the first events applied", 60*time.Second, func() bool { return count(five) == uint64(len(users)) })
	if svc2.EvaluatesComputed() {
		t.Fatal("the standby replica took the lease from a live holder")
	}

	// Sixth events around the hand-over: half before the holder stops, half after.
	send(1, users[:20])
	stopped := time.Now()
	e1.Stop()
	eventually(t, "the standby takes over within the lease TTL", ttl, svc2.EvaluatesComputed)
	t.Logf("taken over %s after the holder stopped", time.Since(stopped).Round(time.Millisecond))
	send(1, users[20:])
	eventually(t, "every sixth event applied once", 60*time.Second, func() bool { return count(six) == uint64(len(users)) })
	if n := count(five); n != 0 {
		t.Fatalf("exactly five: %d members after everyone's sixth event", n)
	}
	for name, l := range map[string]string{"first": logs1.String(), "second": logs2.String()} {
		for _, bad := range []string{"were not applied", "position moved"} {
			if strings.Contains(l, bad) {
				t.Errorf("the %s replica's consumer was refused a batch (%q): two consumers ran at once", name, bad)
			}
		}
	}
}
