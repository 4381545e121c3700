package relay

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math/rand/v2"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/trace"

	connectorv1 "github.com/seghub/seghub/gen/seghub/connector/v1"
	"github.com/seghub/seghub/pkg/destinations"
	"github.com/seghub/seghub/pkg/ids"
	"github.com/seghub/seghub/pkg/telemetry/metrics"
	"github.com/seghub/seghub/services/eventrelay/internal/store"
)

// ManagerOptions wire the sinks to the rest of seghub.
type ManagerOptions struct {
	Stream jetstream.Stream
	Layout Layout
	Store  *store.Store
	// Resolve returns a connection with its credentials.
	Resolve func(ctx context.Context, env, connectionID string) (*connectorv1.ResolveConnectionResponse, error)
	// Report marks a connection needs_reauth when a destination refuses it.
	Report func(ctx context.Context, env, connectionID string, st connectorv1.ConnectionStatus, msg string)
	// BaseURL of a destination type's API.
	BaseURL func(typ string) string
	// Egress is the outbound policy adapters send through.
	Egress *destinations.Egress
	// Limiter is the connection's token bucket, shared with every other
	// writer to it (sync runs included).
	Limiter func(connectionID string, t destinations.Type) destinations.Limiter
	// AdapterConfig adjusts adapters (tests shorten retries).
	AdapterConfig func(*destinations.Config)
	MaxAttempts   int
	MaxAge        time.Duration
	Backoff       func(attempt int) time.Duration
	AckWait       time.Duration
	// Metrics counts each sink's deliveries (nil: none).
	Metrics *metrics.Set
	// Tracer records deliveries (nil: the global provider's).
	Tracer trace.Tracer
	Logger *slog.Logger
	// Refresh is how often a sink re-reads its connection (send_events,
	// credentials) and the manager its routes from the store.
	Refresh time.Duration
	// UserProperty reads a user's string property ("" when unset): the
	// identity a destination knows the user by.
	UserProperty func(ctx context.Context, env, user, property string) (string, error)
	// AnalyticsConnections lists env's analytics connections and when each
	// was created: they take source connections' events with no route.
	AnalyticsConnections func(ctx context.Context, env string) (map[string]time.Time, error)
}

// Manager runs one sink per connection that routes point at (analytics
// connections take source connections' events implicitly) and per partition
// this replica owns. Each partition is owned by one replica at a time through
// a lease, so a user's events are delivered by one replica, in order; the
// replicas alive (each renews a member lease) share the partitions evenly,
// and a dead replica's partitions are taken over once its leases lapse.
type Manager struct {
	o      ManagerOptions
	holder string // this replica, in the leases
	ttl    time.Duration

	mu    sync.Mutex
	sinks map[string]*runningSink
	owned map[int]bool
	kick  chan struct{}
	// until is when the leases this replica last renewed may lapse, less a
	// renewal's margin (unix nanoseconds): past it, sinks send nothing new,
	// so a stalled replica stops before another can take its partitions.
	until atomic.Int64
	// held mirrors owned for sinks, which must not wait for mu: a sink of a
	// partition no longer held neither sends nor reopens its consumer (which
	// would rewind it under the new owner).
	held []atomic.Bool
}

// Lease names: a replica's membership, and the ownership of a partition.
const (
	memberLeasePrefix    = "relay/"
	partitionLeasePrefix = "sinks/"
)

func partitionLease(p int) string { return partitionLeasePrefix + strconv.Itoa(p) }

// runningSink is one connection's delivery in this replica: a sink per
// owned partition, sharing the connection's state and senders.
type runningSink struct {
	env, conn string
	dest      *destState
	// budget bounds the events in flight over all this replica's partitions
	// of the connection: a replica delivers a sink with the same
	// concurrency however many partitions it owns, so more replicas add
	// delivery capacity.
	budget *Budget
	parts  map[int]*partSink
	// legacyGone is set once the sink's consumer of the layout before
	// partitions is known not to exist (drained and deleted, or never).
	legacyGone atomic.Bool

	mu  sync.Mutex // guards typ, each part's sink and retired
	typ string
	// retired adds up the counters of partitions this replica delivered
	// before they moved to another replica.
	retired SinkStats
}

// partSink is the sink of one partition.
type partSink struct {
	cancel context.CancelFunc
	done   chan struct{}
	sink   *Sink
}

// NewManager returns a manager; Run starts it.
func NewManager(o ManagerOptions) *Manager {
	if o.Refresh <= 0 {
		o.Refresh = 2 * time.Second
	}
	if o.AckWait <= 0 {
		o.AckWait = 30 * time.Second
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Layout.Partitions < 1 {
		o.Layout.Partitions = DefaultPartitions
	}
	// Renewed every Refresh; lost after a few missed renewals.
	return &Manager{o: o, holder: ids.New("relay"), ttl: max(5*o.Refresh, time.Second), sinks: map[string]*runningSink{}, owned: map[int]bool{},
		kick: make(chan struct{}, 1), held: make([]atomic.Bool, o.Layout.Partitions)}
}

// Kick makes the manager re-read routes now (after a route change here).
func (m *Manager) Kick() {
	select {
	case m.kick <- struct{}{}:
	default:
	}
}

// Run reconciles sinks with routes and with the partitions this replica
// owns until ctx ends.
func (m *Manager) Run(ctx context.Context) error {
	t := time.NewTicker(m.o.Refresh)
	defer t.Stop()
	defer func() {
		m.stopAll()
		bg := context.WithoutCancel(ctx)
		m.mu.Lock()
		owned := m.owned
		m.setOwned(map[int]bool{})
		m.mu.Unlock()
		// Given back at once, so the other replicas take over without
		// waiting for the leases to lapse.
		for p := range owned {
			if err := m.o.Store.ReleaseLease(bg, partitionLease(p), m.holder); err != nil {
				m.o.Logger.Warn("release an event partition lease", "partition", p, "error", err.Error())
			}
		}
		if err := m.o.Store.ReleaseLease(bg, memberLeasePrefix+m.holder, m.holder); err != nil {
			m.o.Logger.Warn("release the event relay member lease", "error", err.Error())
		}
	}()
	for {
		owned, release := m.balance(ctx)
		if err := m.reconcile(ctx, owned); err != nil && ctx.Err() == nil {
			m.o.Logger.Warn("reconcile event sinks", "error", err.Error())
			// Routes unknown: keep delivering what runs, but only partitions still owned.
			m.stopParts(owned)
		}
		// Partitions given up are released once their sinks have stopped.
		for _, p := range release {
			if err := m.o.Store.ReleaseLease(ctx, partitionLease(p), m.holder); err != nil && ctx.Err() == nil {
				m.o.Logger.Warn("release an event partition lease", "partition", p, "error", err.Error())
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		case <-m.kick:
		}
	}
}

// balance renews this replica's membership and partition leases and takes
// or gives up partitions so that each live replica owns about
// partitions/replicas: it returns the partitions to deliver and those to
// release once their sinks stop. An error counts as owning nothing: two
// replicas delivering one partition would break per-user order.
func (m *Manager) balance(ctx context.Context) (map[int]bool, []int) {
	owned := map[int]bool{}
	var release []int
	fail := func(what string, err error) (map[int]bool, []int) {
		if ctx.Err() == nil {
			m.o.Logger.Warn(what, "error", err.Error())
		}
		return map[int]bool{}, nil
	}
	now := time.Now()
	st := m.o.Store
	if _, err := st.AcquireLease(ctx, memberLeasePrefix+m.holder, m.holder, now, m.ttl); err != nil {
		return fail("renew the event relay member lease", err)
	}
	// This replica's partitions, renewed in one statement.
	renewed, err := st.RenewLeases(ctx, partitionLeasePrefix, m.holder, now, m.ttl)
	if err != nil {
		return fail("renew the event partition leases", err)
	}
	leases, err := st.LiveLeases(ctx, now)
	if err != nil {
		return fail("read the event partition leases", err)
	}
	members := 0
	for name := range leases {
		if strings.HasPrefix(name, memberLeasePrefix) {
			members++
		}
	}
	n := m.o.Layout.Partitions
	target := (n + max(members, 1) - 1) / max(members, 1)
	var mine []int
	for _, name := range renewed {
		if p, err := strconv.Atoi(strings.TrimPrefix(name, partitionLeasePrefix)); err == nil && p < n {
			mine = append(mine, p)
		}
	}
	sort.Ints(mine)
	var free []int
	for p := range n {
		if _, ok := leases[partitionLease(p)]; !ok {
			free = append(free, p)
		}
	}
	for _, p := range mine {
		if len(owned) >= target {
			release = append(release, p) // another replica joined: hand it over
			continue
		}
		owned[p] = true
	}
	// Free partitions in a random order, so replicas starting together
	// rarely contend for the same ones.
	rand.Shuffle(len(free), func(i, j int) { free[i], free[j] = free[j], free[i] })
	for _, p := range free {
		if len(owned) >= target {
			break
		}
		ok, err := st.AcquireLease(ctx, partitionLease(p), m.holder, now, m.ttl)
		if err != nil {
			return fail("take an event partition lease", err)
		}
		if ok {
			owned[p] = true
		}
	}
	m.until.Store(now.Add(m.ttl - m.o.Refresh).UnixNano())
	m.mu.Lock()
	before := len(m.owned)
	m.mu.Unlock()
	if len(owned) != before {
		m.o.Logger.Info("event partitions this replica delivers", "holder", m.holder, "partitions", len(owned), "total", n, "replicas", members)
	}
	return owned, release
}

func (m *Manager) reconcile(ctx context.Context, owned map[int]bool) error {
	routes, err := m.o.Store.Routes(ctx, "")
	if err != nil {
		return err
	}
	if routes, err = m.withSourceRoutes(ctx, routes); err != nil {
		return err
	}
	want := map[string][]store.Route{}
	envOf := map[string]string{}
	for _, r := range routes {
		want[r.ConnectionID] = append(want[r.ConnectionID], r)
		envOf[r.ConnectionID] = r.Env
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	var gained []int
	for p := range owned {
		if !m.owned[p] {
			gained = append(gained, p)
		}
	}
	m.setOwned(owned)
	for conn, rs := range m.sinks {
		if _, ok := want[conn]; ok {
			continue
		}
		for p, ps := range rs.parts {
			ps.stop()
			delete(rs.parts, p)
			if p == legacyPartition {
				if err := deleteLegacySinkConsumers(ctx, m.o.Stream, conn); err != nil {
					m.o.Logger.Warn("delete sink consumer", "connection_id", conn, "error", err.Error())
				}
			}
			// The route is gone: so is the partition's consumer (this
			// replica's partitions; each owner removes its own).
			if err := DeleteSinkConsumer(ctx, m.o.Stream, conn, p); err != nil {
				m.o.Logger.Warn("delete sink consumer", "connection_id", conn, "partition", p, "error", err.Error())
			}
		}
		delete(m.sinks, conn)
	}
	for conn, rs := range want {
		s, ok := m.sinks[conn]
		if !ok {
			s = m.newRunningSink(envOf[conn], conn, rs)
			m.sinks[conn] = s
		}
		s.dest.setRoutes(rs)
		for p := range s.parts {
			if !owned[p] {
				s.stopPart(p)
			}
		}
		for p := range owned {
			if s.parts[p] == nil {
				s.parts[p] = m.startPart(ctx, s, p)
			}
		}
	}
	if len(gained) > 0 {
		m.sweep(ctx, want, gained)
	}
	return nil
}

// sweep deletes the consumers of partitions just taken whose sink has no
// route any more (the route went while another replica owned them).
func (m *Manager) sweep(ctx context.Context, want map[string][]store.Route, parts []int) {
	gained := map[int]bool{}
	for _, p := range parts {
		gained[p] = true
	}
	names := m.o.Stream.ConsumerNames(ctx)
	for name := range names.Name() {
		// A consumer of the layout before partitions is not swept: it may
		// hold undelivered events.
		conn, p, ok := parseSinkConsumer(name)
		if !ok || !gained[p] {
			continue
		}
		if _, ok := want[conn]; ok {
			continue
		}
		if err := DeleteSinkConsumer(ctx, m.o.Stream, conn, p); err != nil {
			m.o.Logger.Warn("delete sink consumer", "connection_id", conn, "partition", p, "error", err.Error())
		}
	}
	if err := names.Err(); err != nil && ctx.Err() == nil {
		m.o.Logger.Warn("list sink consumers", "error", err.Error())
	}
}

// withSourceRoutes adds an implicit route to each analytics connection of an
// environment whose source connections forward events, starting when both
// the forwarding and the connection exist.
func (m *Manager) withSourceRoutes(ctx context.Context, routes []store.Route) ([]store.Route, error) {
	if m.o.AnalyticsConnections == nil {
		return routes, nil
	}
	envs, err := m.o.Store.SourceEnvs(ctx)
	if err != nil {
		return nil, err
	}
	for env, since := range envs {
		conns, err := m.o.AnalyticsConnections(ctx, env)
		if err != nil {
			return nil, fmt.Errorf("list analytics connections of %s: %w", env, err)
		}
		for conn, created := range conns {
			start := since
			if created.After(start) {
				start = created
			}
			routes = append(routes, store.Route{Env: env, ConnectionID: conn, Created: start, FromSources: true})
		}
	}
	return routes, nil
}

func (ps *partSink) stop() {
	ps.cancel()
	<-ps.done
}

// stopPart stops partition p's sink, keeping its counters.
func (rs *runningSink) stopPart(p int) {
	ps := rs.parts[p]
	ps.stop()
	delete(rs.parts, p)
	rs.mu.Lock()
	defer rs.mu.Unlock()
	if ps.sink != nil {
		rs.retired = addStats(rs.retired, ps.sink.Stats())
	}
}

// addStats adds b's counters to a; the last error is the latest
// retrying one's.
func addStats(a, b SinkStats) SinkStats {
	a.Delivered += b.Delivered
	a.Filtered += b.Filtered
	a.DeadLettered += b.DeadLettered
	a.RetryingUsers += b.RetryingUsers
	if b.LastDelivery.After(a.LastDelivery) {
		a.LastDelivery = b.LastDelivery
	}
	if b.LastError != "" && (a.LastError == "" || b.RetryingUsers > 0) {
		a.LastError = b.LastError
	}
	return a
}

// stopParts stops the sinks of partitions not in owned.
func (m *Manager) stopParts(owned map[int]bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.setOwned(owned)
	for _, rs := range m.sinks {
		for p := range rs.parts {
			if !owned[p] {
				rs.stopPart(p)
			}
		}
	}
}

func (m *Manager) stopAll() {
	m.mu.Lock()
	defer m.mu.Unlock()
	for conn, rs := range m.sinks {
		for _, ps := range rs.parts {
			ps.stop()
		}
		delete(m.sinks, conn)
	}
}

func (m *Manager) newRunningSink(env, conn string, routes []store.Route) *runningSink {
	rs := &runningSink{env: env, conn: conn, parts: map[int]*partSink{}}
	rs.dest = &destState{m: m, env: env, conn: conn, ids: map[string]cachedID{}}
	rs.dest.setRoutes(routes)
	return rs
}

// startPart runs the sink of one partition in the background, restarting
// it after failures.
func (m *Manager) startPart(parent context.Context, rs *runningSink, p int) *partSink {
	ctx, cancel := context.WithCancel(parent)
	ps := &partSink{cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(ps.done)
		backoff := 500 * time.Millisecond
		for ctx.Err() == nil {
			err := m.runSink(ctx, rs, ps, p)
			if ctx.Err() != nil {
				return
			}
			m.o.Logger.Warn("event sink stopped; restarting", "connection_id", rs.conn, "partition", p, "error", fmt.Sprint(err))
			select {
			case <-ctx.Done():
				return
			case <-time.After(backoff):
			}
			backoff = min(backoff*2, 30*time.Second)
		}
	}()
	return ps
}

func (m *Manager) runSink(ctx context.Context, rs *runningSink, ps *partSink, p int) error {
	if !m.holds(p) {
		return fmt.Errorf("partition %d is not held (its lease is being renewed or has moved)", p)
	}
	if _, err := rs.dest.adapter(ctx); err != nil {
		return err
	}
	// Events stored before partitions go first, so each user's old events
	// precede its new ones.
	if err := m.awaitLegacy(ctx, rs, ps, p); err != nil {
		return err
	}
	c, err := SinkConsumer(ctx, m.o.Stream, m.o.Layout, rs.env, rs.conn, p, rs.dest.since(), m.o.AckWait)
	if err != nil {
		return err
	}
	o := m.sinkOptions(rs, c, func(subject string) (bool, bool) { return m.o.Layout.ForSink(subject, rs.env, rs.conn) },
		func() bool { return m.holds(p) }, m.o.Logger.With("sink", rs.conn, "partition", p))
	s := NewSink(o)
	rs.mu.Lock()
	ps.sink, rs.typ = s, o.Type
	rs.mu.Unlock()
	return s.Run(ctx)
}

// sinkOptions are the options of a sink of rs reading consumer c.
func (m *Manager) sinkOptions(rs *runningSink, c jetstream.Consumer, classify func(string) (bool, bool), active func() bool, logger *slog.Logger) SinkOptions {
	t := rs.dest.typ()
	o := SinkOptions{
		ConnectionID: rs.conn, Type: t.Name, Consumer: c,
		Classify:    classify,
		Accept:      rs.dest.accept,
		Active:      active,
		MaxAttempts: m.o.MaxAttempts, MaxAge: m.o.MaxAge, Backoff: m.o.Backoff, AckWait: m.o.AckWait,
		Logger: logger, Tracer: m.o.Tracer,
		DeadLetter: func(ctx context.Context, e *Envelope, raw []byte, reason string, attempts int, first, dead time.Time) error {
			return m.o.Store.AddDeadLetter(ctx, &store.DeadLetter{Env: rs.env, ConnectionID: rs.conn, EventID: e.ID, Envelope: raw, Reason: reason, Attempts: attempts, FirstAttempt: first, Dead: dead, TraceParent: TraceParent(ctx)})
		},
	}
	o.Metrics = m.o.Metrics.Sink(rs.conn, t.Name)
	if t.Name == "analytics" {
		// One request carries up to 1 000 events of many users.
		o.BatchEvents, o.Senders, o.Deliver = destinations.MaxTrackEvents, 2, rs.dest.deliverBulk
	} else {
		// One request per event: many users in flight, each in order.
		o.BatchEvents, o.Senders, o.Deliver = 64, 4, rs.dest.deliverEach
	}
	rs.mu.Lock()
	if rs.budget == nil {
		rs.budget = NewBudget(o.Senders * o.BatchEvents)
	}
	o.Budget = rs.budget
	rs.mu.Unlock()
	return o
}

// legacyPartition's holder drains a sink's consumer of the layout before
// partitions, so exactly one replica delivers it.
const legacyPartition = 0

// legacyDeliveryLease is the lease a replica of a release before partitions
// held while it delivered: while one holds it, it still delivers the legacy
// consumer (a rolling upgrade), so this release leaves that consumer alone.
const legacyDeliveryLease = "sinks"

// awaitLegacy returns once rs has no consumer of the layout before
// partitions: partition legacyPartition's sink delivers that consumer until
// it is drained and deletes it; the other partitions wait for that.
func (m *Manager) awaitLegacy(ctx context.Context, rs *runningSink, ps *partSink, p int) error {
	for !rs.legacyGone.Load() {
		_, err := m.o.Stream.Consumer(ctx, LegacySinkConsumerName(rs.conn))
		switch {
		case errors.Is(err, jetstream.ErrConsumerNotFound):
			if p == legacyPartition {
				// An upgrade consumer left by a replica that stopped
				// between the two deletions.
				if err := deleteLegacySinkConsumers(ctx, m.o.Stream, rs.conn); err != nil {
					return err
				}
			}
			rs.legacyGone.Store(true)
			continue
		case err != nil:
			return fmt.Errorf("look up sink %s's consumer of the layout before partitions: %w", rs.conn, err)
		}
		if p == legacyPartition {
			leases, err := m.o.Store.LiveLeases(ctx, time.Now())
			if err != nil {
				return fmt.Errorf("read the event leases: %w", err)
			}
			if _, old := leases[legacyDeliveryLease]; !old {
				if err := m.drainLegacy(ctx, rs, ps); err != nil {
					return err
				}
				continue
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(m.o.Refresh):
		}
	}
	return nil
}

// drainLegacy delivers the events of rs's consumer of the layout before
// partitions (through its upgrade consumer) with the same sink code as a
// partition's (retries, dead letters, send_events) until nothing it takes is
// pending or unacknowledged, then deletes both consumers.
func (m *Manager) drainLegacy(ctx context.Context, rs *runningSink, ps *partSink) error {
	st, name := m.o.Stream, upgradeConsumerName(rs.conn)
	c, err := UpgradeConsumer(ctx, st, rs.conn, m.o.AckWait)
	if errors.Is(err, jetstream.ErrConsumerNotFound) {
		return nil // the caller looks again
	}
	if err != nil {
		return fmt.Errorf("open sink consumer %s: %w", name, err)
	}
	si, err := st.Info(ctx)
	if err != nil {
		return fmt.Errorf("events stream: %w", err)
	}
	// Everything stored from now on is partitioned (no replica of the
	// previous release delivers any more): the consumer is drained once it
	// has acknowledged up to here, even as new events keep its filter busy.
	last := si.State.LastSeq
	logger := m.o.Logger.With("sink", rs.conn, "consumer", name)
	o := m.sinkOptions(rs, c, func(subject string) (bool, bool) { return m.o.Layout.ForLegacySink(subject, rs.env, rs.conn) },
		func() bool { return m.holds(legacyPartition) }, logger)
	s := NewSink(o)
	rs.mu.Lock()
	ps.sink, rs.typ = s, o.Type
	rs.mu.Unlock()
	logger.Info("delivering the events stored before partitions first", "up_to_stream_seq", last)
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- s.Run(sctx) }()
	t := time.NewTicker(max(m.o.Refresh/4, 50*time.Millisecond))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			<-done
			return ctx.Err()
		case err := <-done:
			if err == nil {
				err = errConsumerGone
			}
			return fmt.Errorf("sink consumer %s: %w", name, err)
		case <-t.C:
		}
		info, err := c.Info(ctx)
		if err != nil {
			cancel()
			<-done
			return fmt.Errorf("sink consumer %s: %w", name, err)
		}
		if info.NumAckPending > 0 || (info.NumPending > 0 && info.AckFloor.Stream < last) {
			continue
		}
		cancel()
		<-done
		if err := deleteLegacySinkConsumers(ctx, st, rs.conn); err != nil {
			return err
		}
		rs.mu.Lock()
		rs.retired = addStats(rs.retired, s.Stats())
		rs.retired.RetryingUsers = 0
		ps.sink = nil
		rs.mu.Unlock()
		rs.legacyGone.Store(true)
		logger.Info("events stored before partitions delivered; partitioned delivery starts", "delivered", s.Stats().Delivered)
		return nil
	}
}

// active tells whether this replica's leases are surely still its own.
func (m *Manager) active() bool { return time.Now().UnixNano() < m.until.Load() }

// holds tells whether partition p is this replica's to deliver now.
func (m *Manager) holds(p int) bool { return m.held[p].Load() && m.active() }

// setOwned records the partitions owned (with mu held).
func (m *Manager) setOwned(owned map[int]bool) {
	m.owned = owned
	for p := range m.held {
		m.held[p].Store(owned[p])
	}
}

// SinkInfo describes a running sink.
type SinkInfo struct {
	Env, ConnectionID, Type string
	// Stats add up this replica's partitions of the sink.
	Stats SinkStats
	// Partitions this replica delivers.
	Partitions int
}

// Sinks lists the sinks of env running in this replica.
func (m *Manager) Sinks(env string) []SinkInfo {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []SinkInfo
	for _, rs := range m.sinks {
		if rs.env != env {
			continue
		}
		rs.mu.Lock()
		si := SinkInfo{Env: rs.env, ConnectionID: rs.conn, Type: rs.typ, Partitions: len(rs.parts)}
		// Only the retired partitions' counters: their retrying users
		// retry elsewhere now.
		si.Stats = rs.retired
		si.Stats.RetryingUsers = 0
		for _, ps := range rs.parts {
			if ps.sink != nil {
				si.Stats = addStats(si.Stats, ps.sink.Stats())
			}
		}
		rs.mu.Unlock()
		out = append(out, si)
	}
	return out
}

// Backlog is a sink's backlog over all partitions, whichever replica
// delivers them.
func (m *Manager) Backlog(ctx context.Context, connectionID string) (uint64, error) {
	return SinkBacklog(ctx, m.o.Stream, connectionID, m.o.Layout.Partitions)
}

// destState is a sink's view of its connection: routes, send_events and an
// adapter, re-read every Refresh.
type destState struct {
	m         *Manager
	env, conn string

	mu       sync.Mutex
	routes   []store.Route
	read     time.Time
	resolved *connectorv1.ResolveConnectionResponse
	t        destinations.Type
	ad       destinations.Events
	creds    map[string]string
	ids      map[string]cachedID // user → identity at the destination
}

// cachedID is a user's identity at a destination, read at some time.
type cachedID struct {
	id   string
	read time.Time
}

// identityTTL bounds how stale a cached destination identity may be.
const identityTTL = time.Minute

func (d *destState) setRoutes(rs []store.Route) {
	d.mu.Lock()
	d.routes = rs
	d.mu.Unlock()
}

// since is when the sink's first route was created.
func (d *destState) since() time.Time {
	d.mu.Lock()
	defer d.mu.Unlock()
	var t time.Time
	for _, r := range d.routes {
		if t.IsZero() || r.Created.Before(t) {
			t = r.Created
		}
	}
	return t
}

func (d *destState) typ() destinations.Type {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.t
}

// adapter returns the connection's event adapter, re-resolving it when
// stale so credential changes and the send_events toggle are seen.
func (d *destState) adapter(ctx context.Context) (destinations.Events, error) {
	d.mu.Lock()
	fresh := d.ad != nil && time.Since(d.read) < d.m.o.Refresh/2
	ad := d.ad
	d.mu.Unlock()
	if fresh {
		return ad, nil
	}
	rc, err := d.m.o.Resolve(ctx, d.env, d.conn)
	if err != nil {
		if ad != nil {
			return ad, nil // keep delivering with what we have; resolve again soon
		}
		return nil, fmt.Errorf("resolve sink connection %s: %w", d.conn, err)
	}
	t, ok := destinations.Lookup(rc.GetConnection().GetType())
	if !ok || !t.EventsOut {
		return nil, fmt.Errorf("connection %s (%s) takes no events", d.conn, rc.GetConnection().GetType())
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	d.read, d.resolved, d.t = time.Now(), rc, t
	if d.ad == nil || !maps.Equal(d.creds, rc.GetCredentials()) {
		cfg := destinations.Config{BaseURL: d.m.o.BaseURL(t.Name), Credentials: rc.GetCredentials(), Egress: d.m.o.Egress, MaxAttempts: 3, MaxBackoff: 2 * time.Second, Observer: d.m.o.Metrics}
		if d.m.o.Limiter != nil {
			cfg.Limiter = d.m.o.Limiter(d.conn, t)
		}
		if d.m.o.AdapterConfig != nil {
			d.m.o.AdapterConfig(&cfg)
		}
		a, err := destinations.New(t.Name, cfg)
		if err != nil {
			return nil, err
		}
		ev, ok := a.(destinations.Events)
		if !ok {
			return nil, fmt.Errorf("%s has no track API", t.DisplayName)
		}
		d.ad, d.creds = ev, rc.GetCredentials()
	}
	return d.ad, nil
}

// accept: the event's source let it flow on, a route takes it, and — for a
// destination rather than analytics — the destination's send_events is on.
func (d *destState) accept(e *Envelope) bool {
	if !e.Forward || e.Env != d.env {
		return false
	}
	d.mu.Lock()
	routed := false
	for _, r := range d.routes {
		if r.FromSources && e.Conn == "" {
			continue // the implicit route takes only source connections' events
		}
		if r.Matches(e.Source, e.Name) {
			routed = true
			break
		}
	}
	d.mu.Unlock()
	if !routed {
		return false
	}
	if _, err := d.adapter(context.Background()); err != nil {
		return true // unknown yet: deliver, and let delivery retry
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.t.Name == "analytics" || d.resolved.GetConnection().GetSettings().GetSendEvents()
}

// toEvent is e as the destination receives it: under the name of the first
// route that takes it and renames it, else its own.
func (d *destState) toEvent(e *Envelope) destinations.Event {
	name := e.Name
	d.mu.Lock()
	for _, r := range d.routes {
		if r.DeliverAs != "" && r.Matches(e.Source, e.Name) {
			name = r.DeliverAs
			break
		}
	}
	d.mu.Unlock()
	return destinations.Event{ID: e.ID, Identity: e.User, Name: name, Timestamp: time.UnixMicro(e.Time), Properties: e.Props}
}

// failure turns a delivery error into a Result, reporting refused credentials.
func (d *destState) failure(ctx context.Context, err error, delivered int, isolate bool) Result {
	r := Result{Delivered: delivered, Err: err}
	var de *destinations.Error
	if errors.As(err, &de) {
		r.RetryAfter = de.RetryAfter
		switch de.Kind {
		case destinations.AuthFailed:
			if d.m.o.Report != nil {
				d.m.o.Report(ctx, d.env, d.conn, connectorv1.ConnectionStatus_CONNECTION_STATUS_NEEDS_REAUTH, "event delivery: "+de.Error())
			}
		case destinations.Permanent:
			r.Isolate = isolate
		}
	}
	return r
}

// deliverBulk sends the whole batch in one request: all or nothing, made
// safe to repeat by each event's idempotency key.
func (d *destState) deliverBulk(ctx context.Context, batch []UserEvents) []Result {
	res := make([]Result, len(batch))
	ad, err := d.adapter(ctx)
	if err == nil {
		var evs []destinations.Event
		for _, ue := range batch {
			for _, e := range ue.Events {
				evs = append(evs, d.toEvent(e))
			}
		}
		err = ad.Track(ctx, evs)
	}
	for i, ue := range batch {
		if err == nil {
			res[i].Delivered = len(ue.Events)
			continue
		}
		res[i] = d.failure(ctx, err, 0, len(batch) > 1 || len(ue.Events) > 1)
	}
	return res
}

// identity is who the destination knows the event's user as: the Appcues
// id an Appcues event carried, else the user's identity property (the
// connection's, or the type's default), else the user id.
func (d *destState) identity(ctx context.Context, e *Envelope) (string, error) {
	if e.AppcuesUserID != "" && d.typ().Name == "appcues" {
		return e.AppcuesUserID, nil
	}
	d.mu.Lock()
	prop := d.resolved.GetConnection().GetSettings().GetIdentityProperty()
	if prop == "" {
		prop = d.t.DefaultIdentity
	}
	c, ok := d.ids[e.User]
	d.mu.Unlock()
	if prop == "" || prop == "user_id" || d.m.o.UserProperty == nil {
		return e.User, nil
	}
	if ok && time.Since(c.read) < identityTTL {
		return c.id, nil
	}
	id, err := d.m.o.UserProperty(ctx, d.env, e.User, prop)
	if err != nil {
		return "", fmt.Errorf("read %s of user %s: %w", prop, e.User, err)
	}
	if id == "" {
		id = e.User
	}
	d.mu.Lock()
	if len(d.ids) > 100_000 {
		clear(d.ids)
	}
	d.ids[e.User] = cachedID{id: id, read: time.Now()}
	d.mu.Unlock()
	return id, nil
}

// deliverEach sends each user's events one request at a time, users in
// parallel; a user stops at its first failure so its order holds.
func (d *destState) deliverEach(ctx context.Context, batch []UserEvents) []Result {
	res := make([]Result, len(batch))
	ad, err := d.adapter(ctx)
	if err != nil {
		for i := range res {
			res[i] = d.failure(ctx, err, 0, false)
		}
		return res
	}
	var wg sync.WaitGroup
	for i, ue := range batch {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j, e := range ue.Events {
				ev := d.toEvent(e)
				ectx := eventContext(ctx, e)
				id, err := d.identity(ectx, e)
				if err == nil {
					ev.Identity = id
					err = ad.Track(ectx, []destinations.Event{ev})
				}
				if err != nil {
					res[i] = d.failure(ctx, err, j, false)
					return
				}
			}
			res[i].Delivered = len(ue.Events)
		}()
	}
	wg.Wait()
	return res
}

// SinkStates reads each running sink's backlog and lag over the partitions
// this replica delivers (for the gauges, which add up over replicas; a sink
// whose consumers cannot be read is left out).
func (m *Manager) SinkStates(ctx context.Context) []metrics.SinkState {
	type sinkRef struct {
		env, conn, typ string
		parts          []int
	}
	m.mu.Lock()
	refs := make([]sinkRef, 0, len(m.sinks))
	for _, rs := range m.sinks {
		rs.mu.Lock()
		r := sinkRef{env: rs.env, conn: rs.conn, typ: rs.typ}
		for p, ps := range rs.parts {
			if ps.sink != nil {
				r.parts = append(r.parts, p)
			}
		}
		rs.mu.Unlock()
		if len(r.parts) > 0 {
			refs = append(refs, r)
		}
	}
	m.mu.Unlock()
	now := time.Now()
	out := make([]metrics.SinkState, 0, len(refs))
refs:
	for _, r := range refs {
		s := metrics.SinkState{ID: r.conn, DestinationType: r.typ}
		for _, p := range r.parts {
			backlog, lag, err := SinkLag(ctx, m.o.Stream, m.o.Layout, r.env, r.conn, p, now)
			if err != nil {
				if ctx.Err() == nil {
					m.o.Logger.Warn("read a sink's backlog for metrics", "sink", r.conn, "partition", p, "error", err.Error())
				}
				continue refs
			}
			s.Backlog += backlog
			s.Lag = max(s.Lag, lag)
		}
		out = append(out, s)
	}
	return out
}
