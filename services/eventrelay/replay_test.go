package eventrelay_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	eventrelayv1 "github.com/seghub/seghub/gen/seghub/eventrelay/v1"
	"github.com/seghub/seghub/pkg/app/apptest"
	"github.com/seghub/seghub/pkg/store"
	"github.com/seghub/seghub/services/destsim"
)

// failReplayMarks makes recording a replay fail in the database, as a crash
// between republishing a dead letter and marking it would; the returned
// function heals it.
func failReplayMarks(t *testing.T, ctx context.Context, db *store.DB) func() {
	t.Helper()
	install := []string{`CREATE TRIGGER fail_replay_mark BEFORE UPDATE ON er_dead_letters BEGIN SELECT RAISE(FAIL, 'injected: mark fails'); END`}
	heal := []string{`DROP TRIGGER fail_replay_mark`}
	if db.Dialect == store.Postgres {
		install = []string{
			`CREATE FUNCTION fail_replay_mark() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'injected: mark fails'; END $$`,
			`CREATE TRIGGER fail_replay_mark BEFORE UPDATE ON er_dead_letters FOR EACH ROW EXECUTE FUNCTION fail_replay_mark()`,
		}
		heal = []string{`DROP TRIGGER fail_replay_mark ON er_dead_letters`, `DROP FUNCTION fail_replay_mark()`}
	}
	run := func(stmts []string) {
		for _, q := range stmts {
			if _, err := db.ExecContext(ctx, q); err != nil {
				t.Fatalf("%s: %v", q, err)
			}
		}
	}
	run(install)
	return func() { run(heal) }
}

// replayedCopies counts the messages JetStream holds on replay subjects.
func (f *relayFixture) replayedCopies(t *testing.T, ctx context.Context) uint64 {
	t.Helper()
	js, err := jetstream.New(f.e.P.Bus.Conn)
	if err != nil {
		t.Fatal(err)
	}
	ns := f.e.Config.BusNamespace
	st, err := js.Stream(ctx, strings.ToUpper(ns)+"_EVENTS")
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(ctx, jetstream.WithSubjectFilter(ns+".events.*.*._replay.>"))
	if err != nil {
		t.Fatal(err)
	}
	var n uint64
	for _, c := range info.State.Subjects {
		n += c
	}
	return n
}

// A dead letter is republished before it is marked replayed: when marking
// fails (a crash between the two), the letter is still listed and its event
// already on its way; replaying it again stores no second copy (JetStream
// drops the same message id) and delivers it once in effect.
func TestReplayPublishesBeforeMarking(t *testing.T) {
	for _, pg := range []bool{false, true} {
		t.Run(map[bool]string{false: "sqlite", true: "postgres"}[pg], func(t *testing.T) {
			f := startRelay(t, relayOpts{postgres: pg, maxAttempts: 1, maxAge: time.Millisecond})
			ctx := apptest.Context(t, 60*time.Second)
			an := f.connect(t, ctx, "analytics", false)
			f.route(t, ctx, an)
			f.analytics.SetFaults(destsim.Faults{Rate5xx: 1})
			f.track(t, ctx, []*eventrelayv1.Event{apiEvent("rp-1", "u-replay", 1)})
			var dl *eventrelayv1.DeadLetter
			waitFor(t, 30*time.Second, "a dead letter", func() (bool, string) {
				r, err := f.ev.ListDeadLetters(ctx, &eventrelayv1.ListDeadLettersRequest{ConnectionId: an})
				if err != nil || len(r.GetDeadLetters()) != 1 {
					return false, fmt.Sprint(r, err)
				}
				dl = r.GetDeadLetters()[0]
				return true, ""
			})
			f.analytics.SetFaults(destsim.Faults{})

			heal := failReplayMarks(t, ctx, f.e.P.DB)
			if _, err := f.evAdmin.ReplayDeadLetters(ctx, &eventrelayv1.ReplayDeadLettersRequest{DeadLetterIds: []string{dl.GetDeadLetterId()}}); status.Code(err) != codes.Internal || !strings.Contains(err.Error(), "call again") {
				t.Fatalf("replay while marking fails: %v; want Internal asking to call again", err)
			}
			// Not lost: still listed, and its event was stored before the mark.
			left, err := f.ev.ListDeadLetters(ctx, &eventrelayv1.ListDeadLettersRequest{ConnectionId: an})
			if err != nil || len(left.GetDeadLetters()) != 1 || left.GetDeadLetters()[0].GetDeadLetterId() != dl.GetDeadLetterId() {
				t.Fatalf("after the failed mark the letter is not listed: %v %v", left, err)
			}
			if n := f.replayedCopies(t, ctx); n != 1 {
				t.Fatalf("JetStream holds %d replayed copies after republishing; want 1", n)
			}
			waitCount(t, "the replayed event", 1, f.analyticsEvents)

			heal()
			r, err := f.evAdmin.ReplayDeadLetters(ctx, &eventrelayv1.ReplayDeadLettersRequest{DeadLetterIds: []string{dl.GetDeadLetterId()}})
			if err != nil || r.GetReplayed() != 1 {
				t.Fatalf("second replay: %v %v", r, err)
			}
			if n := f.replayedCopies(t, ctx); n != 1 {
				t.Fatalf("JetStream holds %d replayed copies after the second replay; want 1 (deduplicated)", n)
			}
			time.Sleep(300 * time.Millisecond)
			if n := len(f.analyticsEvents()); n != 1 {
				t.Fatalf("analytics holds %d events; want 1", n)
			}
			left, _ = f.ev.ListDeadLetters(ctx, &eventrelayv1.ListDeadLettersRequest{ConnectionId: an})
			if len(left.GetDeadLetters()) != 0 {
				t.Fatalf("still pending after the second replay: %v", left)
			}
		})
	}
}
