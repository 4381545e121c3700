package index

import (
	"context"
	"log/slog"
	"time"

	segmentsyncv1 "github.com/seghub/seghub/gen/seghub/segmentsync/v1"
)

// FollowOptions choose what a follower watches and let its owner see the
// feed's progress.
type FollowOptions struct {
	// AllEnvironments follows every environment (seghub's internal key);
	// otherwise only the calling key's environment.
	AllEnvironments bool
	// Log receives interruptions; nil discards them.
	Log *slog.Logger
	// Applied, when set, is called after each message is applied (on the
	// follower's goroutine; keep it short).
	Applied func(m *segmentsyncv1.WatchMembershipResponse)
	// Broken, when set, is called when a stream ends with err, before the
	// backoff.
	Broken func(err error)
	// MinBackoff and MaxBackoff bound the wait between reconnections
	// (default 100 ms and 5 s); the wait doubles per failure and starts
	// again from MinBackoff after a stream that caught up.
	MinBackoff, MaxBackoff time.Duration
}

// Follow keeps ix equal to segmentsync by applying its WatchMembership feed
// for every environment; on a broken stream it resumes from the sequences
// reached, so a restarted or reconnected replica catches up without gaps.
func Follow(ctx context.Context, client segmentsyncv1.SegmentSyncServiceClient, ix *Index, log *slog.Logger) error {
	return FollowWith(ctx, client, ix, FollowOptions{AllEnvironments: true, Log: log})
}

// FollowWith is Follow with options; it returns when ctx ends.
func FollowWith(ctx context.Context, client segmentsyncv1.SegmentSyncServiceClient, ix *Index, o FollowOptions) error {
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.MinBackoff <= 0 {
		o.MinBackoff = 100 * time.Millisecond
	}
	if o.MaxBackoff < o.MinBackoff {
		o.MaxBackoff = max(5*time.Second, o.MinBackoff)
	}
	backoff := o.MinBackoff
	for ctx.Err() == nil {
		caughtUp, err := followOnce(ctx, client, ix, &o)
		ix.feed.set(false, err)
		if ctx.Err() != nil {
			return nil
		}
		if caughtUp {
			backoff = o.MinBackoff
		}
		if o.Broken != nil {
			o.Broken(err)
		}
		o.Log.Warn("membership feed interrupted; resuming", "error", err.Error(), "backoff", backoff.String())
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, o.MaxBackoff)
	}
	return nil
}

// followOnce applies one stream until it breaks; caughtUp tells whether it
// got as far as live changes.
func followOnce(ctx context.Context, client segmentsyncv1.SegmentSyncServiceClient, ix *Index, o *FollowOptions) (caughtUp bool, err error) {
	ix.AbandonSnapshots()
	stream, err := client.WatchMembership(ctx, &segmentsyncv1.WatchMembershipRequest{AllEnvironments: o.AllEnvironments, IncludeUsers: true, PackedUsers: true, AfterSequence: ix.Cursors()})
	if err != nil {
		return false, err
	}
	ix.feed.set(true, nil)
	for {
		m, err := stream.Recv()
		if err != nil {
			return caughtUp, err
		}
		if err := ix.Apply(m); err != nil {
			return caughtUp, err
		}
		if m.GetCaughtUp() != nil {
			caughtUp = true
		}
		if o.Applied != nil {
			o.Applied(m)
		}
	}
}
