package computed

import (
	"context"
	"errors"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// readBatch is how many messages the reader's pull keeps buffered.
const readBatch = 10_000

// streamReader reads one environment's events in stream order with one
// ordered consumer kept across reads: each read continues where the last
// stopped.
type streamReader struct {
	st     jetstream.Stream
	filter string
	oc     jetstream.Consumer
	it     jetstream.MessagesContext
	// next is the first sequence not read yet.
	next uint64
	// held was delivered beyond the last read's end: the next read's first.
	held    jetstream.Msg
	heldSeq uint64
	// last is the metadata of the last message taken from the consumer.
	lastConsumer  string
	lastDelivered uint64
	lastPending   uint64
}

func newStreamReader(st jetstream.Stream, filter string, from uint64) *streamReader {
	return &streamReader{st: st, filter: filter, next: from}
}

// seek makes the next read start at from (a new consumer when it is not
// where the current one stands).
func (r *streamReader) seek(from uint64) {
	if from == r.next {
		return
	}
	r.close()
	r.next = from
}

func (r *streamReader) at() uint64 { return r.next }

func (r *streamReader) close() {
	if r.it != nil {
		r.it.Stop()
	}
	r.it, r.oc, r.held = nil, nil, nil
}

func (r *streamReader) open(ctx context.Context) error {
	cfg := jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{r.filter},
		DeliverPolicy:  jetstream.DeliverByStartSequencePolicy,
		OptStartSeq:    r.next,
	}
	// Matching every message against the environment's filter costs the
	// server more than passing the few of other environments: when the
	// environment holds most of the stream, read all of it (the tally
	// skips the others by subject).
	info, err := r.st.Info(ctx, jetstream.WithSubjectFilter(r.filter))
	if err != nil {
		return err
	}
	var mine uint64
	for _, n := range info.State.Subjects {
		mine += n
	}
	if mine*4 >= info.State.Msgs*3 {
		cfg.FilterSubjects = nil
	}
	oc, err := r.st.OrderedConsumer(ctx, cfg)
	if err != nil {
		return err
	}
	it, err := oc.Messages(jetstream.PullMaxMessages(readBatch))
	if err != nil {
		return err
	}
	r.oc, r.it = oc, it
	r.lastConsumer, r.lastDelivered = "", 0
	// A new consumer's count of pending messages tells at once whether
	// there is anything to wait for.
	r.lastPending = oc.CachedInfo().NumPending
	return nil
}

// read passes the messages with sequences from r.next through `to` to fn,
// in order; fn returning true stops the read after that message. It
// returns the last sequence read through (to, unless fn stopped it).
func (r *streamReader) read(ctx context.Context, to uint64, fn func(seq uint64, subject string, data []byte) bool) (uint64, error) {
	if r.next > to {
		return r.next - 1, nil
	}
	if r.held != nil {
		if r.heldSeq > to {
			r.next = to + 1
			return to, nil
		}
		m, seq := r.held, r.heldSeq
		r.held = nil
		r.next = seq + 1
		if fn(seq, m.Subject(), m.Data()) || seq == to {
			return seq, nil
		}
	}
	if r.it == nil {
		if err := r.open(ctx); err != nil {
			return 0, err
		}
	}
	for {
		if err := ctx.Err(); err != nil {
			return 0, err
		}
		// At the stream's end (as last seen) a short wait, then the
		// consumer says whether anything up to now is left.
		var m jetstream.Msg
		var err error
		if r.lastPending > 0 {
			m, err = r.it.Next(jetstream.NextMaxWait(5 * time.Second)) // more is on its way
		} else {
			m, err = r.it.Next(jetstream.NextMaxWait(20 * time.Millisecond))
		}
		if errors.Is(err, nats.ErrTimeout) {
			info, err := r.oc.Info(ctx)
			if err != nil {
				return 0, err
			}
			// Everything the consumer delivered was taken and nothing
			// matching is left: all messages up to now (past `to`) are read.
			if info.NumPending == 0 && info.Delivered.Consumer == r.delivered(info.Name) {
				r.next = to + 1
				return to, nil
			}
			r.lastPending = info.NumPending
			continue
		}
		if err != nil {
			return 0, err
		}
		md, err := m.Metadata()
		if err != nil {
			return 0, err
		}
		r.lastConsumer, r.lastDelivered, r.lastPending = md.Consumer, md.Sequence.Consumer, md.NumPending
		seq := md.Sequence.Stream
		if seq > to {
			r.held, r.heldSeq = m, seq
			r.next = to + 1
			return to, nil
		}
		r.next = seq + 1
		if fn(seq, m.Subject(), m.Data()) || seq == to {
			return seq, nil
		}
	}
}

// delivered is how many messages the consumer named has delivered that
// this reader took.
func (r *streamReader) delivered(name string) uint64 {
	if name != r.lastConsumer {
		return 0
	}
	return r.lastDelivered
}
