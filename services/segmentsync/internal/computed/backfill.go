package computed

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/seghub/seghub/services/segmentsync/internal/rules"
	"github.com/seghub/seghub/services/segmentsync/internal/store"
)

// maxTallyEntries bounds a read's user-condition aggregates in memory: past
// it the read is applied and the next part continues from there.
const maxTallyEntries = 4_000_000

// progressEvery is how often a read reports how far it got.
const progressEvery = time.Second

// background runs a read's store writes one at a time beside it; a write
// offered while one runs is declined (the read offers again later).
type background struct {
	jobs chan func(context.Context) error
	done chan struct{}
	mu   sync.Mutex
	err  error
}

func newBackground(ctx context.Context) *background {
	b := &background{jobs: make(chan func(context.Context) error), done: make(chan struct{})}
	go func() {
		defer close(b.done)
		for job := range b.jobs {
			if err := job(ctx); err != nil {
				b.mu.Lock()
				b.err = err
				b.mu.Unlock()
				for range b.jobs { // the rest are dropped
				}
				return
			}
		}
	}()
	return b
}

// try hands job over if no write is running.
func (b *background) try(job func(context.Context) error) bool {
	select {
	case b.jobs <- job:
		return true
	default:
		return false
	}
}

func (b *background) failed() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.err != nil
}

// wait lets the last write end and returns the first error.
func (b *background) wait() error {
	close(b.jobs)
	<-b.done
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.err
}

// startBackfills starts a reader for each environment with computing
// conditions that has none running. Without a stream (no relay has run)
// there is nothing to read: the conditions are live at once.
func (e *Evaluator) startBackfills(ctx context.Context, st jetstream.Stream) error {
	conds, err := e.o.Store.Conditions(ctx)
	if err != nil {
		return err
	}
	for _, c := range conds {
		if c.State != store.Computing {
			continue
		}
		if st == nil {
			if err := e.o.Store.MarkConditionLive(ctx, c.Env, c.Cond.Key); err != nil {
				return err
			}
			continue
		}
		e.bfMu.Lock()
		if !e.backfills[c.Env] {
			e.backfills[c.Env] = true
			e.bg.Add(1)
			go e.runBackfill(ctx, st, c.Env)
		}
		e.bfMu.Unlock()
	}
	return nil
}

func (e *Evaluator) runBackfill(ctx context.Context, st jetstream.Stream, env string) {
	defer e.bg.Done()
	err := e.backfill(ctx, st, env)
	if err != nil && ctx.Err() == nil {
		e.o.Logger.Warn("computed segments: backfill", "env", env, "error", err.Error())
		// The next prepare starts it again from the stored marks.
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
	e.bfMu.Lock()
	delete(e.backfills, env)
	e.bfMu.Unlock()
	e.Wake()
}

// computingConds returns env's computing conditions.
func (e *Evaluator) computingConds(ctx context.Context, env string) ([]*store.ConditionState, error) {
	all, err := e.o.Store.Conditions(ctx)
	if err != nil {
		return nil, err
	}
	var out []*store.ConditionState
	for _, c := range all {
		if c.Env == env && c.State == store.Computing {
			out = append(out, c)
		}
	}
	return out, nil
}

// backfill reads env's events for all its computing conditions, from the
// lowest scanned mark to the live position, with one consumer; applies
// them; reads what the live consumer passed meanwhile again, and when that
// is less than a batch, reads the rest and hands the conditions over to
// the live consumer under the evaluator's lock (the live position cannot
// move in between: no event is missed or counted twice).
func (e *Evaluator) backfill(ctx context.Context, st jetstream.Stream, env string) error {
	r := newEventReader(e.o.JS, e.o.Dial, st, e.prefix, env, 0)
	defer r.close()
	for {
		conds, pos, first, err := e.backfillState(ctx, st, env)
		if err != nil || len(conds) == 0 {
			return err
		}
		from := max(minScanned(conds)+1, first)
		if pos == 0 || from > pos || pos-from < uint64(e.o.BackfillChunk) {
			return e.handOver(ctx, st, r, env)
		}
		r.seek(from)
		if _, err := e.readPart(ctx, r, env, conds, pos, first); err != nil {
			return err
		}
	}
}

// backfillState is where env's backfill stands: its computing conditions,
// the live position and (when there is one) the stream's first retained
// sequence.
func (e *Evaluator) backfillState(ctx context.Context, st jetstream.Stream, env string) (conds []*store.ConditionState, pos, first uint64, err error) {
	if conds, err = e.computingConds(ctx, env); err != nil || len(conds) == 0 {
		return nil, 0, 0, err
	}
	if pos, err = e.o.Store.Position(ctx); err != nil || pos == 0 {
		return conds, pos, 0, err
	}
	info, err := st.Info(ctx)
	if err != nil {
		return nil, 0, 0, err
	}
	return conds, pos, info.State.FirstSeq, nil
}

func minScanned(conds []*store.ConditionState) uint64 {
	m := conds[0].Scanned
	for _, c := range conds[1:] {
		m = min(m, c.Scanned)
	}
	return m
}

// readPart reads env's events from r's place through pos (or until the
// tally is full) and applies them; it returns the sequence read through.
func (e *Evaluator) readPart(ctx context.Context, r eventReader, env string, conds []*store.ConditionState, pos, first uint64) (uint64, error) {
	tc := make([]tallyCond, len(conds))
	since := make(map[string]uint64, len(conds))
	keys := make([]string, len(conds))
	for i, c := range conds {
		tc[i] = tallyCond{cond: c.Cond, since: c.Scanned}
		since[c.Cond.Key] = c.Scanned
		keys[i] = c.Cond.Key
	}
	t := newTally(env, tc)
	start := time.Now()
	reported := start
	// The progress is recorded by a goroutine of its own, so the read
	// never waits for the store.
	bg := newBackground(ctx)
	through := pos
	var err error
	if r.at() <= pos {
		n := 0
		through, err = r.read(ctx, pos, func(seq uint64, subject string, data []byte) bool {
			t.addMsg(e.prefix, subject, seq, data)
			if n++; n%256 == 0 {
				if bg.failed() {
					return true
				}
				if time.Since(reported) >= progressEvery &&
					bg.try(func(ctx context.Context) error { return e.o.Store.BackfillProgress(ctx, env, keys, seq, pos, first) }) {
					reported = time.Now()
				}
			}
			return t.entries() >= maxTallyEntries
		})
	}
	if berr := bg.wait(); err == nil {
		err = berr
	}
	if err != nil {
		return 0, err
	}
	if t.unreadable > 0 {
		e.o.Logger.Warn("computed segments: unreadable events skipped", "env", env, "count", t.unreadable)
	}
	b := &store.BackfillRead{Env: env, Since: since, Through: through, Target: pos, First: first, Users: t.userAggs()}
	read := time.Since(start)
	if err := e.o.Store.ApplyBackfill(ctx, b); err != nil {
		return 0, fmt.Errorf("apply the backfill of %s through %d: %w", env, through, err)
	}
	if t.read > 0 {
		e.o.Logger.Info("computed segments: backfill read applied", "env", env, "through", through, "target", pos, "events", t.read,
			"users", len(b.Users), "entries", t.entries(), "read", read.Round(time.Millisecond), "applied", (time.Since(start) - read).Round(time.Millisecond))
	}
	return through, nil
}

// handOver reads the last events up to the live position and makes env's
// computing conditions live, holding the evaluator's lock so the live
// consumer waits meanwhile; then evaluates the segments that are ready.
func (e *Evaluator) handOver(ctx context.Context, st jetstream.Stream, r eventReader, env string) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	conds, pos, first, err := e.backfillState(ctx, st, env)
	if err != nil || len(conds) == 0 {
		return err
	}
	if pos > 0 {
		r.seek(max(minScanned(conds)+1, first))
		through, err := e.readPart(ctx, r, env, conds, pos, first)
		if err != nil {
			return err
		}
		if through < pos {
			return nil // the tally filled up: the next round goes on
		}
		if conds, err = e.computingConds(ctx, env); err != nil {
			return err
		}
	}
	for _, c := range conds {
		// A condition whose mark is not at the position (changed under the
		// read) is read again by the next round.
		if pos == 0 || c.Scanned >= pos {
			if err := e.o.Store.MarkConditionLive(ctx, env, c.Cond.Key); err != nil {
				return err
			}
		}
	}
	start := time.Now()
	n, err := e.o.Store.InitComputedSegments(ctx, e.o.Now())
	if n > 0 {
		e.o.Logger.Info("computed segments live", "count", n, "first evaluation", time.Since(start).Round(time.Millisecond))
	}
	return err
}

// preview reads the retained events of env for conds into a tally (at most
// maxScan of them).
func (e *Evaluator) preview(ctx context.Context, st jetstream.Stream, env string, conds []*rules.Cond) (map[string]map[string]*rules.Agg, error) {
	tc := make([]tallyCond, len(conds))
	for i, c := range conds {
		tc[i] = tallyCond{cond: c}
	}
	t := newTally(env, tc)
	info, err := st.Info(ctx)
	if err != nil {
		return nil, err
	}
	if info.State.LastSeq == 0 || info.State.Msgs == 0 {
		return t.byKey(), nil
	}
	r := newEventReader(e.o.JS, e.o.Dial, st, e.prefix, env, info.State.FirstSeq)
	defer r.close()
	n := 0
	through, err := r.read(ctx, info.State.LastSeq, func(seq uint64, subject string, data []byte) bool {
		t.addMsg(e.prefix, subject, seq, data)
		n++
		return n >= maxScan
	})
	if err != nil {
		return nil, err
	}
	if through < info.State.LastSeq {
		return nil, fmt.Errorf("preview: more than %d retained events to read; save the segment to compute it", maxScan)
	}
	return t.byKey(), nil
}
