package eventrelay_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	eventrelayv1 "github.com/seghub/seghub/gen/seghub/eventrelay/v1"
	"github.com/seghub/seghub/pkg/app/apptest"
	"github.com/seghub/seghub/services/destsim"
	erstore "github.com/seghub/seghub/services/eventrelay/internal/store"
)

// oldLayout is the JetStream state the release before partitions left
// behind, with its names spelled out: events under <ns>.events.<env>.<source>
// and one durable consumer sink_<conn> per sink filtering <ns>.events.<env>.>.
type oldLayout struct {
	st          jetstream.Stream
	events, env string
}

func newOldLayout(t *testing.T, ctx context.Context, f *relayFixture) oldLayout {
	t.Helper()
	ns := f.e.Config.BusNamespace
	if ns == "" {
		ns = "seghub"
	}
	st, err := f.e.P.Bus.JS.Stream(ctx, strings.ToUpper(ns)+"_EVENTS")
	if err != nil {
		t.Fatal(err)
	}
	return oldLayout{st: st, events: ns + ".events.", env: f.e.A.EnvironmentID}
}

// consumer creates sink conn's consumer as the previous release did.
func (o oldLayout) consumer(t *testing.T, ctx context.Context, conn string, since time.Time) jetstream.Consumer {
	t.Helper()
	c, err := o.st.CreateConsumer(ctx, jetstream.ConsumerConfig{
		Durable: "sink_" + conn, Description: "seghub sink " + conn, FilterSubject: o.events + o.env + ".>",
		AckPolicy: jetstream.AckExplicitPolicy, AckWait: 30 * time.Second, MaxDeliver: -1, MaxAckPending: 50_000,
		DeliverPolicy: jetstream.DeliverByStartTimePolicy, OptStartTime: &since,
	})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// publish stores an "api" event of user numbered n under the old subject.
func (o oldLayout) publish(t *testing.T, ctx context.Context, js jetstream.JetStream, id, user string, n int) {
	t.Helper()
	now := time.Now().UnixMicro()
	data, err := json.Marshal(map[string]any{"id": id, "env": o.env, "src": "api", "user": user, "name": "Seq", "ts": now,
		"props": map[string]any{"n": n}, "fwd": true, "rcv": now})
	if err != nil {
		t.Fatal(err)
	}
	m := &nats.Msg{Subject: o.events + o.env + ".api", Data: data, Header: nats.Header{"Nats-Msg-Id": []string{id}}}
	if _, err := js.PublishMsg(ctx, m); err != nil {
		t.Fatal(err)
	}
}

// Events stored by the release before partitions, not yet delivered when it
// stopped (some fetched and left unacknowledged), are delivered by this one
// through the old consumer first: with new events of the same users stored
// meanwhile, every event arrives once and each user's old events before its
// new ones; the old consumer is gone afterwards.
func TestUpgradeDeliversEventsOfTheLayoutBeforePartitions(t *testing.T) {
	for _, ext := range []bool{false, true} {
		t.Run(map[bool]string{false: "embedded", true: "external"}[ext], func(t *testing.T) {
			f := startRelay(t, relayOpts{external: ext, postgres: ext})
			ctx := apptest.Context(t, 120*time.Second)
			js := f.e.P.Bus.JS
			old := newOldLayout(t, ctx, f)
			conn := f.connect(t, ctx, "analytics", false)
			legacy := old.consumer(t, ctx, conn, time.Now().Add(-time.Minute))
			const users, oldEach, newEach = 24, 5, 5
			for i := range oldEach {
				for u := range users {
					old.publish(t, ctx, js, fmt.Sprintf("old-u%d-%d", u, i), fmt.Sprintf("u%d", u), i)
				}
			}
			// The previous release was stopped mid-delivery: some fetched,
			// never acknowledged.
			b, err := legacy.Fetch(10)
			if err != nil {
				t.Fatal(err)
			}
			fetched := 0
			for range b.Messages() {
				fetched++
			}
			if fetched == 0 {
				t.Fatalf("nothing fetched from the old consumer: %v", b.Error())
			}

			// A replica of the previous release still delivers (a rolling
			// upgrade): it holds that release's delivery lease, and the old
			// consumer is left to it meanwhile.
			leases, err := erstore.Open(ctx, f.e.P.DB)
			if err != nil {
				t.Fatal(err)
			}
			if ok, err := leases.AcquireLease(ctx, "sinks", "previous-release", time.Now(), time.Hour); err != nil || !ok {
				t.Fatalf("hold the previous release's delivery lease: %v %v", ok, err)
			}
			f.route(t, ctx, conn)
			var newEvents []*eventrelayv1.Event
			for i := oldEach; i < oldEach+newEach; i++ {
				for u := range users {
					newEvents = append(newEvents, apiEvent(fmt.Sprintf("new-u%d-%d", u, i), fmt.Sprintf("u%d", u), i))
				}
			}
			f.track(t, ctx, newEvents)
			// Nothing to wait for: no delivery may happen, however long.
			time.Sleep(2 * time.Second)
			if n := len(f.analyticsEvents()); n != 0 {
				t.Fatalf("%d events delivered while the old consumer is not drained", n)
			}
			if _, err := old.st.Consumer(ctx, "sink_"+conn); err != nil {
				t.Fatalf("the old consumer, while the previous release delivers: %v", err)
			}
			// The previous release stopped; the drain retries through faults.
			if err := leases.ReleaseLease(ctx, "sinks", "previous-release"); err != nil {
				t.Fatal(err)
			}
			f.analytics.SetFaults(destsim.Faults{Rate5xx: 0.3})
			waitFor(t, 60*time.Second, "delivery attempted", func() (bool, string) {
				c := f.analytics.Snapshot().Counters
				return c["injected_5xx"] > 0 || len(f.analyticsEvents()) > 0, fmt.Sprint(c)
			})
			f.analytics.SetFaults(destsim.Faults{})

			waitCount(t, "old and new events", users*(oldEach+newEach), f.analyticsEvents)
			// The old consumer is gone, and so is the one that delivered in its place.
			for _, name := range []string{"sink_" + conn, "sink_" + conn + "_upgrade"} {
				waitFor(t, 60*time.Second, name+" deleted", func() (bool, string) {
					_, err := old.st.Consumer(ctx, name)
					return errors.Is(err, jetstream.ErrConsumerNotFound), fmt.Sprint(err)
				})
			}
			time.Sleep(300 * time.Millisecond)
			perUserOrder(t, f.analyticsEvents(), "identity", "properties", users, oldEach+newEach)
		})
	}
}
