package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/seghub/seghub/bench/internal/harness"
	segmentsyncv1 "github.com/seghub/seghub/gen/seghub/segmentsync/v1"
	"github.com/seghub/seghub/pkg/auth"
	"github.com/seghub/seghub/services/targeting/client"
)

var watchSegment = flag.String("watch-segment", "", "internal: with -watch-mode members, the segment to watch")

// watchClient is the -watch process: it takes one snapshot from the server
// at addr and prints what it took (time to CaughtUp, messages, users, bytes
// of bitmaps) on one line.
func watchClient(addr, mode string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	if mode == "client" {
		// The targeting in-process client: WatchMembership (packed users)
		// applied to its index, until its environment is loaded.
		conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithPerRPCCredentials(harness.Bearer(os.Getenv("SEGHUB_BENCH_ADMIN_KEY"))))
		if err != nil {
			return err
		}
		defer conn.Close()
		t0 := time.Now()
		c, err := client.New(conn, client.Options{})
		if err != nil {
			return err
		}
		defer c.Close()
		if err := c.WaitReady(ctx); err != nil {
			return err
		}
		fmt.Printf("loaded in %v", time.Since(t0).Round(time.Millisecond))
		return nil
	}
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithPerRPCCredentials(auth.InternalCredentials{Key: os.Getenv("SEGHUB_BENCH_INTERNAL_KEY"), Insecure: true}),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(256<<20)))
	if err != nil {
		return err
	}
	defer conn.Close()
	req := &segmentsyncv1.WatchMembershipRequest{AllEnvironments: true}
	switch mode {
	case "members":
		req.SegmentIds = []string{*watchSegment}
	case "batches":
		req.IncludeUsers = true
	case "packed":
		req.IncludeUsers, req.PackedUsers = true, true
	default:
		return fmt.Errorf("unknown -watch-mode %q", mode)
	}
	t0 := time.Now()
	st, err := segmentsyncv1.NewSegmentSyncServiceClient(conn).WatchMembership(ctx, req)
	if err != nil {
		return err
	}
	var msgs, users, bitmapBytes int
	for {
		m, err := st.Recv()
		if err != nil {
			return err
		}
		msgs++
		users += len(m.GetUsers().GetUsers()) + len(m.GetUserChunk().GetDenseIds())
		bitmapBytes += len(m.GetSegment().GetMembers())
		if m.GetCaughtUp() != nil {
			break
		}
	}
	fmt.Printf("%v to CaughtUp, %d messages, %d users, bitmaps %.2f MB", time.Since(t0).Round(time.Millisecond), msgs, users, float64(bitmapBytes)/(1<<20))
	return nil
}
