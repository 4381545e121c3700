package eventrelay_test

import (
	"fmt"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	eventrelayv1 "github.com/seghub/seghub/gen/seghub/eventrelay/v1"
	"github.com/seghub/seghub/pkg/app/apptest"
	"github.com/seghub/seghub/services/destsim"
)

func spanAttr(s sdktrace.ReadOnlySpan, key string) attribute.Value {
	for _, kv := range s.Attributes() {
		if string(kv.Key) == key {
			return kv.Value
		}
	}
	return attribute.Value{}
}

// One event is one trace through its dead letter and replay: the TrackBatch
// request stores it (events.store), the failing sink's attempts
// (sink.deliver, failed), its dead letter (sink.dead_letter), the replay
// (events.replay, linked to the replay request) and the delivery that
// finally succeeds all share the TrackBatch request's trace.
func TestEventTraceThroughDeadLetterAndReplay(t *testing.T) {
	f := startRelay(t, relayOpts{maxAttempts: 2, maxAge: time.Millisecond, traced: true})
	rec := tracetest.NewSpanRecorder()
	f.e.P.Telemetry.Tracer.RegisterSpanProcessor(rec)
	ctx := apptest.Context(t, 60*time.Second)
	an := f.connect(t, ctx, "analytics", false)
	f.route(t, ctx, an)
	f.analytics.SetFaults(destsim.Faults{Rate5xx: 1})
	f.track(t, ctx, []*eventrelayv1.Event{apiEvent("tr-1", "u-trace", 1)})
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
	if _, err := f.evAdmin.ReplayDeadLetters(ctx, &eventrelayv1.ReplayDeadLettersRequest{DeadLetterIds: []string{dl.GetDeadLetterId()}}); err != nil {
		t.Fatal(err)
	}
	waitCount(t, "the replayed event", 1, f.analyticsEvents)

	byName := func(name string) []sdktrace.ReadOnlySpan {
		var out []sdktrace.ReadOnlySpan
		for _, s := range rec.Ended() {
			if s.Name() == name {
				out = append(out, s)
			}
		}
		return out
	}
	waitFor(t, 10*time.Second, "the replayed delivery's span", func() (bool, string) {
		for _, s := range byName("sink.deliver") {
			if spanAttr(s, "delivery.outcome").AsString() == "delivered" {
				return true, ""
			}
		}
		return false, "none yet"
	})
	var track sdktrace.ReadOnlySpan
	for _, s := range rec.Ended() {
		if s.SpanKind() == trace.SpanKindServer && s.Name() == "seghub.eventrelay.v1.EventRelayService/TrackBatch" {
			track = s
		}
	}
	if track == nil {
		t.Fatal("no TrackBatch server span")
	}
	tid := track.SpanContext().TraceID()
	in := func(name string, want int, check func(sdktrace.ReadOnlySpan) bool) {
		t.Helper()
		n := 0
		for _, s := range byName(name) {
			if s.SpanContext().TraceID() == tid && check(s) {
				n++
			}
		}
		if n < want {
			t.Fatalf("%d %s spans in the event's trace, want at least %d", n, name, want)
		}
	}
	in("events.store", 1, func(s sdktrace.ReadOnlySpan) bool { return s.Parent().SpanID() == track.SpanContext().SpanID() })
	in("sink.deliver", 2, func(s sdktrace.ReadOnlySpan) bool {
		return spanAttr(s, "delivery.outcome").AsString() == "failed" && spanAttr(s, "event.id").AsString() == "tr-1"
	})
	in("sink.dead_letter", 1, func(s sdktrace.ReadOnlySpan) bool { return spanAttr(s, "delivery.attempts").AsInt64() == 2 })
	// The server span ends after the answer is on the wire: wait for it.
	var replayReq sdktrace.ReadOnlySpan
	waitFor(t, 10*time.Second, "the replay request's span", func() (bool, string) {
		for _, s := range rec.Ended() {
			if s.Name() == "seghub.eventrelay.v1.EventRelayService/ReplayDeadLetters" {
				replayReq = s
			}
		}
		return replayReq != nil, "not ended yet"
	})
	in("events.replay", 1, func(s sdktrace.ReadOnlySpan) bool {
		return len(s.Links()) == 1 && replayReq != nil && s.Links()[0].SpanContext.SpanID() == replayReq.SpanContext().SpanID()
	})
	in("sink.deliver", 1, func(s sdktrace.ReadOnlySpan) bool { return spanAttr(s, "delivery.outcome").AsString() == "delivered" })
}
