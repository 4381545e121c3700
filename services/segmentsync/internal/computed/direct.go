package computed

import (
	"context"
	"errors"
	"fmt"
	"net"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// directChunk is how many sequences one batched direct get asks for.
const directChunk = 10_000

// directWait bounds a direct get's answer.
const directWait = 30 * time.Second

// eventReader reads an environment's events in stream order: each read
// continues where the last stopped, and fn gets every message with its
// sequence (subject "" when the reader could not tell it).
type eventReader interface {
	seek(from uint64)
	// at is the first sequence not read yet.
	at() uint64
	read(ctx context.Context, to uint64, fn func(seq uint64, subject string, data []byte) bool) (uint64, error)
	close()
}

// newEventReader reads env's events with batched direct gets where the
// stream and server allow them, else with an ordered consumer. With dial
// (a connection to the embedded server) each worker gets on a connection
// of its own (wireGetter).
func newEventReader(js jetstream.JetStream, dial func() (net.Conn, error), st jetstream.Stream, prefix, env string, from uint64) eventReader {
	r := newStreamReader(st, prefix+env+".>", from)
	if js == nil || !directGetBatches(js.Conn()) {
		return r
	}
	api := apiPrefix(js.Options()) + "DIRECT.GET." + st.CachedInfo().Config.Name
	d := &directReader{st: st, env: prefix + env + ".>", next: from, consumer: r, chunk: directChunk, workers: min(max(runtime.GOMAXPROCS(0), 1), 4)}
	d.open = func(ctx context.Context) (directGetter, error) {
		if dial != nil {
			return dialWire(ctx, dial, api)
		}
		return newNATSGetter(js.Conn(), api)
	}
	return d
}

// directGetter does a worker's batched direct gets.
type directGetter interface {
	// get asks for batch messages from sequence lo and appends them to res
	// (with headers: their sequences too, those past lo+batch-1 left out);
	// it returns the last sequence the server sent.
	get(ctx context.Context, lo, batch uint64, headers bool, res *directResult) (uint64, error)
	close()
}

// directReader reads ranges of the events stream with batched direct gets
// (NATS 2.11+) without headers: no consumer, no per-message headers or
// acknowledgment subjects — less than half the CPU per event of an ordered
// consumer (bench/RESULTS.md). Several workers fetch chunks at once while
// fn takes them in order.
//
// Without headers a message's sequence is known only by its place, so a
// chunk counts as read as is only when the stream had no gap in it (its
// last sequence is its first plus its count less one); a chunk with gaps
// is asked again with headers. A message's subject is not known either, so
// the reader is used only while the environment has no replay subjects (a
// replay stores an event a second time) — otherwise the read goes through
// the ordered consumer — and other environments' events are told apart by
// their envelopes.
type directReader struct {
	open     func(ctx context.Context) (directGetter, error)
	st       jetstream.Stream
	env      string // the environment's subjects
	next     uint64
	chunk    uint64 // sequences a direct get asks for
	workers  int    // chunks fetched at once
	consumer *streamReader
}

func (r *directReader) seek(from uint64) {
	r.next = from
	r.consumer.seek(from)
}

func (r *directReader) close() { r.consumer.close() }

func (r *directReader) at() uint64 { return r.next }

func (r *directReader) read(ctx context.Context, to uint64, fn func(seq uint64, subject string, data []byte) bool) (uint64, error) {
	if r.next > to {
		return r.next - 1, nil
	}
	direct, err := r.usable(ctx)
	if err != nil {
		return 0, err
	}
	if !direct {
		r.consumer.seek(r.next)
		through, err := r.consumer.read(ctx, to, fn)
		if err == nil {
			r.next = through + 1
		}
		return through, err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	from := r.next
	chunks := (to-from)/r.chunk + 1
	workers := min(uint64(r.workers), chunks)
	// Worker w fetches chunks w, w+workers, …: taking them round robin
	// hands fn the stream in order.
	out := make([]chan directResult, workers)
	for w := range out {
		out[w] = make(chan directResult, 1)
		go r.fetchEvery(ctx, from, to, uint64(w), workers, out[w])
	}
	for k := uint64(0); k < chunks; k++ {
		var res directResult
		select {
		case res = <-out[k%workers]:
		case <-ctx.Done():
			return 0, ctx.Err()
		}
		if res.err != nil {
			return 0, res.err
		}
		for i, data := range res.data {
			seq := res.seqs[i]
			r.next = seq + 1
			if fn(seq, "", data) {
				return seq, nil
			}
		}
		r.next = min(from+(k+1)*r.chunk, to+1)
	}
	r.next = to + 1
	return to, nil
}

// usable tells whether a direct read of the environment may start now: the
// stream allows direct gets and holds no replays of the environment (a
// replay stored later has a sequence past any read's end, the live
// position).
func (r *directReader) usable(ctx context.Context) (bool, error) {
	info, err := r.st.Info(ctx, jetstream.WithSubjectFilter(r.env))
	if err != nil {
		return false, err
	}
	if !info.Config.AllowDirect {
		return false, nil
	}
	for subj := range info.State.Subjects {
		if !counted(subj) {
			return false, nil
		}
	}
	return true, nil
}

// directResult is one chunk: its messages' data and sequences.
type directResult struct {
	data  [][]byte
	seqs  []uint64
	arena []byte // holds data where the getter copies payloads
	err   error
}

func (r *directReader) fetchEvery(ctx context.Context, from, to, w, step uint64, out chan<- directResult) {
	g, err := r.open(ctx)
	if err != nil {
		out <- directResult{err: err}
		return
	}
	defer g.close()
	arena := 0 // the last chunk's payload bytes: the next one's arena
	for k := w; ; k += step {
		lo := from + k*r.chunk
		if lo > to || lo < from {
			return
		}
		hi := min(lo+r.chunk-1, to)
		res := directResult{data: make([][]byte, 0, hi-lo+1), seqs: make([]uint64, 0, hi-lo+1), arena: make([]byte, 0, arena+arena/8)}
		res.err = r.fetch(ctx, g, lo, hi, &res)
		arena = len(res.arena)
		select {
		case out <- res:
		case <-ctx.Done():
			return
		}
		if res.err != nil {
			return
		}
	}
}

// fetch appends the messages with sequences lo through hi to res.
func (r *directReader) fetch(ctx context.Context, g directGetter, lo, hi uint64, res *directResult) error {
	for lo <= hi {
		n0 := len(res.data)
		last, err := g.get(ctx, lo, hi-lo+1, false, res)
		if err != nil {
			return err
		}
		n := uint64(len(res.data) - n0)
		if n == 0 {
			return nil // nothing at or after lo is left
		}
		if last == lo+n-1 {
			for s := lo; s <= last; s++ {
				res.seqs = append(res.seqs, s)
			}
			lo = last + 1 // a chunk cut short by size goes on from there
			continue
		}
		// Gaps: ask again with headers, which carry each sequence.
		res.data = res.data[:n0]
		_, err = g.get(ctx, lo, hi-lo+1, true, res)
		return err
	}
	return nil
}

// natsGetter gets through the shared client (an external server).
type natsGetter struct {
	nc    *nats.Conn
	api   string
	inbox string
	sub   *nats.Subscription
}

func newNATSGetter(nc *nats.Conn, api string) (*natsGetter, error) {
	g := &natsGetter{nc: nc, api: api, inbox: nats.NewInbox()}
	var err error
	// A chunk is ten thousand messages at most: the subscription's default
	// limits hold them.
	if g.sub, err = nc.SubscribeSync(g.inbox); err != nil {
		return nil, err
	}
	return g, nil
}

func (g *natsGetter) close() { _ = g.sub.Unsubscribe() }

func (g *natsGetter) get(ctx context.Context, lo, batch uint64, headers bool, res *directResult) (uint64, error) {
	if err := g.nc.PublishRequest(g.api, g.inbox, []byte(directRequest(lo, batch, headers))); err != nil {
		return 0, err
	}
	hi := lo + batch - 1
	ctx, cancel := context.WithTimeout(ctx, directWait)
	defer cancel()
	var last uint64
	for {
		m, err := g.sub.NextMsgWithContext(ctx)
		if err != nil {
			return 0, fmt.Errorf("direct get of the events from %d: %w", lo, err)
		}
		if m.Header != nil && m.Header.Get("Status") != "" {
			switch m.Header.Get("Status") {
			case "204": // end of the batch
				if headers {
					return last, nil
				}
				return strconv.ParseUint(m.Header.Get(jetstream.LastSequenceHeader), 10, 64)
			case "404": // no message at or after lo
				return last, nil
			default:
				return 0, fmt.Errorf("direct get of the events from %d: %s %s", lo, m.Header.Get("Status"), m.Header.Get("Description"))
			}
		}
		if !headers {
			res.data = append(res.data, m.Data)
			continue
		}
		seq, err := strconv.ParseUint(m.Header.Get(jetstream.SequenceHeader), 10, 64)
		if err != nil {
			return 0, errors.New("direct get: a message without its sequence")
		}
		if last = seq; seq > hi {
			continue // the batch ran past the chunk over the gaps
		}
		res.data = append(res.data, m.Data)
		res.seqs = append(res.seqs, seq)
	}
}

// directGetBatches tells whether the server answers batched direct gets
// (NATS 2.11 and later).
func directGetBatches(nc *nats.Conn) bool {
	if nc == nil {
		return false
	}
	major, rest, _ := strings.Cut(nc.ConnectedServerVersion(), ".")
	minor, _, _ := strings.Cut(rest, ".")
	ma, err1 := strconv.Atoi(major)
	mi, err2 := strconv.Atoi(minor)
	return err1 == nil && err2 == nil && (ma > 2 || ma == 2 && mi >= 11)
}

// apiPrefix is the JetStream API prefix js sends requests with.
func apiPrefix(o jetstream.JetStreamOptions) string {
	switch {
	case o.Domain != "":
		return "$JS." + o.Domain + ".API."
	case o.APIPrefix != "":
		return strings.TrimSuffix(o.APIPrefix, ".") + "."
	default:
		return jetstream.DefaultAPIPrefix
	}
}
