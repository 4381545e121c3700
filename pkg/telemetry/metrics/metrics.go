// Package metrics holds seghub's domain metrics: what an operator asks first
// (which syncs fail, which destination is slow or rate-limiting, how far
// behind each sink is, how stale a replica is), one Set per process.
//
// Names follow Prometheus conventions once exported (`seghub_` prefix,
// `_total` counters, `_seconds` durations). Labels stay low-cardinality:
// destination type, outcome and result words, and connection or sink ids
// only for connections seghub knows (never an id from unauthenticated input).
// Every method is safe on a nil receiver, so code built without metrics
// (unit tests, benchmarks) calls them unconditionally.
package metrics

import (
	"context"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
)

// Sync run outcomes (the run's final status).
const (
	OutcomeSucceeded = "succeeded"
	OutcomePartial   = "partial"
	OutcomeFailed    = "failed"
)

// Rate-limit wait reasons.
const (
	WaitBucket     = "bucket"      // the connection's shared token bucket
	WaitRetryAfter = "retry_after" // a destination's 429/503 Retry-After
)

// Set is one process's domain instruments.
type Set struct {
	meter metric.Meter

	syncRuns       metric.Int64Counter
	syncIdentities metric.Int64Counter
	syncDuration   metric.Float64Histogram

	destRequests metric.Int64Counter
	destDuration metric.Float64Histogram
	destWait     metric.Float64Counter

	eventsIngested     metric.Int64Counter
	eventsRejected     metric.Int64Counter
	eventsDelivered    metric.Int64Counter
	eventsRetried      metric.Int64Counter
	eventsDeadLettered metric.Int64Counter
	deliveryLag        metric.Float64Histogram

	inbound metric.Int64Counter

	// Lookups are counted in plain atomics (the serving hot path) and read
	// by an observable counter at scrape time.
	lookups   [3]paddedCount
	lookupOpt [3][]metric.ObserveOption

	mu     sync.Mutex
	streak map[string]syncStreak // sync id → consecutive failed runs
}

// paddedCount keeps each lookup result's counter on its own cache line, so
// cores counting different results do not contend.
type paddedCount struct {
	n atomic.Int64
	_ [56]byte
}

type syncStreak struct {
	destType, connection string
	failed               int64
}

// New creates the instruments on meter.
func New(meter metric.Meter) (*Set, error) {
	s := &Set{meter: meter, streak: map[string]syncStreak{}}
	var err error
	counter := func(name, desc string) metric.Int64Counter {
		if err != nil {
			return nil
		}
		var c metric.Int64Counter
		c, err = meter.Int64Counter(name, metric.WithDescription(desc))
		return c
	}
	s.syncRuns = counter("seghub.sync.runs", "Finished sync runs by destination type and outcome (succeeded, partial, failed, segment_not_public)")
	s.syncIdentities = counter("seghub.sync.identities", "Identities of finished sync runs by destination type and result (added, removed, unmatched, failed)")
	s.destRequests = counter("seghub.destination.requests", "HTTP requests to destinations by type, status class (2xx, 4xx, 5xx, error) and code")
	s.eventsIngested = counter("seghub.events.ingested", "Events stored in JetStream (duplicates not counted)")
	s.eventsRejected = counter("seghub.events.rejected", "Events refused at ingestion, by source and the field class that failed")
	s.eventsDelivered = counter("seghub.events.delivered", "Events delivered per sink")
	s.eventsRetried = counter("seghub.events.retried", "Event deliveries that failed and will be retried, per sink")
	s.eventsDeadLettered = counter("seghub.events.dead_lettered", "Events given up on (after the attempts and the window) and recorded as dead letters, per sink")
	s.inbound = counter("seghub.inbound.requests", "Inbound segment webhook pages per source connection and result (accepted, rejected, malformed, refused)")
	if err != nil {
		return nil, err
	}
	seconds := func(name, desc string, bounds ...float64) metric.Float64Histogram {
		if err != nil {
			return nil
		}
		var h metric.Float64Histogram
		h, err = meter.Float64Histogram(name, metric.WithUnit("s"), metric.WithDescription(desc), metric.WithExplicitBucketBoundaries(bounds...))
		return h
	}
	s.syncDuration = seconds("seghub.sync.run.duration", "Wall time of a finished sync run, by destination type and outcome",
		0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900, 3600)
	s.destDuration = seconds("seghub.destination.request.duration", "Duration of one HTTP request to a destination (one attempt), by type",
		0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
	s.deliveryLag = seconds("seghub.events.delivery_lag", "Time from ingest to delivery",
		0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
	if err != nil {
		return nil, err
	}
	if s.destWait, err = meter.Float64Counter("seghub.destination.rate_limit.wait", metric.WithUnit("s"),
		metric.WithDescription("Time requests to destinations spent waiting on rate limits, by type and reason (bucket: the connection's token bucket; retry_after: the destination's Retry-After)")); err != nil {
		return nil, err
	}
	for i, r := range []string{"member", "not_member", "error"} {
		s.lookupOpt[i] = []metric.ObserveOption{metric.WithAttributeSet(attribute.NewSet(attribute.String("result", r)))}
	}
	if _, err = meter.Int64ObservableCounter("seghub.targeting.lookups",
		metric.WithDescription("Membership lookups answered by this replica by result (member, not_member, error)"),
		metric.WithInt64Callback(func(_ context.Context, o metric.Int64Observer) error {
			for i := range s.lookups {
				if n := s.lookups[i].n.Load(); n > 0 {
					o.Observe(n, s.lookupOpt[i]...)
				}
			}
			return nil
		})); err != nil {
		return nil, err
	}
	if _, err = meter.Int64ObservableGauge("seghub.sync.consecutive_failures",
		metric.WithDescription("Longest current run of consecutive failed runs among a connection's syncs (as seen by this process since it started)"),
		metric.WithInt64Callback(s.observeStreaks)); err != nil {
		return nil, err
	}
	return s, nil
}

// SyncRun is a finished sync run, for metrics.
type SyncRun struct {
	SyncID, ConnectionID, DestinationType string
	// Outcome is the run's final status.
	Outcome                           string
	Duration                          time.Duration
	Added, Removed, Unmatched, Failed int64
}

// RunFinished counts a finished sync run.
func (s *Set) RunFinished(r SyncRun) {
	if s == nil {
		return
	}
	s.mu.Lock()
	switch r.Outcome {
	case OutcomeFailed:
		st := s.streak[r.SyncID]
		st.destType, st.connection = r.DestinationType, r.ConnectionID
		st.failed++
		s.streak[r.SyncID] = st
	case OutcomeSucceeded, OutcomePartial:
		delete(s.streak, r.SyncID)
	}
	s.mu.Unlock()
	ctx := context.Background()
	dest := attribute.String("destination_type", r.DestinationType)
	s.syncDuration.Record(ctx, r.Duration.Seconds(), metric.WithAttributes(dest, attribute.String("outcome", r.Outcome)))
	for _, c := range []struct {
		result string
		n      int64
	}{{"added", r.Added}, {"removed", r.Removed}, {"unmatched", r.Unmatched}, {"failed", r.Failed}} {
		if c.n > 0 {
			s.syncIdentities.Add(ctx, c.n, metric.WithAttributes(dest, attribute.String("result", c.result)))
		}
	}
	// Last: whoever sees the run counted sees the rest of it.
	s.syncRuns.Add(ctx, 1, metric.WithAttributes(dest, attribute.String("outcome", r.Outcome)))
}

// SyncRemoved forgets a removed sync's failures.
func (s *Set) SyncRemoved(syncID string) {
	if s == nil {
		return
	}
	s.mu.Lock()
	delete(s.streak, syncID)
	s.mu.Unlock()
}

func (s *Set) observeStreaks(_ context.Context, o metric.Int64Observer) error {
	type key struct{ typ, conn string }
	s.mu.Lock()
	worst := map[key]int64{}
	for _, st := range s.streak {
		k := key{st.destType, st.connection}
		worst[k] = max(worst[k], st.failed)
	}
	s.mu.Unlock()
	for k, n := range worst {
		o.Observe(n, metric.WithAttributes(attribute.String("destination_type", k.typ), attribute.String("connection_id", k.conn)))
	}
	return nil
}

// DestinationRequest counts one HTTP attempt to a destination: status is
// the HTTP status, or 0 when no answer came (err set).
func (s *Set) DestinationRequest(destType string, status int, d time.Duration) {
	if s == nil {
		return
	}
	class, code := "error", "none"
	if status > 0 {
		class, code = strconv.Itoa(status/100)+"xx", strconv.Itoa(status)
	}
	ctx := context.Background()
	dest := attribute.String("destination_type", destType)
	s.destRequests.Add(ctx, 1, metric.WithAttributes(dest, attribute.String("status_class", class), attribute.String("code", code)))
	s.destDuration.Record(ctx, d.Seconds(), metric.WithAttributes(dest))
}

// RateLimitWait adds time a request to destType waited for reason.
func (s *Set) RateLimitWait(destType, reason string, d time.Duration) {
	if s == nil || d <= 0 {
		return
	}
	s.destWait.Add(context.Background(), d.Seconds(), metric.WithAttributes(attribute.String("destination_type", destType), attribute.String("reason", reason)))
}

// EventsIngested counts n events of source stored.
func (s *Set) EventsIngested(source string, n int) {
	if s == nil || n <= 0 {
		return
	}
	s.eventsIngested.Add(context.Background(), int64(n), metric.WithAttributes(attribute.String("source", source)))
}

// EventRejected counts an event of source refused for a field class.
func (s *Set) EventRejected(source, class string) {
	if s == nil {
		return
	}
	s.eventsRejected.Add(context.Background(), 1, metric.WithAttributes(attribute.String("source", source), attribute.String("reason", class)))
}

// Sink is one sink's labels, built once per running sink.
type Sink struct {
	s    *Set
	opts []metric.AddOption
	rec  []metric.RecordOption
}

// Sink returns the instruments of sink connection id of destType.
func (s *Set) Sink(id, destType string) *Sink {
	if s == nil {
		return nil
	}
	set := attribute.NewSet(attribute.String("sink", id), attribute.String("destination_type", destType))
	return &Sink{s: s, opts: []metric.AddOption{metric.WithAttributeSet(set)}, rec: []metric.RecordOption{metric.WithAttributeSet(set)}}
}

// Delivered counts an event delivered received ago.
func (k *Sink) Delivered(received time.Time) {
	if k == nil {
		return
	}
	k.s.deliveryLag.Record(context.Background(), time.Since(received).Seconds(), k.rec...)
	k.s.eventsDelivered.Add(context.Background(), 1, k.opts...)
}

// Retried counts n events whose delivery failed and will be retried.
func (k *Sink) Retried(n int) {
	if k == nil || n <= 0 {
		return
	}
	k.s.eventsRetried.Add(context.Background(), int64(n), k.opts...)
}

// DeadLettered counts an event recorded as a dead letter.
func (k *Sink) DeadLettered() {
	if k == nil {
		return
	}
	k.s.eventsDeadLettered.Add(context.Background(), 1, k.opts...)
}

// InboundPage counts an inbound segment webhook page of connection with
// result (UnknownConnection-style placeholders for unauthenticated ids).
func (s *Set) InboundPage(connection, result string) {
	if s == nil {
		return
	}
	s.inbound.Add(context.Background(), 1, metric.WithAttributes(attribute.String("connection_id", connection), attribute.String("result", result)))
}

// Lookup results.
const (
	LookupMember    = 0
	LookupNotMember = 1
	LookupError     = 2
)

// Lookups counts n lookups with result (LookupMember, LookupNotMember,
// LookupError): one atomic add; labels are built once, in New.
func (s *Set) Lookups(result, n int) {
	if s == nil || n <= 0 {
		return
	}
	s.lookups[result].n.Add(int64(n))
}

// SinkState is one sink's backlog as a scrape sees it.
type SinkState struct {
	ID, DestinationType string
	// Backlog is events not yet delivered (pending plus in flight).
	Backlog int64
	// Lag is the age of the oldest undelivered event (0 when none).
	Lag time.Duration
}

// ObserveSinks registers the per-sink backlog and lag gauges, read from
// states at each scrape.
func (s *Set) ObserveSinks(states func(ctx context.Context) []SinkState) error {
	backlog, err := s.meter.Int64ObservableGauge("seghub.sink.backlog",
		metric.WithDescription("Events waiting for a sink: not delivered yet or in flight (from its JetStream consumer)"))
	if err != nil {
		return err
	}
	lag, err := s.meter.Float64ObservableGauge("seghub.sink.lag", metric.WithUnit("s"),
		metric.WithDescription("Age of the oldest event a sink has not delivered yet (0 when it is caught up)"))
	if err != nil {
		return err
	}
	_, err = s.meter.RegisterCallback(func(ctx context.Context, o metric.Observer) error {
		for _, st := range states(ctx) {
			attrs := metric.WithAttributes(attribute.String("sink", st.ID), attribute.String("destination_type", st.DestinationType))
			o.ObserveInt64(backlog, st.Backlog, attrs)
			o.ObserveFloat64(lag, st.Lag.Seconds(), attrs)
		}
		return nil
	}, backlog, lag)
	return err
}

// ObserveReauth registers the gauge of connections needing re-authorisation
// per destination type, counted by count at each scrape.
func (s *Set) ObserveReauth(count func(ctx context.Context) (map[string]int64, error)) error {
	_, err := s.meter.Int64ObservableGauge("seghub.connections.needing_reauth",
		metric.WithDescription("Connections a destination refused (status needs_reauth), by destination type"),
		metric.WithInt64Callback(func(ctx context.Context, o metric.Int64Observer) error {
			byType, err := count(ctx)
			if err != nil {
				return err
			}
			for t, n := range byType {
				o.Observe(n, metric.WithAttributes(attribute.String("destination_type", t)))
			}
			return nil
		}))
	return err
}

// ObserveStaleness registers the replica's index staleness per environment:
// seconds since it last applied a change of the membership feed.
func (s *Set) ObserveStaleness(last func() map[string]time.Time, now func() time.Time) error {
	_, err := s.meter.Float64ObservableGauge("seghub.targeting.index.staleness", metric.WithUnit("s"),
		metric.WithDescription("Seconds since this replica last applied a membership change (or snapshot) of an environment"),
		metric.WithFloat64Callback(func(_ context.Context, o metric.Float64Observer) error {
			t := now()
			for env, at := range last() {
				o.Observe(max(t.Sub(at).Seconds(), 0), metric.WithAttributes(attribute.String("environment", env)))
			}
			return nil
		}))
	return err
}

// ObserveLease registers whether this process holds lease name (1: it does
// the lease's work) or stands by (0), labelled with its holder name: the
// deployment's holder is the series at 1, and no series at 1 means no one
// does the work.
func (s *Set) ObserveLease(name, holder string, held func() bool) error {
	_, err := s.meter.Int64ObservableGauge("seghub.lease.held",
		metric.WithDescription("1 while this process holds the lease and does its work (e.g. the computed-segment evaluator, lease segmentsync/computed), 0 while it stands by"),
		metric.WithInt64Callback(func(_ context.Context, o metric.Int64Observer) error {
			v := int64(0)
			if held() {
				v = 1
			}
			o.Observe(v, metric.WithAttributes(attribute.String("lease", name), attribute.String("holder", holder)))
			return nil
		}))
	return err
}
