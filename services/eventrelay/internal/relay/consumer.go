package relay

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// SinkConsumerName is the durable consumer of one partition of a sink
// connection.
func SinkConsumerName(connectionID string, partition int) string {
	return "sink_" + connectionID + "_p" + strconv.Itoa(partition)
}

// parseSinkConsumer is SinkConsumerName's inverse (ok false: not a sink's).
func parseSinkConsumer(name string) (conn string, partition int, ok bool) {
	rest, ok := strings.CutPrefix(name, "sink_")
	i := strings.LastIndex(rest, "_p")
	if !ok || i < 0 {
		return "", 0, false
	}
	p, err := strconv.Atoi(rest[i+2:])
	return rest[:i], p, err == nil
}

// SinkConsumer creates (or reopens) the durable consumer of one partition of
// a sink: its environment's events and its own replays in that partition. A new sink starts with the events
// stored since its first route was created (not since its consumer happened
// to be created, which a reconcile tick may delay). A consumer left with unacknowledged messages by a
// stopped process is rewound to its ack floor, so those messages come back
// first and in stream order (JetStream would otherwise redeliver them only
// after their ack wait, behind newer events of the same users).
func SinkConsumer(ctx context.Context, st jetstream.Stream, l Layout, env, connectionID string, partition int, since time.Time, ackWait time.Duration) (jetstream.Consumer, error) {
	name := SinkConsumerName(connectionID, partition)
	cfg := jetstream.ConsumerConfig{
		Durable:       name,
		Description:   fmt.Sprintf("seghub sink %s, partition %d", connectionID, partition),
		FilterSubject: l.PartitionFilter(env, partition),
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       ackWait,
		MaxDeliver:    -1,
		MaxAckPending: 50_000,
		DeliverPolicy: jetstream.DeliverByStartTimePolicy,
		OptStartTime:  &since,
	}
	c, err := st.Consumer(ctx, name)
	switch {
	case errors.Is(err, jetstream.ErrConsumerNotFound):
		return st.CreateConsumer(ctx, cfg)
	case err != nil:
		return nil, fmt.Errorf("sink consumer %s: %w", name, err)
	}
	info := c.CachedInfo()
	if info.NumAckPending == 0 {
		return c, nil
	}
	if err := st.DeleteConsumer(ctx, name); err != nil {
		return nil, fmt.Errorf("rewind sink consumer %s: %w", name, err)
	}
	cfg.DeliverPolicy, cfg.OptStartTime = jetstream.DeliverByStartSequencePolicy, nil
	cfg.OptStartSeq = info.AckFloor.Stream + 1
	return st.CreateConsumer(ctx, cfg)
}

// LegacySinkConsumerName is the durable consumer of a sink as releases
// before partitions named it: one for all its environment's events, under
// subjects without a partition.
func LegacySinkConsumerName(connectionID string) string { return "sink_" + connectionID }

// upgradeConsumerName is the consumer that delivers a sink's legacy
// consumer's events in its place: the legacy consumer stays, untouched, as
// the mark that the sink's partitions must wait, until they are delivered.
func upgradeConsumerName(connectionID string) string { return "sink_" + connectionID + "_upgrade" }

// UpgradeConsumer opens (or creates, from the legacy consumer's ack floor) the
// consumer that delivers a sink's events of the layout before partitions
// (jetstream.ErrConsumerNotFound: the sink has no legacy consumer). Left with
// unacknowledged messages by a stopped process, it is rewound to its ack
// floor as SinkConsumer does, so they come back first and in order.
func UpgradeConsumer(ctx context.Context, st jetstream.Stream, connectionID string, ackWait time.Duration) (jetstream.Consumer, error) {
	name := upgradeConsumerName(connectionID)
	from, err := st.Consumer(ctx, name)
	switch {
	case errors.Is(err, jetstream.ErrConsumerNotFound):
		if from, err = st.Consumer(ctx, LegacySinkConsumerName(connectionID)); err != nil {
			return nil, err
		}
	case err != nil:
		return nil, fmt.Errorf("sink consumer %s: %w", name, err)
	default:
		if from.CachedInfo().NumAckPending == 0 {
			return from, nil
		}
		if err := st.DeleteConsumer(ctx, name); err != nil {
			return nil, fmt.Errorf("rewind sink consumer %s: %w", name, err)
		}
	}
	info := from.CachedInfo()
	cfg := info.Config
	cfg.Name, cfg.Durable = name, name
	cfg.Description = "seghub sink " + connectionID + ", events stored before partitions"
	cfg.DeliverPolicy, cfg.OptStartTime = jetstream.DeliverByStartSequencePolicy, nil
	cfg.OptStartSeq = info.AckFloor.Stream + 1
	if ackWait > 0 {
		cfg.AckWait = ackWait
	}
	return st.CreateConsumer(ctx, cfg)
}

// deleteLegacySinkConsumers removes a sink's consumer of the layout before
// partitions and its upgrade consumer, the legacy one first: it is the mark
// that the partitions wait.
func deleteLegacySinkConsumers(ctx context.Context, st jetstream.Stream, connectionID string) error {
	for _, name := range []string{LegacySinkConsumerName(connectionID), upgradeConsumerName(connectionID)} {
		if err := st.DeleteConsumer(ctx, name); err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
			return fmt.Errorf("delete sink consumer %s: %w", name, err)
		}
	}
	return nil
}

// DeleteSinkConsumer removes the consumer of one partition of a sink (its
// last route is gone).
func DeleteSinkConsumer(ctx context.Context, st jetstream.Stream, connectionID string, partition int) error {
	err := st.DeleteConsumer(ctx, SinkConsumerName(connectionID, partition))
	if errors.Is(err, jetstream.ErrConsumerNotFound) {
		return nil
	}
	return err
}

// Backlog is how many events wait for a consumer (not yet delivered to it,
// or delivered and not yet acknowledged).
func Backlog(ctx context.Context, st jetstream.Stream, name string) (uint64, error) {
	c, err := st.Consumer(ctx, name)
	if err != nil {
		return 0, err
	}
	info, err := c.Info(ctx)
	if err != nil {
		return 0, err
	}
	return info.NumPending + uint64(info.NumAckPending), nil
}

// SinkBacklog is a sink's backlog over all its partitions' consumers; an
// error when it has none yet.
func SinkBacklog(ctx context.Context, st jetstream.Stream, connectionID string, partitions int) (uint64, error) {
	var total uint64
	found := false
	for p := range partitions {
		n, err := Backlog(ctx, st, SinkConsumerName(connectionID, p))
		if errors.Is(err, jetstream.ErrConsumerNotFound) {
			continue
		}
		if err != nil {
			return 0, err
		}
		total, found = total+n, true
	}
	if !found {
		return 0, fmt.Errorf("sink %s: %w", connectionID, jetstream.ErrConsumerNotFound)
	}
	return total, nil
}

// SinkLag is one partition consumer's backlog (as Backlog) and the age of
// the oldest event of its partition it has not acknowledged yet: how far
// behind the sink is there, in events and in time.
func SinkLag(ctx context.Context, st jetstream.Stream, l Layout, env, connectionID string, partition int, now time.Time) (int64, time.Duration, error) {
	c, err := st.Consumer(ctx, SinkConsumerName(connectionID, partition))
	if err != nil {
		return 0, 0, err
	}
	info, err := c.Info(ctx)
	if err != nil {
		return 0, 0, err
	}
	backlog := int64(info.NumPending) + int64(info.NumAckPending)
	if backlog == 0 {
		return 0, 0, nil
	}
	// The first message after the ack floor that the consumer's filter takes.
	m, err := st.GetMsg(ctx, info.AckFloor.Stream+1, jetstream.WithGetMsgSubject(l.PartitionFilter(env, partition)))
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return backlog, 0, nil
	}
	if err != nil {
		return backlog, 0, err
	}
	return backlog, max(now.Sub(m.Time), 0), nil
}
