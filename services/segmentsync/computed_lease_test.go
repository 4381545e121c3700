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
// event counts exactly once (a user with two events, one on each side of the
// hand-over, is in "exactly 2 times").
func TestComputedSegmentsOneConsumerPerDeployment(t *testing.T) {
	const ttl = 2 * time.Second
	dbURL := storetest.PostgresURL(t)
	ns := fmt.Sprintf("t%d", time.Now().UnixNano())
	replica := func(logs *apptest.LogBuffer) (*apptest.Env, *segmentsync.Service) {
		e := apptest.New(t, apptest.Options{DatabaseURL: dbURL, ExternalNATS: true, LogOutput: logs,
			Configure: func(c *config.Config) { c.BusNamespace = ns }})
		svc, err := segmentsync.NewWithOptions(context.Background(), e.P, segmentsync.Options{ComputedLeaseTTL: ttl})
		if err != nil {
			t.Fatal(err)
		}
		e.Add(svc)
		e.Start()
		return e, svc
	}
	var logs1, logs2 apptest.LogBuffer
	e1, svc1 := replica(&logs1)
	eventually(t, "the first replica takes the lease", 10*time.Second, svc1.EvaluatesComputed)
	e2, svc2 := replica(&logs2)
	eventually(t, "the second replica stands by", 10*time.Second, func() bool { return strings.Contains(logs2.String(), "standing by") })
	if svc2.EvaluatesComputed() {
		t.Fatal("both replicas evaluate computed segments")
	}

	ctx := apptest.Context(t, 2*time.Minute)
	// Events go through the second replica's connection, which outlives the first.
	js := e2.P.Bus.JS
	stream := strings.ToUpper(ns) + "_EVENTS"
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: stream, Subjects: []string{ns + ".events.>"}}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = js.DeleteStream(context.Background(), stream) })
	env := e1.A.EnvironmentID
	send := func(user string) {
		t.Helper()
		us := time.Now().UnixMicro()
		data, _ := json.Marshal(map[string]any{"id": fmt.Sprintf("ev-%s-%d", user, time.Now().UnixNano()), "env": env, "src": "appcues", "user": user, "name": "Flow Completed", "ts": us, "rcv": us})
		if _, err := js.Publish(ctx, ns+".events."+env+".0.appcues", data); err != nil {
			t.Fatal(err)
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
	once := create("Completed a flow", "COUNT_OPERATOR_AT_LEAST", 1)
	twice := create("Completed exactly two flows", "COUNT_OPERATOR_EXACTLY", 2)
	// count reads a segment through the second replica: the store is shared.
	count := func(id string) uint64 {
		g, err := c2.GetSegment(ctx, &segmentsyncv1.GetSegmentRequest{SegmentId: id})
		if err != nil || g.GetSegment().GetComputeState() != segmentsyncv1.ComputeState_COMPUTE_STATE_LIVE {
			return 1 << 62
		}
		return g.GetSegment().GetMemberCount()
	}
	eventually(t, "both segments live", 30*time.Second, func() bool { return count(once) == 0 && count(twice) == 0 })

	const users = 40
	for i := range users {
		send(fmt.Sprintf("u%02d", i))
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("counts %d %d\nfirst replica:\n%s\nsecond replica:\n%s", count(once), count(twice), logs1.String(), logs2.String())
		}
	})
	eventually(t, "the first events applied", 30*time.Second, func() bool { return count(once) == users })

	if svc2.EvaluatesComputed() {
		t.Fatal("the standby replica took the lease from a live holder")
	}

	// Second events around the hand-over: half before the holder stops, half after.
	for i := range users / 2 {
		send(fmt.Sprintf("u%02d", i))
	}
	stopped := time.Now()
	e1.Stop()
	eventually(t, "the standby takes over within the lease TTL", ttl, svc2.EvaluatesComputed)
	t.Logf("taken over %s after the holder stopped", time.Since(stopped).Round(time.Millisecond))
	for i := users / 2; i < users; i++ {
		send(fmt.Sprintf("u%02d", i))
	}
	eventually(t, "every second event applied once", 30*time.Second, func() bool { return count(twice) == users })
	if n := count(once); n != users {
		t.Fatalf("at least once: %d members, want %d", n, users)
	}
	for name, l := range map[string]string{"first": logs1.String(), "second": logs2.String()} {
		for _, bad := range []string{"were not applied", "position moved"} {
			if strings.Contains(l, bad) {
				t.Errorf("the %s replica's consumer was refused a batch (%q): two consumers ran at once", name, bad)
			}
		}
	}
}
