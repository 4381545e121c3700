package index

import (
	"context"
	"log/slog"
	"time"

	segmentsyncv1 "github.com/seghub/seghub/gen/seghub/segmentsync/v1"
)

// Follow keeps ix equal to segmentsync by applying its WatchMembership feed
// for every environment; on a broken stream it resumes from the sequences
// reached, so a restarted or reconnected replica catches up without gaps.
func Follow(ctx context.Context, client segmentsyncv1.SegmentSyncServiceClient, ix *Index, log *slog.Logger) error {
	backoff := 100 * time.Millisecond
	for ctx.Err() == nil {
		err := followOnce(ctx, client, ix)
		ix.feed.set(false, err)
		if ctx.Err() != nil {
			return nil
		}
		log.Warn("membership feed interrupted; resuming", "error", err.Error(), "backoff", backoff.String())
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 5*time.Second)
	}
	return nil
}

func followOnce(ctx context.Context, client segmentsyncv1.SegmentSyncServiceClient, ix *Index) error {
	ix.AbandonSnapshots()
	stream, err := client.WatchMembership(ctx, &segmentsyncv1.WatchMembershipRequest{AllEnvironments: true, IncludeUsers: true, AfterSequence: ix.Cursors()})
	if err != nil {
		return err
	}
	ix.feed.set(true, nil)
	for {
		m, err := stream.Recv()
		if err != nil {
			return err
		}
		if err := ix.Apply(m); err != nil {
			return err
		}
	}
}
