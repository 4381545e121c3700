package syncengine

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/seghub/seghub/pkg/store/storetest"
	ssstore "github.com/seghub/seghub/services/segmentsync/internal/store"
)

// BenchmarkDryRunChurn plans the re-sync of a 1 M-member segment, fully
// delivered, after a 1 % churn (5 000 out, 5 000 new users in) on SQLite:
// as a run plans it (every member's identity and the whole checkpoint) and
// as a dry run does (the diff). Not part of make test:
//
//	go test -run '^$' -bench DryRunChurn -benchtime 5x ./internal/syncengine/
func BenchmarkDryRunChurn(b *testing.B) {
	ctx := context.Background()
	db := storetest.SQLite(b)
	data, err := ssstore.Open(ctx, db, nil)
	if err != nil {
		b.Fatal(err)
	}
	st, err := OpenStore(ctx, db)
	if err != nil {
		b.Fatal(err)
	}
	e := New(st, data, nil, Options{})
	const env, n = "env_b", 1_000_000
	seg, err := data.CreateSegment(ctx, env, "s", "", ssstore.Public, "")
	if err != nil {
		b.Fatal(err)
	}
	members := func(from, to int) []string {
		ids := make([]string, 0, to-from)
		for i := from; i < to; i++ {
			ids = append(ids, fmt.Sprintf("user-%d", i))
		}
		return ids
	}
	if _, err := data.ReplaceMembers(ctx, env, seg.ID, members(0, n)); err != nil {
		b.Fatal(err)
	}
	s := &Sync{ID: "sync_b", Env: env, SegmentID: seg.ID, ConnectionID: "c", DestinationType: "appcues", IdentityProperty: "user_id",
		Schedule: OneTime, Mode: Mirror, Enabled: true, Created: time.Now(), Updated: time.Now()}
	if err := st.CreateSync(ctx, db, s); err != nil {
		b.Fatal(err)
	}
	// The first run, delivered in full.
	p, err := e.plan(ctx, s, TriggerManual, false)
	if err != nil {
		b.Fatal(err)
	}
	for i := 0; i < len(p.Adds); i += 50_000 {
		ack := Ack{Added: map[uint32]HeldIdentity{}}
		for _, x := range p.Adds[i:min(i+50_000, len(p.Adds))] {
			ack.Added[x.dense] = HeldIdentity{UserID: x.userID, Identity: x.identity}
		}
		if err := st.Checkpoint(ctx, s.ID, ack, &Run{ID: "run_b"}); err != nil {
			b.Fatal(err)
		}
	}
	if err := st.SaveIdentityCheck(ctx, s.ID, *p.check); err != nil {
		b.Fatal(err)
	}
	if _, err := data.ReplaceMembers(ctx, env, seg.ID, members(n/200, n+n/200)); err != nil {
		b.Fatal(err)
	}
	for _, quick := range []bool{false, true} {
		name := map[bool]string{false: "run", true: "dry-run"}[quick]
		b.Run(name, func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				p, err := e.plan(ctx, s, TriggerManual, quick)
				if err != nil {
					b.Fatal(err)
				}
				if len(p.Adds) != n/200 || len(p.Removes) != n/200 {
					b.Fatalf("planned %d adds, %d removes; want %d each", len(p.Adds), len(p.Removes), n/200)
				}
			}
		})
	}
}
