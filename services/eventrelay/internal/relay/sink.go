package relay

import (
	"context"
	"encoding/json"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/trace"

	"github.com/seghub/seghub/pkg/natsbus"
	"github.com/seghub/seghub/pkg/telemetry/metrics"
)

// UserEvents are one user's events in a batch, oldest first.
type UserEvents struct {
	User   string
	Events []*Envelope
}

// Result is the outcome of one UserEvents of a batch: how many of its events
// (a prefix) were delivered, and the error that stopped the rest.
type Result struct {
	Delivered int
	Err       error
	// RetryAfter is the destination's own wait (0: use backoff).
	RetryAfter time.Duration
	// Isolate asks for the user's events to be sent alone from now on: a
	// batch of many users was refused as a whole, and sending each alone
	// finds the event at fault without holding back the others.
	Isolate bool
}

// DeliverFunc sends a batch and answers one Result per UserEvents.
type DeliverFunc func(ctx context.Context, batch []UserEvents) []Result

// DeadLetterFunc records an event given up on.
type DeadLetterFunc func(ctx context.Context, e *Envelope, raw []byte, reason string, attempts int, first, dead time.Time) error

// SinkOptions configure one sink.
type SinkOptions struct {
	ConnectionID, Type string
	Consumer           jetstream.Consumer
	// Classify tells whether a subject is for this sink, and a replay.
	Classify func(subject string) (mine, replay bool)
	// Accept decides whether an event goes to this sink (routes, send_events);
	// replays skip it.
	Accept  func(e *Envelope) bool
	Deliver DeliverFunc
	// BatchEvents bounds the events of one batch; Senders the batches in
	// flight at once.
	BatchEvents, Senders int
	// Active, when set, tells whether the sink may send now: false once its
	// partition's lease may have lapsed without this replica knowing (it
	// sends again when the lease is renewed).
	Active func() bool
	// Budget, when set, bounds the events in flight shared with other sinks
	// (a replica's partitions of one connection share one); default
	// Senders × BatchEvents of this sink's own.
	Budget *Budget
	// An event is dead-lettered only after MaxAttempts attempts and MaxAge
	// since its first failure, both.
	MaxAttempts int
	MaxAge      time.Duration
	// Backoff between attempts of one user's events (default exponential
	// from 200 ms to 1 min).
	Backoff    func(attempt int) time.Duration
	DeadLetter DeadLetterFunc
	// Metrics counts delivered, retried and dead-lettered events (nil: none).
	Metrics *metrics.Sink
	// Tracer records deliveries in each event's trace (nil: the global
	// provider's).
	Tracer trace.Tracer
	Logger *slog.Logger
	Now    func() time.Time
	// AckWait of the consumer: held messages are kept in progress well
	// within it, so JetStream does not redeliver them.
	AckWait time.Duration
}

// held is a message waiting for delivery.
type held struct {
	msg jetstream.Msg
	env *Envelope
	raw []byte
	seq uint64
	got time.Time
	// parent is the trace the event was stored in (from its headers).
	parent trace.SpanContext
}

// userQueue is one user's events in stream order. Only the head part is ever
// in flight, so the user's order holds across retries; users waiting for a
// retry never hold back others.
type userQueue struct {
	user      string
	q         []*held
	inflight  bool
	waiting   bool
	ready     bool
	solo      bool
	attempts  int
	firstFail time.Time
	nextAt    time.Time
	lastErr   string
}

type sent struct {
	batch  []UserEvents
	held   [][]*held
	events int
}

type outcome struct {
	sent    sent
	results []Result
}

// SinkStats are a sink's counters.
type SinkStats struct {
	Delivered, Filtered uint64
	DeadLettered        uint64
	RetryingUsers       int
	LastError           string
	LastDelivery        time.Time
}

// Sink delivers one sink's events.
type Sink struct {
	o SinkOptions

	mu    sync.Mutex // guards stats and the fields the loop shares
	stats SinkStats

	delivered atomic.Uint64
}

// NewSink returns a sink; Run starts it.
func NewSink(o SinkOptions) *Sink {
	if o.BatchEvents <= 0 {
		o.BatchEvents = 100
	}
	if o.Senders <= 0 {
		o.Senders = 2
	}
	if o.MaxAttempts <= 0 {
		o.MaxAttempts = 10
	}
	if o.Backoff == nil {
		o.Backoff = func(a int) time.Duration {
			return min(200*time.Millisecond*time.Duration(1<<min(a-1, 10)), time.Minute)
		}
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.AckWait <= 0 {
		o.AckWait = 30 * time.Second
	}
	if o.Budget == nil {
		o.Budget = NewBudget(o.Senders * o.BatchEvents)
	}
	if o.Active == nil {
		o.Active = func() bool { return true }
	}
	return &Sink{o: o}
}

// Stats returns the sink's counters.
func (s *Sink) Stats() SinkStats {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.stats
	st.Delivered = s.delivered.Load()
	return st
}

// Run delivers until ctx ends.
func (s *Sink) Run(ctx context.Context) error {
	in := make(chan jetstream.Msg, 1024)
	iter, err := s.o.Consumer.Messages(jetstream.PullMaxMessages(2000))
	if err != nil {
		return err
	}
	defer iter.Stop()
	go func() {
		defer close(in)
		for {
			m, err := iter.Next()
			if err != nil {
				return // stopped, or the consumer was deleted
			}
			select {
			case in <- m:
			case <-ctx.Done():
				return
			}
		}
	}()
	d := &dispatcher{s: s, users: map[string]*userQueue{}, seen: map[uint64]*held{}, results: make(chan outcome, s.o.Senders)}
	return d.loop(ctx, in)
}

type dispatcher struct {
	s       *Sink
	users   map[string]*userQueue
	seen    map[uint64]*held
	ready   []*userQueue
	waiting []*userQueue
	results chan outcome
	// inflight counts batches sent and not yet applied.
	inflight int
}

// Budget is a number of events in flight shared by sinks: the sinks of a
// replica's partitions of one connection together deliver with the
// concurrency one sink had before partitions, so a replica's share of the
// destination's latency-bound capacity is fixed and more replicas add to it.
type Budget struct {
	mu   sync.Mutex
	free int
	wake chan struct{} // closed when events are given back
}

// NewBudget returns a budget of n events.
func NewBudget(n int) *Budget { return &Budget{free: max(n, 1)} }

// take takes up to n events; with none free it returns a channel closed
// when some are given back.
func (b *Budget) take(n int) (int, <-chan struct{}) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.free == 0 {
		if b.wake == nil {
			b.wake = make(chan struct{})
		}
		return 0, b.wake
	}
	n = min(n, b.free)
	b.free -= n
	return n, nil
}

func (b *Budget) give(n int) {
	if n <= 0 {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.free += n
	if b.wake != nil {
		close(b.wake)
		b.wake = nil
	}
}

func (d *dispatcher) loop(ctx context.Context, in <-chan jetstream.Msg) error {
	o := d.s.o
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	lastProgress := o.Now()
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		// wake is set when users wait for the shared budget.
		var wake <-chan struct{}
		for d.inflight < o.Senders && len(d.ready) > 0 && o.Active() {
			n, w := o.Budget.take(o.BatchEvents)
			if n == 0 {
				wake = w
				break
			}
			b := d.nextBatch(n)
			o.Budget.give(n - b.events)
			d.inflight++
			wg.Add(1)
			go func() {
				defer wg.Done()
				tctx, tr := d.s.startDelivery(ctx, b)
				res := o.Deliver(tctx, b.batch)
				tr.end(res)
				o.Budget.give(b.events)
				select {
				case d.results <- outcome{sent: *b, results: res}:
				case <-ctx.Done():
				}
			}()
		}
		select {
		case <-ctx.Done():
			return nil
		case <-wake:
		case m, ok := <-in:
			if !ok {
				if ctx.Err() != nil {
					return nil
				}
				return errConsumerGone
			}
			d.add(m)
		case r := <-d.results:
			d.inflight--
			d.apply(ctx, r)
		case <-tick.C:
			now := o.Now()
			d.wake(now)
			if now.Sub(lastProgress) > o.AckWait/3 {
				lastProgress = now
				d.keepInProgress(now)
			}
		}
	}
}

type sinkError string

func (e sinkError) Error() string { return string(e) }

const errConsumerGone = sinkError("sink consumer closed")

func (d *dispatcher) add(m jetstream.Msg) {
	meta, err := m.Metadata()
	if err != nil {
		_ = m.Term()
		return
	}
	seq := meta.Sequence.Stream
	if h, ok := d.seen[seq]; ok {
		h.msg = m // a redelivery of what we hold: keep the newest handle
		return
	}
	var e Envelope
	if err := json.Unmarshal(m.Data(), &e); err != nil || e.User == "" {
		d.s.o.Logger.Error("undecodable event in stream; dropped", "sink", d.s.o.ConnectionID, "stream_seq", seq)
		_ = m.Term()
		return
	}
	mine, replay := d.s.o.Classify(m.Subject())
	if !mine || (!replay && !d.s.o.Accept(&e)) {
		_ = m.Ack()
		d.s.mu.Lock()
		d.s.stats.Filtered++
		d.s.mu.Unlock()
		return
	}
	h := &held{msg: m, env: &e, raw: m.Data(), seq: seq, got: d.s.o.Now(),
		parent: trace.SpanContextFromContext(natsbus.ExtractTrace(context.Background(), m.Headers()))}
	d.seen[seq] = h
	u := d.users[e.User]
	if u == nil {
		u = &userQueue{user: e.User}
		d.users[e.User] = u
	}
	u.q = append(u.q, h)
	d.markReady(u)
}

func (d *dispatcher) markReady(u *userQueue) {
	if !u.inflight && !u.waiting && !u.ready && len(u.q) > 0 {
		u.ready = true
		d.ready = append(d.ready, u)
	}
}

// nextBatch takes ready users in turn (round robin), each with as many of
// its queued events as fit in limit, so a hot user shares batches with the
// others.
func (d *dispatcher) nextBatch(limit int) *sent {
	var b sent
	n := 0
	for len(d.ready) > 0 && n < limit {
		u := d.ready[0]
		if u.solo && len(b.batch) > 0 {
			break
		}
		d.ready = d.ready[1:]
		u.ready = false
		take := min(len(u.q), limit-n)
		if u.solo {
			take = 1
		}
		evs := make([]*Envelope, take)
		for i := 0; i < take; i++ {
			evs[i] = u.q[i].env
		}
		b.batch = append(b.batch, UserEvents{User: u.user, Events: evs})
		b.held = append(b.held, u.q[:take])
		u.inflight = true
		n += take
		if u.solo {
			break
		}
	}
	if len(b.batch) == 0 {
		return nil
	}
	b.events = n
	return &b
}

func (d *dispatcher) apply(ctx context.Context, r outcome) {
	o := d.s.o
	now := o.Now()
	for i, ue := range r.sent.batch {
		u := d.users[ue.User]
		hs := r.sent.held[i]
		res := Result{Err: sinkError("no result")}
		if i < len(r.results) {
			res = r.results[i]
		}
		res.Delivered = min(max(res.Delivered, 0), len(hs))
		for _, h := range hs[:res.Delivered] {
			_ = h.msg.Ack()
			delete(d.seen, h.seq)
			d.s.delivered.Add(1)
			o.Metrics.Delivered(time.UnixMicro(h.env.Received))
		}
		u.q = u.q[res.Delivered:]
		u.inflight = false
		if res.Delivered > 0 {
			d.s.mu.Lock()
			d.s.stats.LastDelivery = now
			d.s.mu.Unlock()
		}
		if res.Err == nil {
			u.attempts, u.firstFail, u.solo, u.lastErr = 0, time.Time{}, false, ""
		} else {
			d.failed(ctx, u, hs[res.Delivered:], res, now)
		}
		if len(u.q) == 0 && !u.waiting {
			delete(d.users, u.user)
			continue
		}
		d.markReady(u)
	}
	d.s.mu.Lock()
	d.s.stats.RetryingUsers = len(d.waiting)
	d.s.mu.Unlock()
}

// failed handles a user's undelivered events: isolate, retry later, or —
// after both the attempts and the time window are spent — dead-letter them.
func (d *dispatcher) failed(ctx context.Context, u *userQueue, undelivered []*held, res Result, now time.Time) {
	o := d.s.o
	u.lastErr = res.Err.Error()
	d.s.mu.Lock()
	d.s.stats.LastError = u.lastErr
	d.s.mu.Unlock()
	if res.Isolate && !u.solo {
		u.solo = true
		return
	}
	u.attempts++
	if u.firstFail.IsZero() {
		u.firstFail = now
	}
	if u.attempts >= o.MaxAttempts && now.Sub(u.firstFail) >= o.MaxAge {
		for _, h := range undelivered {
			dctx, end := d.s.traceDeadLetter(ctx, h, u.lastErr, u.attempts)
			err := o.DeadLetter(dctx, h.env, h.raw, u.lastErr, u.attempts, u.firstFail, now)
			end(err)
			if err != nil {
				// Not recorded: keep it and try again later rather than lose it.
				o.Logger.Error("record dead letter", "sink", o.ConnectionID, "event_id", h.env.ID, "error", err.Error())
				d.wait(u, now.Add(o.Backoff(u.attempts)))
				return
			}
			_ = h.msg.Ack()
			delete(d.seen, h.seq)
			d.s.mu.Lock()
			d.s.stats.DeadLettered++
			d.s.mu.Unlock()
			o.Metrics.DeadLettered()
		}
		u.q = u.q[len(undelivered):]
		u.attempts, u.firstFail, u.solo = 0, time.Time{}, false
		return
	}
	o.Metrics.Retried(len(undelivered))
	wait := o.Backoff(u.attempts)
	if res.RetryAfter > wait {
		wait = res.RetryAfter
	}
	d.wait(u, now.Add(wait))
}

func (d *dispatcher) wait(u *userQueue, until time.Time) {
	u.nextAt = until
	if !u.waiting {
		u.waiting = true
		d.waiting = append(d.waiting, u)
	}
}

// wake moves users whose retry time has come back to the ready queue.
func (d *dispatcher) wake(now time.Time) {
	keep := d.waiting[:0]
	for _, u := range d.waiting {
		if now.Before(u.nextAt) {
			keep = append(keep, u)
			continue
		}
		u.waiting = false
		d.markReady(u)
	}
	clear(d.waiting[len(keep):])
	d.waiting = keep
}

// keepInProgress tells JetStream that held messages are being worked on, so
// it does not redeliver them while their users wait for a retry.
func (d *dispatcher) keepInProgress(now time.Time) {
	for _, h := range d.seen {
		if now.Sub(h.got) > d.s.o.AckWait/3 {
			_ = h.msg.InProgress()
		}
	}
}
