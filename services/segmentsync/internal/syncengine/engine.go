// Package syncengine syncs segments to destinations: diff-based (each run
// sends only what the destination lacks or must drop), identity-mapped,
// paced by the connection's shared token bucket, checkpointed after every
// acknowledged batch, scheduled and executed as durable River jobs.
package syncengine

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/RoaringBitmap/roaring/v2"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
	grpccodes "google.golang.org/grpc/codes"

	connectorv1 "github.com/seghub/seghub/gen/seghub/connector/v1"
	"github.com/seghub/seghub/pkg/apperr"
	"github.com/seghub/seghub/pkg/destinations"
	"github.com/seghub/seghub/pkg/ids"
	"github.com/seghub/seghub/pkg/ratelimit"
	"github.com/seghub/seghub/pkg/store"
	"github.com/seghub/seghub/pkg/telemetry/metrics"
	ssstore "github.com/seghub/seghub/services/segmentsync/internal/store"
)

// Connections is what the engine needs from the connector.
type Connections interface {
	Resolve(ctx context.Context, env, connectionID string) (*connectorv1.ResolveConnectionResponse, error)
	Report(ctx context.Context, env, connectionID string, status connectorv1.ConnectionStatus, message string) error
}

// Queue runs sync runs as durable jobs.
type Queue interface {
	// Enqueue queues a run; false when the sync already has one queued or running.
	Enqueue(ctx context.Context, env, syncID, runID string) (bool, error)
	// Takeover queues takeover number n of a run whose worker died.
	Takeover(ctx context.Context, env, syncID, runID string, n int64) (bool, error)
}

// Options configure the engine.
type Options struct {
	// BaseURL returns a destination type's API base URL.
	BaseURL func(destType string) string
	// Egress is the outbound policy adapters send through.
	Egress *destinations.Egress
	Now    func() time.Time
	Logger *slog.Logger
	Tracer trace.Tracer
	// Jitter spreads recurring runs (a share of the interval, default 2 %).
	Jitter float64
	// AdapterConfig adjusts adapter settings (tests shorten retries).
	AdapterConfig func(*destinations.Config)
	// Rate overrides a destination's rate limit (tests make it tight).
	Rate func(t destinations.Type) (perMinute, burst int)
	// RetentionMargin is how long before a destination's retention lapses a
	// recurring sync re-sends its full state (default 3 days).
	RetentionMargin time.Duration
	// RecurringLimit returns a destination type's recurring-sync limit per
	// environment (default: the catalogue's).
	RecurringLimit func(t destinations.Type) int
	// LeaseTTL is how long a run's lease outlives its worker's last renewal
	// (default LeaseTTL); SweepInterval how often lapsed leases are looked
	// for (default SweepInterval).
	LeaseTTL, SweepInterval time.Duration
	// Metrics counts runs, identities and destination requests; nil: none.
	Metrics *metrics.Set
}

// Engine is the sync engine.
type Engine struct {
	st    *Store
	data  *ssstore.Store
	db    *store.DB
	conns Connections
	queue Queue
	o     Options
}

// New returns an engine; SetQueue must be called before runs are queued.
func New(st *Store, data *ssstore.Store, conns Connections, o Options) *Engine {
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Tracer == nil {
		o.Tracer = trace.NewNoopTracerProvider().Tracer("")
	}
	if o.Jitter == 0 {
		o.Jitter = 0.02
	}
	if o.RecurringLimit == nil {
		o.RecurringLimit = func(t destinations.Type) int { return t.RecurringLimit }
	}
	if o.RetentionMargin == 0 {
		o.RetentionMargin = 72 * time.Hour
	}
	if o.LeaseTTL == 0 {
		o.LeaseTTL = LeaseTTL
	}
	if o.SweepInterval == 0 {
		o.SweepInterval = SweepInterval
	}
	data.OnDeleteUser(st.KeepDeletedIdentity)
	return &Engine{st: st, data: data, db: data.DB(), conns: conns, o: o}
}

// SetQueue sets the job queue.
func (e *Engine) SetQueue(q Queue) { e.queue = q }

// Store returns the engine's store.
func (e *Engine) Store() *Store { return e.st }

// EnableRequest describes a new sync.
type EnableRequest struct {
	Env, SegmentID, ConnectionID, IdentityProperty string
	Schedule                                       string
	Interval                                       time.Duration
	Mode                                           string
	// Reset starts an existing sync over: a new frozen name, everything sent again.
	Reset bool
}

func (e *Engine) destination(ctx context.Context, env, connID string) (*connectorv1.ResolveConnectionResponse, destinations.Type, error) {
	conn, err := e.conns.Resolve(ctx, env, connID)
	if err != nil {
		return nil, destinations.Type{}, err
	}
	t, ok := destinations.Lookup(conn.GetConnection().GetType())
	if !ok || !t.SegmentsOut {
		return nil, t, apperr.FailedPrecondition("connection %s (%s) does not receive segments", connID, conn.GetConnection().GetType())
	}
	return conn, t, nil
}

// Enable starts a segment's sync to a connection and queues a run. A
// segment has one sync per connection: a disabled one is resumed with its
// frozen name and what it delivered, so nothing is sent twice and no second
// property appears at the destination; Reset starts it over.
func (e *Engine) Enable(ctx context.Context, r EnableRequest) (*Sync, *Run, error) {
	seg, err := e.data.GetSegment(ctx, r.Env, r.SegmentID, false)
	if err != nil {
		return nil, nil, err
	}
	if seg.Visibility != ssstore.Public {
		return nil, nil, apperr.FailedPrecondition("segment %q is private; only public segments sync to destinations", seg.Name)
	}
	conn, t, err := e.destination(ctx, r.Env, r.ConnectionID)
	if err != nil {
		return nil, nil, err
	}
	from := ""
	if r.IdentityProperty == "" {
		r.IdentityProperty = conn.GetConnection().GetSettings().GetIdentityProperty()
		from = fmt.Sprintf(", the identity property of connection %s's settings", r.ConnectionID)
	}
	if err := e.checkIdentity(ctx, r.Env, r.IdentityProperty, from, t); err != nil {
		return nil, nil, err
	}
	if r.Interval == 0 {
		r.Interval = t.DefaultInterval
	}
	now := e.o.Now().UTC().Truncate(time.Microsecond)
	var s *Sync
	err = e.db.InTx(ctx, func(tx *store.Tx) error {
		old, err := e.st.SyncOf(ctx, tx, r.Env, r.SegmentID, r.ConnectionID)
		if err != nil {
			return err
		}
		if old != nil && old.Enabled && !r.Reset {
			return apperr.AlreadyExists("segment %q already syncs to connection %s as sync %s; change it with UpdateSync, run it with SyncNow, or EnableSync with start_over to begin again", seg.Name, r.ConnectionID, old.ID)
		}
		s = old
		if s == nil {
			s = &Sync{ID: ids.New("sync"), Env: r.Env, SegmentID: r.SegmentID, ConnectionID: r.ConnectionID, DestinationType: t.Name, Created: now}
		}
		s.IdentityProperty, s.Schedule, s.Interval, s.Mode = r.IdentityProperty, r.Schedule, r.Interval, r.Mode
		s.Enabled, s.LastStatus, s.LastError, s.Updated = true, StatusQueued, "", now
		s.NextRun = time.Time{}
		if s.Schedule == Recurring {
			s.NextRun = now.Add(e.spread(s.Interval))
			if err := e.checkLimit(ctx, tx, s, t); err != nil {
				return err
			}
		}
		if old == nil {
			return e.st.CreateSync(ctx, tx, s)
		}
		if r.Reset {
			s.FrozenName, s.FrozenPrefix, s.LastSynced, s.DataExpires = "", "", time.Time{}, time.Time{}
			if err := e.st.ForgetDelivered(ctx, tx, s.ID); err != nil {
				return err
			}
		}
		return e.st.UpdateSync(ctx, tx, s)
	})
	if err != nil {
		return nil, nil, err
	}
	run, err := e.queueRun(ctx, s, TriggerEnable)
	return s, run, err
}

// checkLimit applies the destination's recurring-sync limit, which counts
// per environment and destination type: two Appcues connections share ten.
func (e *Engine) checkLimit(ctx context.Context, q store.Querier, s *Sync, t destinations.Type) error {
	limit := e.o.RecurringLimit(t)
	if limit <= 0 {
		return nil
	}
	n, err := e.st.CountRecurring(ctx, q, s.Env, t.Name, s.ID)
	if err != nil {
		return err
	}
	if n >= limit {
		return apperr.ResourceExhausted("%s allows at most %d recurring syncs at a time per environment, across all its connections: %d of %d in use; use a one-time sync (\"Sync now\") or disable another recurring %s sync", t.DisplayName, limit, n, limit, t.DisplayName)
	}
	return nil
}

// RecurringInUse counts env's enabled recurring syncs to a destination
// type, across its connections: what checkLimit compares with the limit.
func (e *Engine) RecurringInUse(ctx context.Context, env, destType string) (int, error) {
	n, err := e.st.CountRecurring(ctx, e.db, env, destType, "")
	if err != nil {
		return 0, fmt.Errorf("segmentsync: count recurring %s syncs of %s: %w", destType, env, err)
	}
	return n, nil
}

// orphanAfter is how old a queued run must be before queueRun suspects it
// lost its job.
const orphanAfter = time.Minute

// spread returns interval plus a small random jitter.
func (e *Engine) spread(interval time.Duration) time.Duration {
	return interval + time.Duration(rand.Float64()*e.o.Jitter*float64(interval))
}

func (e *Engine) queueRun(ctx context.Context, s *Sync, trigger string) (*Run, error) {
	if e.queue == nil {
		return nil, apperr.Unavailable("the sync job queue is not running")
	}
	// Once a run row exists its job must be queued, or the run marked
	// cancelled, whatever the caller does: a queued run without a job would
	// block the sync for good. So the rest does not follow ctx.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	pending, err := e.st.PendingRun(ctx, s.ID)
	if err != nil {
		return nil, err
	}
	if pending != nil {
		if pending.Status == StatusQueued && e.o.Now().Sub(pending.Created) > orphanAfter {
			// A crash between creating a run and queueing its job leaves a
			// queued run with no job; queueing it again is a no-op otherwise.
			if _, err := e.queue.Enqueue(ctx, s.Env, s.ID, pending.ID); err != nil {
				return nil, err
			}
		}
		return pending, nil
	}
	r := &Run{ID: ids.New("run"), SyncID: s.ID, Env: s.Env, Trigger: trigger, Status: StatusQueued, Created: e.o.Now().UTC()}
	if err := e.st.CreateRun(ctx, r); err != nil {
		return nil, err
	}
	// A duplicate is another run's job: the previous run's, finished but not
	// yet marked completed by River's batched completer, or a concurrent
	// caller's. Retry briefly, then give this run up.
	var inserted bool
	for attempt := 0; attempt < 60 && !inserted; attempt++ {
		if attempt > 0 {
			time.Sleep(50 * time.Millisecond)
		}
		if inserted, err = e.queue.Enqueue(ctx, s.Env, s.ID, r.ID); err != nil {
			break
		}
	}
	if !inserted {
		r.Status, r.Error = StatusCanceled, "another run of this sync is queued or running"
		if err != nil {
			r.Error = "could not queue the run: " + err.Error()
		}
		r.Finished = e.o.Now().UTC()
		if uerr := e.st.UpdateRun(ctx, r); uerr != nil && err == nil {
			err = uerr
		}
		if err != nil {
			return nil, err
		}
	}
	return r, nil
}

// SyncNow queues a run at once.
func (e *Engine) SyncNow(ctx context.Context, env, syncID string) (*Run, error) {
	s, err := e.st.GetSync(ctx, env, syncID)
	if err != nil {
		return nil, err
	}
	if !s.Enabled {
		return nil, apperr.FailedPrecondition("sync %s is disabled; enable it again (EnableSync) to run it", syncID)
	}
	return e.queueRun(ctx, s, TriggerManual)
}

// UpdateRequest lists changes; zero values leave a field as it is.
type UpdateRequest struct {
	Mode, Schedule   string
	Interval         time.Duration
	IdentityProperty *string
}

// Update changes a sync's mode, schedule, interval or identity property.
func (e *Engine) Update(ctx context.Context, env, syncID string, u UpdateRequest) (*Sync, error) {
	s, err := e.st.GetSync(ctx, env, syncID)
	if err != nil {
		return nil, err
	}
	if u.Mode != "" {
		s.Mode = u.Mode
	}
	t, _ := destinations.Lookup(s.DestinationType)
	// An unchanged property passes even if its last holder has left since.
	if u.IdentityProperty != nil && *u.IdentityProperty != s.IdentityProperty {
		if err := e.checkIdentity(ctx, env, *u.IdentityProperty, "", t); err != nil {
			return nil, err
		}
	}
	if u.IdentityProperty != nil {
		s.IdentityProperty = *u.IdentityProperty
	}
	if u.Interval > 0 {
		s.Interval = u.Interval
	}
	becameRecurring := u.Schedule == Recurring && s.Schedule != Recurring
	if u.Schedule != "" {
		s.Schedule = u.Schedule
	}
	err = e.db.InTx(ctx, func(tx *store.Tx) error {
		if becameRecurring && s.Enabled {
			if err := e.checkLimit(ctx, tx, s, t); err != nil {
				return err
			}
		}
		if s.Schedule == Recurring {
			s.NextRun = e.o.Now().UTC().Add(e.spread(s.Interval))
		} else {
			s.NextRun = time.Time{}
		}
		s.Updated = e.o.Now().UTC()
		return e.st.UpdateSync(ctx, tx, s)
	})
	return s, err
}

// Disable stops a sync's schedule. With clearDestination a last run removes
// everything the sync delivered; otherwise the destination keeps what it has.
func (e *Engine) Disable(ctx context.Context, env, syncID string, clearDestination bool) (*Sync, *Run, error) {
	s, err := e.st.GetSync(ctx, env, syncID)
	if err != nil {
		return nil, nil, err
	}
	s.Enabled, s.NextRun, s.Updated = false, time.Time{}, e.o.Now().UTC()
	if err := e.st.UpdateSync(ctx, e.db, s); err != nil {
		return nil, nil, err
	}
	// A disabled sync's past failures no longer call for attention.
	e.o.Metrics.SyncRemoved(s.ID)
	if !clearDestination {
		return s, nil, nil
	}
	run, err := e.queueRun(ctx, s, TriggerDisable)
	return s, run, err
}

// OnSegmentDeleted removes the syncs of a deleted segment with their runs
// and checkpoints, as DeleteSegment documents. The destination keeps what it
// has: the segment is gone, so there is no state to mirror. A run still
// queued finds its sync gone and ends.
func (e *Engine) OnSegmentDeleted(ctx context.Context, env, segmentID string) error {
	syncs, err := e.st.SyncsOfSegment(ctx, env, segmentID)
	if err != nil {
		return err
	}
	err = e.db.InTx(ctx, func(tx *store.Tx) error {
		for _, s := range syncs {
			if err := e.st.DeleteSync(ctx, tx, s.ID); err != nil {
				return err
			}
		}
		return nil
	})
	if err == nil {
		for _, s := range syncs {
			e.o.Metrics.SyncRemoved(s.ID)
		}
	}
	return err
}

// Tick queues the recurring runs that are due. Runs missed while seghub was
// down collapse into one: the next run is scheduled from now, not from the
// missed slot.
func (e *Engine) Tick(ctx context.Context) (int, error) {
	now := e.o.Now().UTC()
	due, err := e.st.DueSyncs(ctx, now)
	if err != nil {
		return 0, err
	}
	queued := 0
	for _, s := range due {
		trigger := TriggerSchedule
		if e.refreshDue(s, now) {
			trigger = TriggerRetention
		}
		s.NextRun, s.Updated = now.Add(e.spread(s.Interval)), now
		if !s.DataExpires.IsZero() && s.DataExpires.Add(-e.o.RetentionMargin).Before(s.NextRun) {
			s.NextRun = s.DataExpires.Add(-e.o.RetentionMargin)
			if s.NextRun.Before(now.Add(time.Minute)) {
				s.NextRun = now.Add(time.Minute)
			}
		}
		if err := e.st.SetNextRun(ctx, e.db, s.ID, s.NextRun, s.Updated); err != nil {
			return queued, err
		}
		if _, err := e.queueRun(ctx, s, trigger); err != nil {
			return queued, err
		}
		queued++
	}
	return queued, nil
}

func (e *Engine) refreshDue(s *Sync, now time.Time) bool {
	return !s.DataExpires.IsZero() && !now.Before(s.DataExpires.Add(-e.o.RetentionMargin))
}

// item is one identity to add or remove.
type item struct {
	dense    uint32
	userID   string
	identity string
	// stored (adds) says the identity held before had a row.
	stored bool
}

// Plan is what a run would send.
type Plan struct {
	Adds, Removes []item
	Unmatched     uint64
	// Members is how many members the full comparison read (0 for quickPlan).
	Members     uint64
	Retry       uint64
	Version     int64
	SegmentName string
	// Quick says the plan read only the users that can have an item.
	Quick bool
	// check is the identity check the plan amounts to: a run that finishes
	// records it for later plans.
	check  *IdentityCheck
	failed map[uint32]FailedIdentity
}

// plan computes the diff between the segment and what the destination
// holds. quick takes quickPlan when the sync's last identity check allows
// it; the plan is the same either way.
func (e *Engine) plan(ctx context.Context, s *Sync, trigger string, quick bool) (*Plan, error) {
	seg, err := e.data.GetSegment(ctx, s.Env, s.SegmentID, true)
	if err != nil {
		return nil, err
	}
	failed, err := e.st.Failed(ctx, s.ID)
	if err != nil {
		return nil, err
	}
	current := seg.Members
	if trigger == TriggerDisable {
		current = roaring.New()
	}
	p := &Plan{Version: seg.Version, SegmentName: seg.Name, failed: failed}
	full := trigger == TriggerRetention
	mirror := s.Mode == Mirror || trigger == TriggerDisable
	held, err := e.st.Held(ctx, s.ID)
	if err != nil {
		return nil, err
	}
	if quick && !full {
		ok, err := e.quickPlan(ctx, p, s, current, held, failed, mirror)
		if err != nil || ok {
			return p, err
		}
	}
	stored, err := e.st.storedIdentities(ctx, s.ID, nil)
	if err != nil {
		return nil, err
	}
	// The log position is read before the values: a user changed while they
	// are read is after it, and rechecked by the next plan.
	seq, err := e.data.Head(ctx, s.Env)
	if err != nil {
		return nil, err
	}
	values, err := e.data.IdentityValues(ctx, s.Env, s.IdentityProperty, current)
	if err != nil {
		return nil, err
	}
	p.Members = current.GetCardinality()
	if n := current.GetCardinality() - current.AndCardinality(held); n > 0 {
		p.Adds = make([]item, 0, n)
	}
	pl := &planner{p: p, held: held, stored: stored, values: values, mirror: mirror, full: full, unverified: roaring.New()}
	it := current.Iterator()
	for it.HasNext() {
		pl.member(it.Next())
	}
	pl.goneAll(roaring.AndNot(held, current))
	if err := e.finishPlan(ctx, s, pl, seq); err != nil {
		return nil, err
	}
	return p, nil
}

// planner compares members' identity values with what the destination holds.
type planner struct {
	p            *Plan
	held         *roaring.Bitmap
	stored       map[uint32]string // identity rows (of held users; others ignored)
	values       map[uint32]ssstore.Identity
	mirror, full bool
	unverified   *roaring.Bitmap
	derive       []int // Removes whose identity is the user's id, read by finishPlan
}

// member plans member d.
func (pl *planner) member(d uint32) {
	p := pl.p
	v, ok := pl.values[d]
	held := pl.held.Contains(d)
	if !ok {
		p.Unmatched++
		if held {
			pl.unverified.Add(d)
			if pl.mirror {
				pl.remove(d, "")
			}
		}
		return
	}
	old, stored := "", false
	if held {
		if old, stored = pl.stored[d]; !stored {
			old = v.UserID
		}
	}
	if held && old == v.Value && !pl.full {
		return
	}
	if held && old != v.Value {
		// A changed identity: drop the old id, send the new one.
		p.Removes = append(p.Removes, item{dense: d, userID: v.UserID, identity: old})
	}
	p.Adds = append(p.Adds, item{dense: d, userID: v.UserID, identity: v.Value, stored: stored})
}

// remove plans the removal of held user d by the identity held.
func (pl *planner) remove(d uint32, userID string) {
	id, ok := pl.stored[d]
	if !ok {
		pl.derive = append(pl.derive, len(pl.p.Removes))
	}
	pl.p.Removes = append(pl.p.Removes, item{dense: d, userID: userID, identity: id})
}

// goneAll plans the users held but no longer members: unconfirmed by this
// comparison (upsert keeps them), removed by a mirror.
func (pl *planner) goneAll(gone *roaring.Bitmap) {
	pl.unverified.Or(gone)
	if !pl.mirror {
		return
	}
	it := gone.Iterator()
	for it.HasNext() {
		pl.remove(it.Next(), "")
	}
}

// finishPlan fills the identities of removals held without a row (the
// user's id) and the plan's identity check as of seq.
func (e *Engine) finishPlan(ctx context.Context, s *Sync, pl *planner, seq int64) error {
	p := pl.p
	if len(pl.derive) > 0 {
		want := roaring.New()
		for _, i := range pl.derive {
			want.Add(p.Removes[i].dense)
		}
		ids, err := e.st.userIDs(ctx, s.Env, want)
		if err != nil {
			return err
		}
		for _, i := range pl.derive {
			id, ok := ids[p.Removes[i].dense]
			if !ok {
				// A deleted user keeps a row (KeepDeletedIdentity): this is a bug.
				return fmt.Errorf("syncengine: sync %s holds user %d whose identity is neither stored nor derivable", s.ID, p.Removes[i].dense)
			}
			p.Removes[i].identity = id
		}
	}
	if len(p.Adds) == 0 {
		p.Adds = nil // preallocated for members that all lacked a value
	}
	p.check = &IdentityCheck{IdentityProperty: s.IdentityProperty, Seq: seq, Unverified: pl.unverified}
	p.Retry = retries(p, p.failed)
	return nil
}

// startCheck is the identity check a run may record before it sends: the
// plan's, with the users it is to remove unconfirmed too, since an attempt
// cut off before their removal leaves them held with an identity that is no
// longer their value. A resumed attempt then plans quickly from it.
func (p *Plan) startCheck() IdentityCheck {
	c := *p.check
	c.Unverified = c.Unverified.Clone()
	for _, x := range p.Removes {
		c.Unverified.Add(x.dense)
	}
	return c
}

// quickPlan fills p as plan's full comparison would, reading identity values
// and stored identities only where the plan can have an item: members not
// held, members held but changed since the sync's last identity check,
// failed or unconfirmed by it, and members held but gone. Every other held
// member still has the value the destination holds, so it adds nothing. It
// returns false when no usable check exists (none yet, another identity
// property, or the change log pruned past it).
func (e *Engine) quickPlan(ctx context.Context, p *Plan, s *Sync, current, held *roaring.Bitmap, failed map[uint32]FailedIdentity, mirror bool) (bool, error) {
	chk, err := e.st.IdentityCheck(ctx, s.ID)
	if err != nil || chk == nil || chk.IdentityProperty != s.IdentityProperty {
		return false, err
	}
	// Read before the changes: the new check covers what they miss.
	seq, err := e.data.Head(ctx, s.Env)
	if err != nil {
		return false, err
	}
	recheck, ok, err := e.data.UsersChangedSince(ctx, s.Env, chk.Seq)
	if err != nil || !ok {
		return false, err
	}
	recheck.Or(chk.Unverified)
	for d := range failed {
		recheck.Add(d)
	}
	heldChanged := roaring.And(roaring.And(current, held), recheck)
	need := roaring.Or(roaring.AndNot(current, held), heldChanged)
	gone := roaring.AndNot(held, current)
	values, err := e.data.IdentityValues(ctx, s.Env, s.IdentityProperty, need)
	if err != nil {
		return false, err
	}
	rows := heldChanged
	if mirror {
		rows = roaring.Or(heldChanged, gone)
	}
	stored, err := e.st.storedIdentities(ctx, s.ID, rows)
	if err != nil {
		return false, err
	}
	p.Quick = true
	pl := &planner{p: p, held: held, stored: stored, values: values, mirror: mirror, unverified: roaring.New()}
	// Members outside need add nothing: walking need alone keeps plan's order.
	it := need.Iterator()
	for it.HasNext() {
		pl.member(it.Next())
	}
	pl.goneAll(gone)
	return true, e.finishPlan(ctx, s, pl, seq)
}

// retries counts the planned items whose last delivery failed.
func retries(p *Plan, failed map[uint32]FailedIdentity) uint64 {
	var n uint64
	for _, lists := range [][]item{p.Adds, p.Removes} {
		for _, x := range lists {
			if _, ok := failed[x.dense]; ok {
				n++
			}
		}
	}
	return n
}

// DryRun computes the next run's diff and sends nothing.
func (e *Engine) DryRun(ctx context.Context, env, syncID string, sample int) (*Plan, error) {
	s, err := e.st.GetSync(ctx, env, syncID)
	if err != nil {
		return nil, err
	}
	trigger := TriggerManual
	if e.refreshDue(s, e.o.Now()) {
		trigger = TriggerRetention
	}
	return e.plan(ctx, s, trigger, true)
}

// Execute performs run runID: plan, send batches, checkpoint after each
// acknowledged batch. A cancelled context (engine stopping) leaves the run
// queued for the job to be retried; the next attempt recomputes the diff
// from the checkpoints, so acknowledged batches are not sent again.
func (e *Engine) Execute(ctx context.Context, runID string) error {
	r, err := e.st.GetRun(ctx, runID)
	if removed(err) {
		return nil // its sync was removed with its segment
	}
	if err != nil {
		return err
	}
	if r.Status != StatusQueued && r.Status != StatusRunning {
		return nil // already finished (a duplicate delivery of the job)
	}
	s, err := e.st.GetSync(ctx, r.Env, r.SyncID)
	if removed(err) {
		return nil
	}
	if err != nil {
		return err
	}
	// One owner per attempt, not per process: a late-rescued job of a run
	// taken over in this same process must not share the taker's lease.
	owner := newOwner()
	held, err := e.st.AcquireLease(ctx, r.ID, owner, e.o.Now(), e.o.LeaseTTL)
	if err != nil {
		return err
	}
	if !held {
		// Another live worker has the run (this is the dead job of a run
		// taken over, rescued late, or a duplicate); it finishes the run.
		return nil
	}
	// Read the run again under the lease: a previous holder whose lease had
	// lapsed could still checkpoint until it was taken, and counters read
	// before that would miss its last batch (which the plan then skips).
	if r, err = e.st.GetRun(ctx, runID); err != nil {
		return err
	}
	if r.Status != StatusQueued && r.Status != StatusRunning {
		return e.st.ReleaseLease(ctx, runID, owner)
	}
	r.LeaseOwner = owner
	ctx, cancelLease := context.WithCancelCause(ctx)
	defer cancelLease(nil)
	go e.holdLease(ctx, cancelLease, r.ID, owner)
	ctx, span := e.o.Tracer.Start(ctx, "sync.run", runSpanOptions(ctx, attribute.String("sync.id", s.ID), attribute.String("run.id", r.ID), attribute.String("destination", s.DestinationType), attribute.String("trigger", r.Trigger))...)
	defer span.End()
	r.TraceID = span.SpanContext().TraceID().String()
	r.Status = StatusRunning
	if r.Started.IsZero() {
		r.Started = e.o.Now().UTC()
	}
	_ = e.st.UpdateRun(ctx, r)
	err = e.execute(ctx, s, r)
	if ctx.Err() != nil {
		if errors.Is(context.Cause(ctx), errLeaseLost) {
			// Taken over: the other worker goes on; nothing of ours is written.
			span.SetStatus(codes.Error, "lease lost")
			return nil
		}
		// Interrupted: the job is retried and resumes from the checkpoints.
		bg := context.WithoutCancel(ctx)
		r.Status = StatusQueued
		_ = e.st.UpdateRun(bg, r)
		_ = e.st.ReleaseLease(bg, r.ID, owner)
		span.SetStatus(codes.Error, "interrupted")
		return ctx.Err()
	}
	r.Finished = e.o.Now().UTC()
	var private *notPublicError
	switch {
	case errors.As(err, &private):
		r.Status, r.Error = StatusSegmentNotPublic, err.Error()
	case err != nil:
		r.Status, r.Error = StatusFailed, err.Error()
		span.SetStatus(codes.Error, err.Error())
	case r.Failed > 0:
		r.Status = StatusPartial
	default:
		r.Status = StatusSucceeded
	}
	span.SetAttributes(attribute.Int64("run.added", int64(r.Added)), attribute.Int64("run.removed", int64(r.Removed)), attribute.Int64("run.unmatched", int64(r.Unmatched)), attribute.Int64("run.failed", int64(r.Failed)))
	err = e.finishRun(context.WithoutCancel(ctx), s, r)
	if errors.Is(err, errLeaseLost) {
		return nil // taken over while finishing: the other worker records the outcome
	}
	if err != nil {
		return err
	}
	e.countRun(s, r)
	return nil
}

// countRun adds a finished run to the metrics (once it is recorded, so a
// retried job does not count it twice).
func (e *Engine) countRun(s *Sync, r *Run) {
	e.o.Metrics.RunFinished(metrics.SyncRun{
		SyncID: s.ID, ConnectionID: s.ConnectionID, DestinationType: s.DestinationType, Outcome: r.Status,
		Duration: r.Finished.Sub(r.Started),
		Added:    int64(r.Added), Removed: int64(r.Removed), Unmatched: int64(r.Unmatched), Failed: int64(r.Failed),
	})
}

// finishRun records a finished run and its sync's outcome in one
// transaction, so no reader sees a finished run beside a sync still queued.
func (e *Engine) finishRun(ctx context.Context, s *Sync, r *Run) error {
	return e.db.InTx(ctx, func(tx *store.Tx) error {
		if err := updateRun(ctx, tx, r); err != nil {
			return err
		}
		return e.finishSync(ctx, tx, s, r)
	})
}

func (e *Engine) finishSync(ctx context.Context, q store.Querier, s *Sync, r *Run) error {
	o := Outcome{Status: r.Status, Error: r.Error, Updated: e.o.Now().UTC()}
	if r.Status == StatusSucceeded || r.Status == StatusPartial {
		o.Synced = r.Finished
		if r.Trigger != TriggerDisable {
			o.FrozenName, o.FrozenPrefix = s.FrozenName, s.FrozenPrefix // kept if the name is frozen already
		}
		if !r.DataExpires.IsZero() {
			o.SetExpires, o.DataExpires = true, r.DataExpires
			// A recurring sync refreshes the destination before its data lapses.
			o.RefreshAt = r.DataExpires.Add(-e.o.RetentionMargin)
		}
		if r.Trigger == TriggerDisable {
			o.SetExpires, o.DataExpires, o.RefreshAt = true, time.Time{}, time.Time{}
		}
	}
	// A removed sync (its segment deleted meanwhile) updates no row.
	return e.st.RecordOutcome(ctx, q, s.ID, o)
}

// removed reports a sync or run that no longer exists (its segment was deleted).
func removed(err error) bool { return err != nil && apperr.Code(err) == grpccodes.NotFound }

// runError ends a run early with a message for its record.
type runError struct{ msg string }

func (e *runError) Error() string { return e.msg }

// notPublicError stops a run for a segment made private after its sync was
// enabled: only public segments leave seghub.
type notPublicError struct{ name string }

func (e *notPublicError) Error() string {
	return fmt.Sprintf("segment %q is no longer public, so nothing was sent; make it public again and the sync resumes with its next run", e.name)
}

func (e *Engine) execute(ctx context.Context, s *Sync, r *Run) error {
	// Clearing the destination (disable) only removes what was sent, so it
	// goes ahead for a private segment too.
	if r.Trigger != TriggerDisable {
		seg, err := e.data.GetSegment(ctx, s.Env, s.SegmentID, false)
		if err != nil {
			return err
		}
		if seg.Visibility != ssstore.Public {
			return &notPublicError{name: seg.Name}
		}
	}
	conn, t, err := e.destination(ctx, s.Env, s.ConnectionID)
	if err != nil {
		return err
	}
	p, err := e.plan(ctx, s, r.Trigger, true)
	if err != nil {
		return err
	}
	r.Unmatched, r.Retried = p.Unmatched, p.Retry
	if !p.Quick {
		// A full comparison of a large segment is the run's costliest read:
		// an attempt resuming after a cut (slice timeout, crash) plans
		// quickly from this check instead of comparing again.
		if err := e.st.SaveIdentityCheck(ctx, s.ID, p.startCheck()); err != nil {
			return err
		}
	}
	if p.Members > 0 && p.Unmatched == p.Members {
		// The AB Tasty document's rule: a segment none of whose members has
		// the destination's identity is not targetable there. The run still
		// goes ahead (a mirror removes what was held) but says why it sent no one.
		r.Error = fmt.Sprintf("no member of the segment's %d has identity property %q, so no one could be sent to %s; attach it to users (POST /v1/users:upsert) or choose another identity_property", p.Members, s.IdentityProperty, t.DisplayName)
	}
	if s.FrozenName == "" {
		// Fixed by the first successful run, the prefix with the name.
		s.FrozenName = p.SegmentName
		s.FrozenPrefix = conn.GetConnection().GetSettings().GetPropertyPrefix()
	}
	perMinute, burst := max(t.RatePerMinute, 1), max(t.RatePerMinute/6, 1)
	if e.o.Rate != nil {
		perMinute, burst = e.o.Rate(t)
	}
	// One bucket per connection, in the shared store: every run and every
	// process writing to this connection draws from it.
	cfg := destinations.Config{BaseURL: e.o.BaseURL(t.Name), Credentials: conn.GetCredentials(), SigningSecret: conn.GetSigningSecret(), Egress: e.o.Egress,
		Limiter: ratelimit.New(e.db, "connection:"+s.ConnectionID, perMinute, burst), Prefix: s.FrozenPrefix, Observer: e.o.Metrics}
	if e.o.AdapterConfig != nil {
		e.o.AdapterConfig(&cfg)
	}
	a, err := destinations.New(t.Name, cfg)
	if err != nil {
		return err
	}
	seg := a.(destinations.Segments)
	size := max(t.BatchSize, 1)
	all := p.changes()
	total := (len(all) + size - 1) / size
	task := taskID(r.ID, s, size, all)
	page := 0
	// Checkpoints are written in order by one writer while the next batch is
	// on its way; a run ends only once every acknowledged batch is recorded.
	cp := newCheckpointer(e.st, s.ID)
	failedNow := roaring.New() // identities this run recorded failed
	defer cp.close()
	// A receiver that applies whole tasks has applied nothing before the
	// task's last page: its pages are checkpointed together at the end, so a
	// cut-off task is sent again whole under a new task id.
	var held []checkpoint
	for i := 0; i < len(all); i += size {
		if err := cp.failed(); err != nil {
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		page++
		chunk := all[i:min(i+size, len(all))]
		b := destinations.SegmentBatch{SegmentID: s.SegmentID, DisplayName: s.FrozenName, Page: page, TotalPages: total, TaskID: task}
		for _, c := range chunk {
			id := destinations.Identity{UserID: c.x.userID, ID: c.x.identity}
			if c.remove {
				b.Remove = append(b.Remove, id)
			} else {
				b.Add = append(b.Add, id)
			}
		}
		// Not the page number: a resumed attempt numbers its pages from 1
		// again, and its page 1 holds other identities than the first's.
		b.IdempotencyKey = destinations.ContentKey(r.ID, b)
		bctx, bspan := e.o.Tracer.Start(ctx, "sync.batch", trace.WithAttributes(attribute.Int("batch.page", page), attribute.Int("batch.adds", len(b.Add)), attribute.Int("batch.removes", len(b.Remove))))
		res, err := seg.DeliverSegment(bctx, b)
		if err != nil {
			bspan.SetStatus(codes.Error, err.Error())
		}
		bspan.End()
		if ctx.Err() != nil && err != nil {
			// Cut off (slice timeout, shutdown, lease lost) before an answer.
			// An acknowledged batch is still recorded below, so the next
			// attempt does not send it again.
			return ctx.Err()
		}
		ack := Ack{Added: map[uint32]HeldIdentity{}, Failed: map[uint32]FailedIdentity{}}
		switch destinations.KindOf(err) {
		case destinations.AuthFailed:
			_ = e.conns.Report(ctx, s.Env, s.ConnectionID, connectorv1.ConnectionStatus_CONNECTION_STATUS_NEEDS_REAUTH, err.Error())
			return &runError{fmt.Sprintf("%s refused the connection's credentials; re-authorise connection %s (%v)", t.DisplayName, s.ConnectionID, err)}
		case destinations.Permanent:
			// The whole batch was refused: each identity is recorded failed.
			for _, c := range chunk {
				res.Failed = append(res.Failed, destinations.Failure{Identity: destinations.Identity{UserID: c.x.userID, ID: c.x.identity}, Removal: c.remove, Reason: err.Error()})
			}
		default:
			if err != nil {
				return &runError{fmt.Sprintf("%s is failing (%v); delivered batches are kept and the next run continues from them", t.DisplayName, err)}
			}
		}
		failed := map[string]destinations.Failure{}
		for _, f := range res.Failed {
			failed[key(f.ID, f.Removal)] = f
		}
		for _, c := range chunk {
			if f, bad := failed[key(c.x.identity, c.remove)]; bad {
				ack.Failed[c.x.dense] = FailedIdentity{UserID: c.x.userID, Identity: c.x.identity, Removal: c.remove, Reason: f.Reason}
				failedNow.Add(c.x.dense)
				r.Failed++
				if len(r.FailedSample) < 20 {
					r.FailedSample = append(r.FailedSample, ack.Failed[c.x.dense])
				}
				continue
			}
			// Only a failure on record needs clearing.
			if _, was := p.failed[c.x.dense]; was || failedNow.Contains(c.x.dense) {
				ack.OK = append(ack.OK, c.x.dense)
			}
			if c.remove {
				if _, readd := ack.Added[c.x.dense]; !readd {
					ack.Removed = append(ack.Removed, c.x.dense)
				}
				r.Removed++
			} else {
				ack.Added[c.x.dense] = HeldIdentity{UserID: c.x.userID, Identity: c.x.identity, Stored: c.x.stored}
				r.Added++
			}
		}
		if t.WholeTasks {
			held = append(held, checkpoint{ack: ack, run: *r})
			continue
		}
		cp.add(ack, r)
	}
	for _, h := range held {
		cp.add(h.ack, &h.run)
	}
	if err := cp.close(); err != nil {
		return err
	}
	if err := e.st.Compact(ctx, s.ID, true, r); err != nil {
		return err
	}
	// Every planned identity is now held or recorded failed.
	if err := e.st.SaveIdentityCheck(ctx, s.ID, *p.check); err != nil {
		return err
	}
	if t.Retention > 0 {
		r.DataExpires = e.o.Now().UTC().Add(t.Retention)
	}
	return nil
}

// change is one planned add or remove.
type change struct {
	x      item
	remove bool
}

// changes lists the plan in sending order: removals first, so a changed
// identity's old id leaves before its new one arrives.
func (p *Plan) changes() []change {
	all := make([]change, 0, len(p.Adds)+len(p.Removes))
	for _, x := range p.Removes {
		all = append(all, change{x, true})
	}
	for _, x := range p.Adds {
		all = append(all, change{x, false})
	}
	return all
}

// taskID names one attempt's sequence of pages: the run and a digest of
// every page's content. A Heap-format receiver puts a task's pages together
// by page number, so a task must keep one page total and one content per
// page: an attempt resuming with the same plan continues its task, one
// resuming with another plan (earlier pages acknowledged meanwhile) starts
// its own.
func taskID(runID string, s *Sync, size int, all []change) string {
	d := destinations.NewDigest()
	d.String(s.SegmentID)
	d.String(s.FrozenName)
	d.Int(size)
	for _, c := range all {
		d.Bool(c.remove)
		d.String(c.x.identity)
	}
	return runID + "-" + d.Sum()[:16]
}

// checkpointer writes a run's checkpoints in order in the background.
type checkpointer struct {
	st     *Store
	syncID string
	work   chan checkpoint
	done   chan struct{}
	once   sync.Once
	mu     sync.Mutex
	err    error
}

type checkpoint struct {
	ack Ack
	run Run // the run's counters as of this batch
}

func newCheckpointer(st *Store, syncID string) *checkpointer {
	c := &checkpointer{st: st, syncID: syncID, work: make(chan checkpoint, 1), done: make(chan struct{})}
	go func() {
		defer close(c.done)
		n := 0
		for w := range c.work {
			if c.failed() != nil {
				continue
			}
			// Not the run's context: an acknowledged batch is recorded even
			// when the run is being cut off.
			err := c.st.Checkpoint(context.Background(), c.syncID, w.ack, &w.run)
			if n++; err == nil && n%compactEvery == 0 {
				err = c.st.Compact(context.Background(), c.syncID, false, nil)
			}
			if err != nil {
				c.mu.Lock()
				c.err = err
				c.mu.Unlock()
			}
		}
	}()
	return c
}

// add queues a batch's checkpoint; it waits while the previous one is still
// queued, so at most one batch is ahead of its checkpoint.
func (c *checkpointer) add(a Ack, r *Run) { c.work <- checkpoint{ack: a, run: *r} }

func (c *checkpointer) failed() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// close waits for every queued checkpoint and returns the first error.
func (c *checkpointer) close() error {
	c.once.Do(func() { close(c.work) })
	<-c.done
	return c.failed()
}

func key(id string, removal bool) string {
	if removal {
		return "-" + id
	}
	return "+" + id
}

// Identity is the destination id of a planned add or remove.
func (x item) Identity() string { return x.identity }
