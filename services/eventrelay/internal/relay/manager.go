package relay

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"sync"
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
// connections take source connections' events implicitly), in the one
// replica that holds the delivery lease.
type Manager struct {
	o      ManagerOptions
	holder string // this replica, in the lease
	ttl    time.Duration

	mu      sync.Mutex
	sinks   map[string]*runningSink
	kick    chan struct{}
	leading bool
}

// deliveryLease is the lease a replica holds while it delivers.
const deliveryLease = "sinks"

type runningSink struct {
	env, conn string
	routes    []store.Route
	cancel    context.CancelFunc
	done      chan struct{}
	sink      *Sink
	typ       string
	dest      *destState
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
	// Renewed every Refresh; lost after a few missed renewals.
	return &Manager{o: o, holder: ids.New("relay"), ttl: max(5*o.Refresh, time.Second), sinks: map[string]*runningSink{}, kick: make(chan struct{}, 1)}
}

// Kick makes the manager re-read routes now (after a route change here).
func (m *Manager) Kick() {
	select {
	case m.kick <- struct{}{}:
	default:
	}
}

// Run reconciles sinks with routes until ctx ends, while this replica holds
// the delivery lease; other replicas only ingest, and take over when the
// holder stops renewing.
func (m *Manager) Run(ctx context.Context) error {
	t := time.NewTicker(m.o.Refresh)
	defer t.Stop()
	defer func() {
		m.stopAll()
		if err := m.o.Store.ReleaseLease(context.WithoutCancel(ctx), deliveryLease, m.holder); err != nil {
			m.o.Logger.Warn("release the event delivery lease", "error", err.Error())
		}
	}()
	for {
		if !m.lead(ctx) {
			m.stopAll()
		} else if err := m.reconcile(ctx); err != nil && ctx.Err() == nil {
			m.o.Logger.Warn("reconcile event sinks", "error", err.Error())
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		case <-m.kick:
		}
	}
}

// lead takes or renews the delivery lease and reports whether this replica
// delivers. An error counts as not holding it: two deliverers would break
// per-user order.
func (m *Manager) lead(ctx context.Context) bool {
	ok, err := m.o.Store.AcquireLease(ctx, deliveryLease, m.holder, time.Now(), m.ttl)
	if err != nil && ctx.Err() == nil {
		m.o.Logger.Warn("renew the event delivery lease", "error", err.Error())
	}
	m.mu.Lock()
	changed := ok != m.leading
	m.leading = ok
	m.mu.Unlock()
	if changed && ok {
		m.o.Logger.Info("this replica delivers events to sinks", "holder", m.holder)
	} else if changed {
		m.o.Logger.Info("another replica delivers events to sinks", "holder", m.holder)
	}
	return ok
}

func (m *Manager) reconcile(ctx context.Context) error {
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
	for conn, rs := range m.sinks {
		if _, ok := want[conn]; !ok {
			rs.cancel()
			<-rs.done
			delete(m.sinks, conn)
			if err := DeleteSinkConsumer(ctx, m.o.Stream, conn); err != nil {
				m.o.Logger.Warn("delete sink consumer", "connection_id", conn, "error", err.Error())
			}
		}
	}
	for conn, rs := range want {
		if s, ok := m.sinks[conn]; ok {
			s.dest.setRoutes(rs)
			continue
		}
		m.sinks[conn] = m.start(ctx, envOf[conn], conn, rs)
	}
	return nil
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

func (m *Manager) stopAll() {
	m.mu.Lock()
	defer m.mu.Unlock()
	for conn, rs := range m.sinks {
		rs.cancel()
		<-rs.done
		delete(m.sinks, conn)
	}
}

// start runs a sink in the background, restarting it after failures.
func (m *Manager) start(parent context.Context, env, conn string, routes []store.Route) *runningSink {
	ctx, cancel := context.WithCancel(parent)
	rs := &runningSink{env: env, conn: conn, cancel: cancel, done: make(chan struct{})}
	rs.dest = &destState{m: m, env: env, conn: conn, ids: map[string]cachedID{}}
	rs.dest.setRoutes(routes)
	go func() {
		defer close(rs.done)
		backoff := 500 * time.Millisecond
		for ctx.Err() == nil {
			err := m.runSink(ctx, rs)
			if ctx.Err() != nil {
				return
			}
			m.o.Logger.Warn("event sink stopped; restarting", "connection_id", conn, "error", fmt.Sprint(err))
			select {
			case <-ctx.Done():
				return
			case <-time.After(backoff):
			}
			backoff = min(backoff*2, 30*time.Second)
		}
	}()
	return rs
}

func (m *Manager) runSink(ctx context.Context, rs *runningSink) error {
	if _, err := rs.dest.adapter(ctx); err != nil {
		return err
	}
	c, err := SinkConsumer(ctx, m.o.Stream, m.o.Layout, rs.env, rs.conn, rs.dest.since(), m.o.AckWait)
	if err != nil {
		return err
	}
	t := rs.dest.typ()
	o := SinkOptions{
		ConnectionID: rs.conn, Type: t.Name, Consumer: c,
		Classify:    func(subject string) (bool, bool) { return m.o.Layout.ForSink(subject, rs.env, rs.conn) },
		Accept:      rs.dest.accept,
		MaxAttempts: m.o.MaxAttempts, MaxAge: m.o.MaxAge, Backoff: m.o.Backoff, AckWait: m.o.AckWait,
		Logger: m.o.Logger.With("sink", rs.conn), Tracer: m.o.Tracer,
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
	s := NewSink(o)
	m.mu.Lock()
	rs.sink, rs.typ = s, t.Name
	m.mu.Unlock()
	return s.Run(ctx)
}

// SinkInfo describes a running sink.
type SinkInfo struct {
	Env, ConnectionID, Type string
	Stats                   SinkStats
}

// Sinks lists the running sinks of env.
func (m *Manager) Sinks(env string) []SinkInfo {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []SinkInfo
	for _, rs := range m.sinks {
		if rs.env != env {
			continue
		}
		si := SinkInfo{Env: rs.env, ConnectionID: rs.conn, Type: rs.typ}
		if rs.sink != nil {
			si.Stats = rs.sink.Stats()
		}
		out = append(out, si)
	}
	return out
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

// SinkStates reads each running sink's backlog and lag from its consumer
// (for the gauges; a sink whose consumer cannot be read is left out).
func (m *Manager) SinkStates(ctx context.Context) []metrics.SinkState {
	type sinkRef struct{ env, conn, typ string }
	m.mu.Lock()
	refs := make([]sinkRef, 0, len(m.sinks))
	for _, rs := range m.sinks {
		if rs.sink != nil {
			refs = append(refs, sinkRef{rs.env, rs.conn, rs.typ})
		}
	}
	m.mu.Unlock()
	now := time.Now()
	out := make([]metrics.SinkState, 0, len(refs))
	for _, r := range refs {
		backlog, lag, err := SinkLag(ctx, m.o.Stream, m.o.Layout, r.env, r.conn, now)
		if err != nil {
			if ctx.Err() == nil {
				m.o.Logger.Warn("read a sink's backlog for metrics", "sink", r.conn, "error", err.Error())
			}
			continue
		}
		out = append(out, metrics.SinkState{ID: r.conn, DestinationType: r.typ, Backlog: backlog, Lag: lag})
	}
	return out
}
