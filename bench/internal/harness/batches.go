package harness

import (
	"context"
	"sync"
	"time"

	targetingv1 "github.com/seghub/seghub/gen/seghub/targeting/v1"
)

// Batch is one paced write and when each observer first saw it.
type Batch struct {
	// Last is the id whose visibility shows the whole batch's (a batch is
	// applied in one transaction, in order).
	Last        string
	Sent, Acked time.Time
	// Seen is when each observer first saw Last (zero: not yet).
	Seen []time.Time
}

// Batches sends writes with Paced and tracks each until every one of its
// observers (a targeting lookup, an in-process client...) has seen it.
type Batches struct {
	observers int
	mu        sync.Mutex
	all       []*Batch
	pending   []*Batch // not yet seen by every observer
}

// NewBatches tracks batches for that many observers.
func NewBatches(observers int) *Batches { return &Batches{observers: observers} }

// Send paces one batch per interval for d: prepare(n) builds batch n on the
// pacing goroutine and returns its last id and its write, which runs
// concurrently. It returns how long sending took and the first write error.
func (bs *Batches) Send(every, d time.Duration, prepare func(n int) (last string, write func() error)) (time.Duration, error) {
	return Paced(every, d, func(n int) func() error {
		last, write := prepare(n)
		b := &Batch{Last: last, Seen: make([]time.Time, bs.observers)}
		return func() error {
			bs.mu.Lock()
			b.Sent = time.Now()
			bs.all = append(bs.all, b)
			bs.pending = append(bs.pending, b)
			bs.mu.Unlock()
			err := write()
			bs.mu.Lock()
			b.Acked = time.Now()
			bs.mu.Unlock()
			return err
		}
	})
}

// Unseen returns up to limit batches observer has not seen yet, oldest first.
func (bs *Batches) Unseen(observer, limit int) []*Batch {
	bs.mu.Lock()
	defer bs.mu.Unlock()
	var out []*Batch
	for _, b := range bs.pending {
		if len(out) == limit {
			break
		}
		if b.Seen[observer].IsZero() {
			out = append(out, b)
		}
	}
	return out
}

// MarkSeen records that observer saw the batches where seen[i] holds, at.
func (bs *Batches) MarkSeen(observer int, batches []*Batch, seen func(i int) bool, at time.Time) {
	bs.mu.Lock()
	defer bs.mu.Unlock()
	for i, b := range batches {
		if seen(i) && b.Seen[observer].IsZero() {
			b.Seen[observer] = at
		}
	}
	keep := bs.pending[:0]
	for _, b := range bs.pending {
		for _, t := range b.Seen {
			if t.IsZero() {
				keep = append(keep, b)
				break
			}
		}
	}
	bs.pending = keep
}

// Wait waits (at most d) until every observer has seen every batch.
func (bs *Batches) Wait(d time.Duration) {
	WaitUntil(d, func() bool {
		bs.mu.Lock()
		defer bs.mu.Unlock()
		return len(bs.pending) == 0
	})
}

// All returns every batch sent; read it once the observers have stopped.
func (bs *Batches) All() []*Batch {
	bs.mu.Lock()
	defer bs.mu.Unlock()
	return append([]*Batch(nil), bs.all...)
}

// PhaseTimes are a phase's times, each from sending a batch: its write's
// acknowledgment, and per observer, when it saw the batch, from the send and
// from the acknowledgment. Batches an observer missed count in Missing and
// in no observer's times.
type PhaseTimes struct {
	Ack           []time.Duration
	Seen, AckSeen [][]time.Duration
	Missing       int
}

// Times computes the phase's times; call it once the observers stopped.
func (bs *Batches) Times() PhaseTimes {
	l := PhaseTimes{Seen: make([][]time.Duration, bs.observers), AckSeen: make([][]time.Duration, bs.observers)}
	for _, b := range bs.All() {
		l.Ack = append(l.Ack, b.Acked.Sub(b.Sent))
		missed := false
		for _, t := range b.Seen {
			missed = missed || t.IsZero()
		}
		if missed {
			l.Missing++
			continue
		}
		for o, t := range b.Seen {
			l.Seen[o] = append(l.Seen[o], t.Sub(b.Sent))
			l.AckSeen[o] = append(l.AckSeen[o], max(0, t.Sub(b.Acked)))
		}
	}
	return l
}

// PollTargeting asks targeting every interval, until ctx ends, whether the
// last ids of the batches observer has not seen are members of segment sid
// (one BatchCheck of up to 10 000).
func (bs *Batches) PollTargeting(ctx context.Context, observer int, every time.Duration, tg targetingv1.TargetingServiceClient, sid string) {
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		ask := bs.Unseen(observer, 10000)
		if len(ask) == 0 {
			continue
		}
		checks := make([]*targetingv1.MembershipCheck, len(ask))
		for i, b := range ask {
			checks[i] = &targetingv1.MembershipCheck{UserId: b.Last, SegmentId: sid}
		}
		r, err := tg.BatchCheck(ctx, &targetingv1.BatchCheckRequest{Checks: checks})
		if err != nil {
			continue
		}
		yes := r.GetIsMember()
		bs.MarkSeen(observer, ask, func(i int) bool { return i < len(yes) && yes[i] }, time.Now())
	}
}
