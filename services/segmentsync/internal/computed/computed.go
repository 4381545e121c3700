// Package computed keeps computed segments live: a durable consumer of the
// event relay's JetStream stream feeds the store's per-user event aggregates
// (which re-evaluates the affected users), new event conditions are
// backfilled from the events the stream still retains, computing segments
// get their first full evaluation, and a daily window pass moves users whose
// counted days slid out of a window. One goroutine does all of it in turn,
// so a backfill and the live consumer never race over a condition.
package computed

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
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
	// Namespace is the bus namespace (the relay's stream is
	// <NAMESPACE>_EVENTS with subjects <namespace>.events.<env>.<source>).
	Namespace string
	// Now is the clock (tests inject one).
	Now    func() time.Time
	Logger *slog.Logger
	// Batch is how many events one transaction applies at most (default 5000).
	Batch int
	// BackfillChunk is how many events a backfill step reads (default 20000).
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
	mu     sync.Mutex // serialises steps with WindowPass calls from tests
	// woken and prepared are the Run goroutine's own.
	woken    bool
	prepared time.Time
}

// prepareEvery bounds how long a backfill chunk or a new definition waits
// behind live batches.
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
	return &Evaluator{o: o, stream: strings.ToUpper(ns) + "_EVENTS", prefix: ns + ".events.", wake: make(chan struct{}, 1)}
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

// step backfills a chunk of each computing condition, evaluates the
// segments ready for it, then applies one batch of live events.
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

// envelope mirrors the relay's stored event (its JSON is the stream's
// contract between the two services).
type envelope struct {
	ID       string         `json:"id"`
	Env      string         `json:"env"`
	Source   string         `json:"src"`
	User     string         `json:"user"`
	Name     string         `json:"name"`
	Time     int64          `json:"ts"`
	Props    map[string]any `json:"props"`
	Received int64          `json:"rcv"`
}

// decode reads an event; replays of dead letters (a sink's second try of
// an event already stored) are not new events and are skipped.
func (e *Evaluator) decode(subject string, data []byte) (store.Event, bool) {
	rest, ok := strings.CutPrefix(subject, e.prefix)
	if !ok {
		return store.Event{}, false
	}
	// <env>.<partition>.<source> or <env>.<partition>._replay.<conn>; the
	// token is looked for in any place so a layout change cannot make
	// replays count twice.
	if _, after, ok := strings.Cut(rest, "."); !ok || slices.Contains(strings.Split(after, "."), "_replay") {
		return store.Event{}, false
	}
	var env envelope
	if err := json.Unmarshal(data, &env); err != nil || env.Env == "" || env.User == "" {
		e.o.Logger.Warn("computed segments: unreadable event skipped", "subject", subject)
		return store.Event{}, false
	}
	return store.Event{Env: env.Env, User: env.User, Source: env.Source, Name: env.Name, Time: rules.EventTime(env.Time, env.Received), Props: env.Props}, true
}

// prepare backfills one chunk of every computing condition and evaluates
// the computing segments whose conditions are all live.
func (e *Evaluator) prepare(ctx context.Context, st jetstream.Stream) error {
	conds, err := e.o.Store.Conditions(ctx)
	if err != nil {
		return err
	}
	pos, err := e.o.Store.Position(ctx)
	if err != nil {
		return err
	}
	for _, c := range conds {
		if c.State != store.Computing {
			continue
		}
		if err := e.backfill(ctx, st, c, pos); err != nil {
			return fmt.Errorf("backfill condition %s of %s: %w", c.Cond.Key, c.Env, err)
		}
	}
	n, err := e.o.Store.InitComputedSegments(ctx, e.o.Now())
	if n > 0 {
		e.o.Logger.Info("computed segments live", "count", n)
	}
	return err
}

// backfill reads the next chunk of c's environment's events up to the
// live position; the live consumer takes the condition over from there.
func (e *Evaluator) backfill(ctx context.Context, st jetstream.Stream, c *store.ConditionState, pos uint64) error {
	if st == nil || pos == 0 || c.Scanned >= pos {
		return e.o.Store.MarkConditionLive(ctx, c.Env, c.Cond.Key)
	}
	info, err := st.Info(ctx)
	if err != nil {
		return err
	}
	first := info.State.FirstSeq
	from := max(c.Scanned+1, first)
	if c.First != 0 && c.Scanned > 0 {
		first = c.First
	}
	var evs []store.Event
	through := pos
	if from <= pos {
		read, last, full, err := e.read(ctx, st, c.Env, from, pos, e.o.BackfillChunk)
		if err != nil {
			return err
		}
		evs = read
		if full {
			through = last
		}
	}
	if err := e.o.Store.BackfillEvents(ctx, c.Env, c.Cond.Key, evs, through, pos, first); err != nil {
		return err
	}
	if through >= pos {
		return e.o.Store.MarkConditionLive(ctx, c.Env, c.Cond.Key)
	}
	return nil
}

// read returns up to limit events of env with sequences from..to, the last
// sequence read, and whether it stopped at the limit (more may follow).
func (e *Evaluator) read(ctx context.Context, st jetstream.Stream, env string, from, to uint64, limit int) ([]store.Event, uint64, bool, error) {
	oc, err := st.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{e.prefix + env + ".>"},
		DeliverPolicy:  jetstream.DeliverByStartSequencePolicy,
		OptStartSeq:    from,
	})
	if err != nil {
		return nil, 0, false, err
	}
	// The consumer knows how many of the environment's events follow: fetch
	// exactly those (a fetch asking for more would wait out its timeout).
	pending := int(oc.CachedInfo().NumPending)
	want := min(limit, pending)
	var out []store.Event
	var last uint64
	n := 0
	for n < want {
		batch, err := oc.Fetch(min(want-n, 5000), jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			return nil, 0, false, err
		}
		got := 0
		for m := range batch.Messages() {
			got++
			md, err := m.Metadata()
			if err != nil {
				return nil, 0, false, err
			}
			seq := md.Sequence.Stream
			if seq > to {
				return out, to, false, nil
			}
			last = seq
			n++
			if ev, ok := e.decode(m.Subject(), m.Data()); ok {
				ev.Seq = seq
				out = append(out, ev)
			}
		}
		if err := batch.Error(); err != nil && !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, jetstream.ErrNoMessages) {
			return nil, 0, false, err
		}
		if got == 0 {
			return nil, 0, false, fmt.Errorf("events of %s from sequence %d: %d announced, none delivered", env, from, pending)
		}
	}
	if want < limit || last >= to {
		return out, to, false, nil
	}
	return out, last, true, nil
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
			if err := e.scanInto(ctx, st, env, missing, extra); err != nil {
				return 0, nil, err
			}
		}
	}
	return e.o.Store.Preview(ctx, env, prog, extra, rules.Today(e.o.Now()), sample)
}

// maxScan bounds the events a preview reads from the stream.
const maxScan = 5_000_000

func (e *Evaluator) scanInto(ctx context.Context, st jetstream.Stream, env string, conds []*rules.Cond, extra map[string]map[string]*rules.Agg) error {
	info, err := st.Info(ctx)
	if err != nil {
		return err
	}
	to := info.State.LastSeq
	from := info.State.FirstSeq
	scanned := 0
	for from <= to && to > 0 {
		evs, last, full, err := e.read(ctx, st, env, from, to, 50_000)
		if err != nil {
			return err
		}
		for _, ev := range evs {
			for _, c := range conds {
				if !c.Matches(ev.Source, ev.Name, ev.Props) {
					continue
				}
				a := extra[c.Key][ev.User]
				if a == nil {
					a = &rules.Agg{First: ev.Time, Last: ev.Time}
					extra[c.Key][ev.User] = a
				}
				a.First, a.Last = min(a.First, ev.Time), max(a.Last, ev.Time)
				addDay(a, rules.Day(ev.Time))
			}
		}
		scanned += len(evs)
		if !full {
			return nil
		}
		if scanned >= maxScan {
			return fmt.Errorf("preview: more than %d retained events to read; save the segment to compute it", maxScan)
		}
		from = last + 1
	}
	return nil
}

// addDay counts one event on day in a's ascending day list.
func addDay(a *rules.Agg, day int32) {
	i := len(a.Days)
	for i > 0 && a.Days[i-1].Day > day {
		i--
	}
	if i > 0 && a.Days[i-1].Day == day {
		a.Days[i-1].N++
		return
	}
	a.Days = append(a.Days, rules.DayCount{})
	copy(a.Days[i+1:], a.Days[i:])
	a.Days[i] = rules.DayCount{Day: day, N: 1}
}
