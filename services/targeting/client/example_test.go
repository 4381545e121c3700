package client_test

import (
	"context"
	"log"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/seghub/seghub/services/targeting/client"
)

// An internal Go service keeps a replica of its environment's index and asks
// it in-process; until it has loaded, the same calls go to the service.
func Example() {
	conn, err := grpc.NewClient("seghub:9090", grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithPerRPCCredentials(bearer("sghk_..."))) // an admin key, or see Options.Reads
	if err != nil {
		log.Fatal(err)
	}
	defer conn.Close()
	c, err := client.New(conn, client.Options{ExperienceRefresh: 10 * time.Second})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	ctx := context.Background()
	if ok, err := c.IsMember(ctx, "seg_trial", "user-42"); err == nil && ok {
		r, _ := c.Evaluate(ctx, "exp_onboarding", "user-42")
		log.Printf("eligible=%v (decided by %s) at version %d, %v behind", r.Eligible, r.DecidedBy, c.Version(), c.Staleness())
	}
}
