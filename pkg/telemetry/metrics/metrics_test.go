package metrics

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
)

func newSet(t *testing.T) (*Set, *sdkmetric.ManualReader) {
	t.Helper()
	r := sdkmetric.NewManualReader()
	s, err := New(sdkmetric.NewMeterProvider(sdkmetric.WithReader(r)).Meter("test"))
	if err != nil {
		t.Fatal(err)
	}
	return s, r
}

// gauge returns the values of an int64 gauge or sum by one label's value.
func gauge(t *testing.T, r *sdkmetric.ManualReader, name, label string) map[string]int64 {
	t.Helper()
	var rm metricdata.ResourceMetrics
	if err := r.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	out := map[string]int64{}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if m.Name != name {
				continue
			}
			var points []metricdata.DataPoint[int64]
			switch d := m.Data.(type) {
			case metricdata.Gauge[int64]:
				points = d.DataPoints
			case metricdata.Sum[int64]:
				points = d.DataPoints
			}
			for _, p := range points {
				v, _ := p.Attributes.Value(attribute.Key(label))
				out[v.AsString()] = p.Value
			}
		}
	}
	return out
}

// A connection's gauge is its worst sync's current run of failures: a
// success ends a sync's run, a disabled sync stops counting, and other
// outcomes (a segment made private) leave it as it was.
func TestConsecutiveFailures(t *testing.T) {
	s, r := newSet(t)
	run := func(sync, conn, outcome string) {
		s.RunFinished(SyncRun{SyncID: sync, ConnectionID: conn, DestinationType: "appcues", Outcome: outcome, Duration: time.Second})
	}
	run("s1", "c1", OutcomeFailed)
	run("s1", "c1", OutcomeFailed)
	run("s2", "c1", OutcomeFailed)
	run("s3", "c2", OutcomeFailed)
	run("s3", "c2", "segment_not_public")
	got := gauge(t, r, "seghub.sync.consecutive_failures", "connection_id")
	if got["c1"] != 2 || got["c2"] != 1 {
		t.Fatalf("after failures: %v", got)
	}
	run("s1", "c1", OutcomeSucceeded)
	s.SyncRemoved("s3")
	got = gauge(t, r, "seghub.sync.consecutive_failures", "connection_id")
	if got["c1"] != 1 || len(got) != 1 {
		t.Fatalf("after a success and a removal: %v", got)
	}
}

// The lookup path pays one counter add and builds no labels: no
// allocation per lookup (the serving path is measured in bench/).
func TestLookupsDoNotAllocate(t *testing.T) {
	s, r := newSet(t)
	s.Lookups(LookupMember, 1) // the first add creates the series
	s.Lookups(LookupNotMember, 1)
	if n := testing.AllocsPerRun(1000, func() {
		s.Lookups(LookupMember, 1)
		s.Lookups(LookupNotMember, 3)
	}); n != 0 {
		t.Fatalf("%v allocations per lookup count", n)
	}
	s.Lookups(LookupError, 2)
	got := gauge(t, r, "seghub.targeting.lookups", "result")
	// AllocsPerRun runs the function once more than asked, to warm up.
	if got["member"] != 1+1001 || got["not_member"] != 1+3*1001 || got["error"] != 2 {
		t.Fatalf("lookups counted %v", got)
	}
	var none *Set
	none.Lookups(LookupError, 1) // no metrics: nothing, no panic
}

func BenchmarkLookupCount(b *testing.B) {
	r := sdkmetric.NewManualReader()
	s, err := New(sdkmetric.NewMeterProvider(sdkmetric.WithReader(r)).Meter("bench"))
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.Run("serial", func(b *testing.B) {
		for b.Loop() {
			s.Lookups(LookupMember, 1)
		}
	})
	b.Run("parallel", func(b *testing.B) {
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				s.Lookups(LookupMember, 1)
			}
		})
	})
}

// The lease gauge follows the holder's state at each scrape.
func TestLeaseHeld(t *testing.T) {
	s, r := newSet(t)
	var held atomic.Bool
	if err := s.ObserveLease("segmentsync/computed", "host/a", held.Load); err != nil {
		t.Fatal(err)
	}
	if g := gauge(t, r, "seghub.lease.held", "holder"); g["host/a"] != 0 || len(g) != 1 {
		t.Fatalf("standing by: %v, want host/a at 0", g)
	}
	held.Store(true)
	if g := gauge(t, r, "seghub.lease.held", "lease"); g["segmentsync/computed"] != 1 {
		t.Fatalf("holding: %v, want segmentsync/computed at 1", g)
	}
}
