// Package relay moves events through JetStream: the publisher that stores
// them (acknowledging only what JetStream acknowledged) in partitions by user,
// one durable consumer per sink and partition that delivers them in per-user
// order with retries and dead letters (the partitions shared out among
// replicas by leases), and the identity attacher.
package relay

import (
	"context"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/trace"
)

const (
	msgIDHeader   = jetstream.MsgIDHeader
	defaultMaxAge = 7 * 24 * time.Hour
	stallWait     = 10 * time.Second
)

// Layout names a deployment's stream and subjects. Events of an environment
// go to <ns>.events.<env>.<partition>.<source>, the partition a hash of the
// user id, so each partition keeps its users' order and replicas can share a
// sink's work partition by partition. A replayed dead letter goes to
// <ns>.events.<env>.<partition>._replay.<sink connection>, so one filter
// subject per environment and partition (all JetStream 2.9 servers allow)
// covers a sink's events and replays, and only its sink takes the replay.
// Deployments (or test runs) sharing one NATS use different namespaces.
type Layout struct {
	Stream, Events string
	// Partitions is how many partitions each environment's events are
	// spread over (SEGHUB_EVENT_PARTITIONS). Changing it moves users to
	// other partitions: drain the sinks first.
	Partitions int
}

const replayToken = "_replay"

// DefaultPartitions is the partition count when none is set.
const DefaultPartitions = 16

// NewLayout is the layout of namespace (default "seghub") with
// DefaultPartitions partitions.
func NewLayout(namespace string) Layout {
	if namespace == "" {
		namespace = "seghub"
	}
	return Layout{Stream: strings.ToUpper(namespace) + "_EVENTS", Events: namespace + ".events.", Partitions: DefaultPartitions}
}

// WithPartitions is l with n partitions (n < 1 keeps l's).
func (l Layout) WithPartitions(n int) Layout {
	if n >= 1 {
		l.Partitions = n
	}
	return l
}

// Partition is the partition of user's events.
func (l Layout) Partition(user string) int {
	h := fnv.New32a()
	_, _ = h.Write([]byte(user))
	return int(h.Sum32() % uint32(max(l.Partitions, 1)))
}

// Subject is where an envelope is published.
func (l Layout) Subject(e *Envelope) string {
	return l.Events + e.Env + "." + strconv.Itoa(l.Partition(e.User)) + "." + e.Source
}

// ReplaySubject is where a dead letter of sink conn is replayed, in the
// partition of the event's user.
func (l Layout) ReplaySubject(env, user, conn string) string {
	return l.Events + env + "." + strconv.Itoa(l.Partition(user)) + "." + replayToken + "." + conn
}

// PartitionFilter is the filter subject of an environment's events and
// replays in one partition.
func (l Layout) PartitionFilter(env string, partition int) string {
	return l.Events + env + "." + strconv.Itoa(partition) + ".>"
}

// AnySource is the filter subject of every environment's and partition's
// events of source.
func (l Layout) AnySource(source string) string { return l.Events + "*.*." + source }

// AnyReplay is the filter subject of every replay to sink conn.
func (l Layout) AnyReplay(conn string) string { return l.Events + "*.*." + replayToken + "." + conn }

// ForSink classifies a subject for sink conn of env: whether the message is
// for it at all, and whether it is a replay (which skips routing).
func (l Layout) ForSink(subject, env, conn string) (mine, replay bool) {
	rest, ok := strings.CutPrefix(subject, l.Events+env+".")
	if !ok {
		return false, false
	}
	part, rest, ok := strings.Cut(rest, ".")
	if _, err := strconv.Atoi(part); !ok || err != nil {
		return false, false
	}
	if r, ok := strings.CutPrefix(rest, replayToken+"."); ok {
		return r == conn, true
	}
	return !strings.Contains(rest, "."), false
}

// ForLegacySink is ForSink for the subjects of releases before partitions:
// <events><env>.<source> and <events><env>._replay.<conn>. Partitioned
// subjects are not the legacy sink's (its filter takes them too; the
// partitions' consumers deliver them).
func (l Layout) ForLegacySink(subject, env, conn string) (mine, replay bool) {
	rest, ok := strings.CutPrefix(subject, l.Events+env+".")
	if !ok {
		return false, false
	}
	if r, ok := strings.CutPrefix(rest, replayToken+"."); ok {
		return r == conn, true
	}
	return rest != "" && !strings.Contains(rest, "."), false
}

// Envelope is an event as stored in JetStream.
type Envelope struct {
	ID     string `json:"id"`
	Env    string `json:"env"`
	Source string `json:"src"`
	Conn   string `json:"conn,omitempty"`
	User   string `json:"user"`
	Name   string `json:"name"`
	// Time in unix microseconds.
	Time  int64          `json:"ts"`
	Props map[string]any `json:"props,omitempty"`
	// Forward is false when the source connection's send_events was off at
	// ingest: such events are kept for the record but go to no sink.
	Forward bool `json:"fwd"`
	// AppcuesUserID is the Appcues identity to attach as appcuesUserID.
	AppcuesUserID string `json:"acid,omitempty"`
	// Received in unix microseconds (delivery lag is measured from it).
	Received int64 `json:"rcv"`
	// span is the event's deliver span while a sink sends it (not stored).
	span trace.Span
}

// StreamOptions configure the events stream.
type StreamOptions struct {
	// DedupWindow is how long JetStream remembers event ids.
	DedupWindow time.Duration
	// MaxAge is how long events are kept.
	MaxAge time.Duration
	// Replicas of the stream on a clustered JetStream.
	Replicas int
	Layout   Layout
}

// EnsureStream creates or updates the events stream.
func EnsureStream(ctx context.Context, js jetstream.JetStream, o StreamOptions) (jetstream.Stream, error) {
	if o.DedupWindow <= 0 {
		o.DedupWindow = 2 * time.Minute
	}
	if o.MaxAge <= 0 {
		o.MaxAge = defaultMaxAge
	}
	if o.Replicas <= 0 {
		o.Replicas = 1
	}
	st, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:        o.Layout.Stream,
		Description: "seghub events: ingested, durable, delivered to sinks",
		Subjects:    []string{o.Layout.Events + ">"},
		Storage:     jetstream.FileStorage,
		Retention:   jetstream.LimitsPolicy,
		MaxAge:      o.MaxAge,
		Duplicates:  o.DedupWindow,
		Replicas:    o.Replicas,
		// Computed segments' backfill reads the stream with batched direct
		// gets (half the CPU of a consumer per event).
		AllowDirect: true,
	})
	if err != nil {
		return nil, fmt.Errorf("events stream: %w", err)
	}
	return st, nil
}

// Publisher stores envelopes in JetStream.
type Publisher struct {
	js     jetstream.JetStream
	l      Layout
	tracer trace.Tracer
}

// NewPublisher returns a publisher on js whose spans t records (nil: the
// global provider's).
func NewPublisher(js jetstream.JetStream, l Layout, t trace.Tracer) *Publisher {
	return &Publisher{js: js, l: l, tracer: t}
}

// Pending is a publish in flight.
type Pending struct {
	envs    []*Envelope
	futures []jetstream.PubAckFuture
}

// Start publishes envs without waiting for JetStream's acknowledgements, so
// the next batch can be prepared meanwhile; Wait collects them. Each message
// carries ctx's trace context.
func (p *Publisher) Start(ctx context.Context, envs []*Envelope) (*Pending, error) {
	pd := &Pending{envs: envs, futures: make([]jetstream.PubAckFuture, len(envs))}
	th := traceHeader(ctx)
	for i, e := range envs {
		data, err := json.Marshal(e)
		if err != nil {
			return nil, err
		}
		m := &nats.Msg{Subject: p.l.Subject(e), Data: data, Header: nats.Header{msgIDHeader: []string{e.Env + "/" + e.ID}}}
		withTrace(m, th)
		// Past the pending limit, wait for room (back-pressure) rather than fail.
		if pd.futures[i], err = p.js.PublishMsgAsync(m, jetstream.WithStallWait(stallWait)); err != nil {
			return nil, fmt.Errorf("publish event %s: %w", e.ID, err)
		}
	}
	return pd, nil
}

// Wait returns, per envelope, whether JetStream already held its id (a
// duplicate), once every envelope is stored. An error means some may not
// be; a retry with the same ids is safe.
func (pd *Pending) Wait(ctx context.Context) ([]bool, error) {
	dups := make([]bool, len(pd.envs))
	for i, f := range pd.futures {
		select {
		case ack := <-f.Ok():
			dups[i] = ack.Duplicate
		case err := <-f.Err():
			return nil, fmt.Errorf("store event %s: %w", pd.envs[i].ID, err)
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	return dups, nil
}

// Publish stores envs and waits until JetStream holds them all.
func (p *Publisher) Publish(ctx context.Context, envs []*Envelope) (dups []bool, err error) {
	ctx, span := p.startStore(ctx, len(envs))
	defer func() { endWithError(span, err) }()
	pd, err := p.Start(ctx, envs)
	if err != nil {
		return nil, err
	}
	return pd.Wait(ctx)
}

// Republish stores a dead letter again for one sink of env under msgID
// (JetStream drops a second copy within its dedup window), in the trace of
// traceParent (the event's) when it names one.
func (p *Publisher) Republish(ctx context.Context, env, sink, msgID string, envelope []byte, traceParent string) (err error) {
	ctx, span := p.startReplay(ctx, traceParent, sink)
	defer func() { endWithError(span, err) }()
	var e Envelope
	if err := json.Unmarshal(envelope, &e); err != nil {
		return fmt.Errorf("dead letter envelope: %w", err)
	}
	m := &nats.Msg{Subject: p.l.ReplaySubject(env, e.User, sink), Data: envelope, Header: nats.Header{msgIDHeader: []string{msgID}}}
	withTrace(m, traceHeader(ctx))
	_, err = p.js.PublishMsg(ctx, m)
	return err
}
