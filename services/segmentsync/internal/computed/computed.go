// Package computed keeps computed segments live: a durable consumer of the
// event relay's JetStream stream feeds the store's per-user event aggregates
// (which re-evaluates the affected users), new event conditions are
// backfilled from the events the stream still retains, computing segments
// get their first full evaluation, and a daily window pass moves users whose
// counted days slid out of a window. The live consumer runs in one
// goroutine; each environment with computing conditions has a backfill
// reader of its own, which hands its conditions over to the live consumer
// under the evaluator's lock.
package computed

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	segmentsyncv1 "github.com/seghub/seghub/gen/seghub/segmentsync/v1"
	"github.com/seghub/seghub/services/segmentsync/internal/rules"
	"github.com/seghub/seghub/services/segmentsync/internal/store"
)

// ConsumerName is the durable consumer of the events stream.
const ConsumerName = "segmentsync_computed"

// Options configure the evaluator.
type Options struct {
	Store *store.Store
	// JS reaches the events stream; nil means no events (event conditions
	// hold for no one, property conditions still evaluate).
	JS jetstream.JetStream
	// Dial connects to the embedded server (nil with an external one): the
	// backfill then reads on connections of its own.
	Dial func() (net.Conn, error)
	// Namespace is the bus namespace (the relay's stream is
	// <NAMESPACE>_EVENTS with subjects <namespace>.events.<env>.<source>).
	Namespace string
	// Now is the clock (tests inject one).
	Now    func() time.Time
	Logger *slog.Logger
	// Batch is how many events one transaction applies at most (default 5000).
	Batch int
	// BackfillChunk is the distance (in stream sequences) to the live
	// position below which a backfill reads the rest and hands over to the
	// live consumer, holding it meanwhile (default 20000).
	BackfillChunk int
	// WindowEvery is how often the window pass looks for a new day
	// (default one minute; 0 keeps the default, negative disables it).
	WindowEvery time.Duration
}

// Evaluator runs the computed-segment work.
type Evaluator struct {
	o      Options
	stream string
	prefix string
	wake   chan struct{}
	mu     sync.Mutex // serialises live batches, hand-overs and window passes
	// backfills are the environments whose backfill reader runs.
	bfMu      sync.Mutex
	backfills map[string]bool
	bg        sync.WaitGroup
	// woken and prepared are the Run goroutine's own.
	woken    bool
	prepared time.Time
}

// prepareEvery bounds how long a new definition waits to be noticed
// without a Wake.
const prepareEvery = 500 * time.Millisecond

// New returns an evaluator; Run starts it.
func New(o Options) *Evaluator {
	ns := o.Namespace
	if ns == "" {
		ns = "seghub"
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Batch <= 0 {
		o.Batch = 5000
	}
	if o.BackfillChunk <= 0 {
		o.BackfillChunk = 20000
	}
	if o.WindowEvery == 0 {
		o.WindowEvery = time.Minute
	}
	return &Evaluator{o: o, stream: strings.ToUpper(ns) + "_EVENTS", prefix: ns + ".events.", wake: make(chan struct{}, 1), backfills: map[string]bool{}}
}

// Wake makes the evaluator look for new definitions now.
func (e *Evaluator) Wake() {
	select {
	case e.wake <- struct{}{}:
	default:
	}
}

// WindowPass runs the window pass at the evaluator's clock now (the periodic
// pass does the same once a minute).
func (e *Evaluator) WindowPass(ctx context.Context) (int, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.o.Store.WindowPass(ctx, e.o.Now())
}

// Run works until ctx ends.
func (e *Evaluator) Run(ctx context.Context) error {
	var c *feed
	defer func() {
		if c != nil {
			c.stop()
		}
	}()
	// The backfill readers end with ctx; Run returns after them.
	defer e.bg.Wait()
	var st jetstream.Stream
	lastWindow := time.Time{}
	warned := false
	for ctx.Err() == nil {
		var err error
		if e.o.JS != nil && c == nil {
			st, c, err = e.open(ctx)
			switch {
			case errors.Is(err, jetstream.ErrStreamNotFound):
				// No event relay has run yet: no events to read, and rules
				// still evaluate over properties.
				if !warned {
					e.o.Logger.Info("computed segments: no events stream yet; waiting for the event relay to create it", "stream", e.stream)
					warned = true
				}
			case err != nil:
				e.pause(ctx, err, "open the events consumer")
				continue
			}
		}
		if err := e.step(ctx, st, c); err != nil {
			if ctx.Err() != nil {
				break
			}
			// Unacknowledged events come again: the consumer restarts at the
			// stored position.
			e.pause(ctx, err, "computed segments")
			if c != nil {
				c.stop()
			}
			c = nil
			continue
		}
		if e.o.WindowEvery > 0 && time.Since(lastWindow) >= e.o.WindowEvery {
			lastWindow = time.Now()
			if _, err := e.WindowPass(ctx); err != nil && ctx.Err() == nil {
				e.o.Logger.Warn("computed segments: window pass", "error", err.Error())
			}
		}
		if c == nil {
			select {
			case <-ctx.Done():
			case <-e.wake:
				e.woken = true
			case <-time.After(time.Second):
			}
		}
	}
	return nil
}

func (e *Evaluator) pause(ctx context.Context, err error, what string) {
	e.o.Logger.Warn(what, "error", err.Error())
	select {
	case <-ctx.Done():
	case <-time.After(time.Second):
	}
}

// open finds the relay's stream (it may not exist yet) and (re)creates the
// durable consumer so that it delivers from the stored position on.
func (e *Evaluator) open(ctx context.Context) (jetstream.Stream, *feed, error) {
	st, err := e.o.JS.Stream(ctx, e.stream)
	if err != nil {
		return nil, nil, fmt.Errorf("events stream %s: %w", e.stream, err)
	}
	pos, err := e.o.Store.Position(ctx)
	if err != nil {
		return nil, nil, err
	}
	if c, err := st.Consumer(ctx, ConsumerName); err == nil {
		info := c.CachedInfo()
		if info.NumAckPending == 0 && info.Delivered.Stream == pos {
			f, err := e.consume(c)
			return st, f, err
		}
		if err := st.DeleteConsumer(ctx, ConsumerName); err != nil {
			return nil, nil, fmt.Errorf("rewind consumer %s: %w", ConsumerName, err)
		}
	} else if !errors.Is(err, jetstream.ErrConsumerNotFound) {
		return nil, nil, err
	}
	cfg := jetstream.ConsumerConfig{
		Durable:       ConsumerName,
		Description:   "seghub computed segments",
		FilterSubject: e.prefix + ">",
		AckPolicy:     jetstream.AckAllPolicy,
		AckWait:       time.Minute,
		MaxDeliver:    -1,
		MaxAckPending: 4 * e.o.Batch,
		DeliverPolicy: jetstream.DeliverAllPolicy,
	}
	if pos > 0 {
		cfg.DeliverPolicy, cfg.OptStartSeq = jetstream.DeliverByStartSequencePolicy, pos+1
	}
	c, err := st.CreateConsumer(ctx, cfg)
	if err != nil {
		return nil, nil, fmt.Errorf("consumer %s: %w", ConsumerName, err)
	}
	f, err := e.consume(c)
	return st, f, err
}

// feed is the durable consumer's continuous pull: the library keeps a
// batch in flight, the evaluator takes what has arrived.
type feed struct {
	cc   jetstream.ConsumeContext
	msgs chan jetstream.Msg
	done chan struct{}
}

// stop ends the pull; messages not applied are redelivered to the next feed.
func (f *feed) stop() {
	close(f.done)
	f.cc.Stop()
}

func (e *Evaluator) consume(c jetstream.Consumer) (*feed, error) {
	f := &feed{msgs: make(chan jetstream.Msg, 2*e.o.Batch), done: make(chan struct{})}
	cc, err := c.Consume(func(m jetstream.Msg) {
		select {
		case f.msgs <- m:
		case <-f.done:
		}
	}, jetstream.PullMaxMessages(e.o.Batch))
	if err != nil {
		return nil, fmt.Errorf("consume %s: %w", ConsumerName, err)
	}
	f.cc = cc
	return f, nil
}

// step starts the backfill of new conditions, evaluates the segments ready
// for it, then applies one batch of live events.
func (e *Evaluator) step(ctx context.Context, st jetstream.Stream, c *feed) error {
	// New definitions are looked for when woken and at least every
	// prepareEvery, not before every batch (a round trip fewer per batch).
	if e.woken || time.Since(e.prepared) >= prepareEvery {
		e.woken, e.prepared = false, time.Now()
		e.mu.Lock()
		err := e.prepare(ctx, st)
		e.mu.Unlock()
		if err != nil {
			return err
		}
	}
	if c == nil {
		return nil
	}
	msgs, err := e.fetch(ctx, c)
	if err != nil || len(msgs) == 0 {
		return err
	}
	evs := make([]store.Event, 0, len(msgs))
	for _, m := range msgs {
		md, err := m.Metadata()
		if err != nil {
			return err
		}
		if ev, ok := e.decode(m.Subject(), m.Data()); ok {
			ev.Seq = md.Sequence.Stream
			evs = append(evs, ev)
		}
	}
	last := msgs[len(msgs)-1]
	md, _ := last.Metadata()
	e.mu.Lock()
	first, _ := msgs[0].Metadata()
	err = e.o.Store.ApplyEvents(ctx, store.EventBatch{Events: evs, First: first.Sequence.Stream, Through: md.Sequence.Stream, Retained: st.CachedInfo().State.FirstSeq}, e.o.Now())
	e.mu.Unlock()
	if err != nil {
		return err
	}
	// AckAll: the last message acknowledges the batch.
	return last.Ack()
}

// fetch waits up to a quarter second for the first event, then takes what
// else has already arrived, up to a batch.
func (e *Evaluator) fetch(ctx context.Context, c *feed) ([]jetstream.Msg, error) {
	var out []jetstream.Msg
	select {
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-e.wake:
		e.woken = true
		return nil, nil
	case <-time.After(250 * time.Millisecond):
		return nil, nil
	case m := <-c.msgs:
		out = append(out, m)
	}
	for len(out) < e.o.Batch {
		select {
		case m := <-c.msgs:
			out = append(out, m)
		default:
			return out, nil
		}
	}
	return out, nil
}

// prepare starts the backfill of new computing conditions and evaluates
// the computing segments whose conditions are all live.
func (e *Evaluator) prepare(ctx context.Context, st jetstream.Stream) error {
	if err := e.startBackfills(ctx, st); err != nil {
		return err
	}
	n, err := e.o.Store.InitComputedSegments(ctx, e.o.Now())
	if n > 0 {
		e.o.Logger.Info("computed segments live", "count", n)
	}
	return err
}

// Preview evaluates rule over env's users now; conditions not live yet are
// read from the retained events (at most maxScan of them).
func (e *Evaluator) Preview(ctx context.Context, env string, rule *segmentsyncv1.SegmentRule, sample int) (uint64, []string, error) {
	prog, err := rules.Compile(rule)
	if err != nil {
		return 0, nil, err
	}
	live, err := e.o.Store.LiveConditionKeys(ctx, env)
	if err != nil {
		return 0, nil, err
	}
	var missing []*rules.Cond
	for _, c := range prog.Conds() {
		if !live[c.Key] {
			missing = append(missing, c)
		}
	}
	extra := map[string]map[string]*rules.Agg{}
	for _, c := range missing {
		extra[c.Key] = map[string]*rules.Agg{}
	}
	if len(missing) > 0 && e.o.JS != nil {
		st, err := e.o.JS.Stream(ctx, e.stream)
		if err != nil && !errors.Is(err, jetstream.ErrStreamNotFound) {
			return 0, nil, err
		}
		if st != nil {
			if extra, err = e.preview(ctx, st, env, missing); err != nil {
				return 0, nil, err
			}
		}
	}
	return e.o.Store.Preview(ctx, env, prog, extra, rules.Today(e.o.Now()), sample)
}

// maxScan bounds the events a preview reads from the stream.
const maxScan = 5_000_000
