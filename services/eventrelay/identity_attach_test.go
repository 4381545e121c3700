package eventrelay_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	eventrelayv1 "github.com/seghub/seghub/gen/seghub/eventrelay/v1"
	segmentsyncv1 "github.com/seghub/seghub/gen/seghub/segmentsync/v1"
	"github.com/seghub/seghub/pkg/app/apptest"
	"github.com/seghub/seghub/services/eventrelay"
	"github.com/seghub/seghub/services/eventrelay/internal/relay"
)

// identityDeadLetters lists the identity attacher's dead letters of the
// caller's environment.
func identityDeadLetters(t *testing.T, ctx context.Context, ev eventrelayv1.EventRelayServiceClient) []*eventrelayv1.DeadLetter {
	t.Helper()
	r, err := ev.ListDeadLetters(ctx, &eventrelayv1.ListDeadLettersRequest{ConnectionId: "identity_attach"})
	if err != nil {
		t.Fatal(err)
	}
	return r.GetDeadLetters()
}

func waitAttached(t *testing.T, ctx context.Context, ss segmentsyncv1.SegmentSyncServiceClient, users map[string]string) {
	t.Helper()
	waitFor(t, 60*time.Second, "appcuesUserID attached", func() (bool, string) {
		for u, want := range users {
			r, err := ss.GetUser(ctx, &segmentsyncv1.GetUserRequest{UserId: u})
			if got := r.GetUser().GetProperties()["appcuesUserID"].GetStringValue(); err != nil || got != want {
				return false, fmt.Sprintf("%s: %q %v", u, got, err)
			}
		}
		return true, ""
	})
}

// A poison Appcues event (its user id holds NUL, which segmentsync refuses;
// PostgreSQL could not store it either) no longer holds up the batch it
// arrives in: the 499 others, of two environments, are attached, and the
// poison one is dead-lettered with its reason after its tries alone.
func TestPoisonIdentityIsDeadLetteredAloneOthersAttached(t *testing.T) {
	for _, pg := range []bool{false, true} {
		t.Run(map[bool]string{false: "sqlite", true: "postgres"}[pg], func(t *testing.T) {
			var tries atomic.Int64
			f := startRelay(t, relayOpts{postgres: pg, maxAttempts: 1000, maxAge: 300 * time.Millisecond, wrapAttach: func(next eventrelay.AttachFunc) eventrelay.AttachFunc {
				return func(ctx context.Context, env string, byUser map[string]string) error {
					tries.Add(1)
					return next(ctx, env, byUser)
				}
			}})
			ctx := apptest.Context(t, 120*time.Second)
			// Straight onto the stream, as an event stored before ids were
			// validated would be: the API refuses it now.
			js, err := jetstream.New(f.e.P.Bus.Conn)
			if err != nil {
				t.Fatal(err)
			}
			ns := f.e.Config.BusNamespace
			const poison = "u-poison\x00"
			wantA, wantB := map[string]string{}, map[string]string{}
			var futures []jetstream.PubAckFuture
			for i := range 500 {
				env, user, want := f.e.A.EnvironmentID, fmt.Sprintf("u-%03d", i), wantA
				switch {
				case i == 250:
					user = poison
				case i%2 == 1:
					env, want = f.e.B.EnvironmentID, wantB
				}
				acid := "ac-" + user
				if user != poison {
					want[user] = acid
				}
				data, _ := json.Marshal(map[string]any{"id": fmt.Sprint("ev-", i), "env": env, "src": "appcues", "user": user,
					"name": "Flow Started", "ts": time.Now().UnixMicro(), "fwd": true, "acid": acid, "rcv": time.Now().UnixMicro()})
				subject := relay.NewLayout(ns).Subject(&relay.Envelope{Env: env, Source: "appcues", User: user})
				fut, err := js.PublishMsgAsync(&nats.Msg{Subject: subject, Data: data})
				if err != nil {
					t.Fatal(err)
				}
				futures = append(futures, fut)
			}
			for _, fut := range futures {
				select {
				case <-fut.Ok():
				case err := <-fut.Err():
					t.Fatal(err)
				}
			}
			waitAttached(t, ctx, f.ss, wantA)
			waitAttached(t, ctx, segmentsyncv1.NewSegmentSyncServiceClient(f.e.Dial(f.e.B.Member)), wantB)

			var dls []*eventrelayv1.DeadLetter
			waitFor(t, 30*time.Second, "the poison event dead-lettered", func() (bool, string) {
				dls = identityDeadLetters(t, ctx, f.ev)
				return len(dls) == 1, fmt.Sprint(dls)
			})
			d := dls[0]
			if d.GetEvent().GetUserId() != poison || d.GetEvent().GetEventId() != "ev-250" || d.GetAttempts() < 5 || d.GetDeadTime().AsTime().Sub(d.GetFirstAttemptTime().AsTime()) < 300*time.Millisecond ||
				!strings.Contains(d.GetReason(), "identity attach") || !strings.Contains(d.GetReason(), "InvalidArgument") ||
				!strings.Contains(d.GetReason(), "control characters") {
				t.Fatalf("dead letter %v", d)
			}
			if other := identityDeadLetters(t, ctx, eventrelayv1.NewEventRelayServiceClient(f.e.Dial(f.e.B.Member))); len(other) != 0 {
				t.Fatalf("environment B has identity dead letters: %v", other)
			}
			// Nothing left waiting: the consumer moved on.
			c, err := js.Consumer(ctx, strings.ToUpper(ns)+"_EVENTS", "identity_attach")
			if err != nil {
				t.Fatal(err)
			}
			waitFor(t, 10*time.Second, "identity consumer drained", func() (bool, string) {
				ci, err := c.Info(ctx)
				if err != nil {
					return false, err.Error()
				}
				return ci.NumPending == 0 && ci.NumAckPending == 0 && ci.NumRedelivered == 0, fmt.Sprintf("%+v", ci)
			})
			t.Logf("%d attach calls for 500 events", tries.Load())
		})
	}
}

// An identity attach that fails alone for a non-transient reason is
// dead-lettered (sink identity_attach) and replaying it, once the cause is
// gone, attaches it; segmentsync being unavailable never dead-letters.
func TestIdentityDeadLetterReplays(t *testing.T) {
	var refuse, unavailable atomic.Bool
	refuse.Store(true)
	f := startRelay(t, relayOpts{maxAttempts: 1000, maxAge: 300 * time.Millisecond, wrapAttach: func(next eventrelay.AttachFunc) eventrelay.AttachFunc {
		return func(ctx context.Context, env string, byUser map[string]string) error {
			if unavailable.Load() {
				return status.Error(codes.Unavailable, "segmentsync is down")
			}
			if _, ok := byUser["u-refused"]; ok && refuse.Load() {
				return status.Error(codes.Internal, "injected: database refused the row")
			}
			return next(ctx, env, byUser)
		}
	}})
	ctx := apptest.Context(t, 60*time.Second)
	ev := func(user string) *eventrelayv1.Event {
		return &eventrelayv1.Event{Source: "appcues", UserId: user, Name: "appcues:flow_started", Properties: mustStruct(map[string]any{"flowId": "f", "appcuesUserID": "ac-" + user})}
	}
	f.track(t, ctx, []*eventrelayv1.Event{ev("u-ok-1"), ev("u-refused"), ev("u-ok-2")})
	waitAttached(t, ctx, f.ss, map[string]string{"u-ok-1": "ac-u-ok-1", "u-ok-2": "ac-u-ok-2"})
	var dls []*eventrelayv1.DeadLetter
	waitFor(t, 30*time.Second, "u-refused dead-lettered", func() (bool, string) {
		dls = identityDeadLetters(t, ctx, f.ev)
		return len(dls) == 1, fmt.Sprint(dls)
	})
	if d := dls[0]; d.GetEvent().GetUserId() != "u-refused" || !strings.Contains(d.GetReason(), "injected: database refused the row") {
		t.Fatalf("dead letter %v", d)
	}

	// Down, not refused: retried without end, never dead-lettered.
	unavailable.Store(true)
	f.track(t, ctx, []*eventrelayv1.Event{ev("u-later")})
	time.Sleep(time.Second)
	if n := len(identityDeadLetters(t, ctx, f.ev)); n != 1 {
		t.Fatalf("%d identity dead letters while segmentsync was unavailable; want 1", n)
	}
	unavailable.Store(false)
	waitAttached(t, ctx, f.ss, map[string]string{"u-later": "ac-u-later"})

	refuse.Store(false)
	r, err := f.evAdmin.ReplayDeadLetters(ctx, &eventrelayv1.ReplayDeadLettersRequest{ConnectionId: "identity_attach"})
	if err != nil || r.GetReplayed() != 1 {
		t.Fatalf("replay: %v %v", r, err)
	}
	waitAttached(t, ctx, f.ss, map[string]string{"u-refused": "ac-u-refused"})
	if n := len(identityDeadLetters(t, ctx, f.ev)); n != 0 {
		t.Fatalf("%d identity dead letters pending after the replay", n)
	}
}

// Failing alone more than the attempts, but for less than the window (an
// outage of segmentsync's database answers Internal too), dead-letters
// nothing: the attach lands once the cause is gone.
func TestIdentityAttachOutageShorterThanWindow(t *testing.T) {
	var refuse atomic.Bool
	var refused atomic.Int64
	refuse.Store(true)
	f := startRelay(t, relayOpts{maxAttempts: 1000, maxAge: time.Hour, wrapAttach: func(next eventrelay.AttachFunc) eventrelay.AttachFunc {
		return func(ctx context.Context, env string, byUser map[string]string) error {
			if refuse.Load() {
				refused.Add(1)
				return status.Error(codes.Internal, "injected: database down")
			}
			return next(ctx, env, byUser)
		}
	}})
	ctx := apptest.Context(t, 60*time.Second)
	f.track(t, ctx, []*eventrelayv1.Event{{Source: "appcues", UserId: "u-out", Name: "appcues:flow_started", Properties: mustStruct(map[string]any{"flowId": "f", "appcuesUserID": "ac-out"})}})
	waitFor(t, 20*time.Second, "more failed tries than the attempts", func() (bool, string) {
		return refused.Load() > 10, fmt.Sprint(refused.Load())
	})
	refuse.Store(false)
	waitAttached(t, ctx, f.ss, map[string]string{"u-out": "ac-out"})
	if dls := identityDeadLetters(t, ctx, f.ev); len(dls) != 0 {
		t.Fatalf("dead-lettered within the window: %v", dls)
	}
}
