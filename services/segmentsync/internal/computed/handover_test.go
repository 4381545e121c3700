package computed

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	segmentsyncv1 "github.com/seghub/seghub/gen/seghub/segmentsync/v1"
	"github.com/seghub/seghub/pkg/natsbus"
	pstore "github.com/seghub/seghub/pkg/store"
	"github.com/seghub/seghub/pkg/store/storetest"
	"github.com/seghub/seghub/services/segmentsync/internal/store"
)

// Events published while a backfill reads are counted exactly once: the
// backfill reads in several rounds behind a moving live position, hands
// over to the live consumer, and every user's count then equals the count
// of the events published (segments "did A exactly k times" for each k
// pin every user's count; replays and other environments count nothing).
// Without replays in the stream the backfill reads with direct gets.
func TestBackfillHandOverCountsOnce(t *testing.T) {
	t.Run("replays", func(t *testing.T) { testBackfillHandOver(t, true) })
	t.Run("direct", func(t *testing.T) { testBackfillHandOver(t, false) })
}

func testBackfillHandOver(t *testing.T, replays bool) {
	storetest.Each(t, func(t *testing.T, db *pstore.DB) {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		st, err := store.Open(ctx, db, nil)
		if err != nil {
			t.Fatal(err)
		}
		bus, err := natsbus.Connect(ctx, natsbus.Options{StoreDir: t.TempDir(), Name: "handover"})
		if err != nil {
			t.Fatal(err)
		}
		defer bus.Close()
		stream, err := bus.JS.CreateStream(ctx, jetstream.StreamConfig{Name: "SEGHUB_EVENTS", Subjects: []string{"seghub.events.>"}, AllowDirect: true})
		if err != nil {
			t.Fatal(err)
		}
		env := "env_handover"
		now := time.Now()
		r := rand.New(rand.NewPCG(18, 1))
		var mu sync.Mutex
		counts := map[string]int{}
		publish := func(n int) {
			for range n {
				user := fmt.Sprintf("u%03d", r.IntN(400))
				name := []string{"A", "C"}[r.IntN(2)]
				e := map[string]any{"id": "x", "env": env, "src": "api", "user": user, "name": name,
					"ts": now.Add(-time.Duration(r.IntN(20*24)) * time.Hour).UnixMicro(), "rcv": now.UnixMicro()}
				subject := "seghub.events." + env + ".3.api"
				kind := r.IntN(10)
				if kind == 0 && !replays {
					kind = 2
				}
				switch kind {
				case 0:
					subject = "seghub.events." + env + ".3._replay.conn_1" // a sink's second try
				case 1:
					e["env"], subject = "env_other", "seghub.events.env_other.3.api"
				default:
					if name == "A" {
						mu.Lock()
						counts[user]++
						mu.Unlock()
					}
				}
				data, _ := json.Marshal(e)
				if _, err := bus.JS.Publish(ctx, subject, data); err != nil {
					t.Error(err)
					return
				}
			}
		}
		publish(3000)
		ev := New(Options{Store: st, JS: bus.JS, Dial: bus.InProcessDialer(), BackfillChunk: 200, WindowEvery: -1})
		runCtx, stop := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() { defer close(done); _ = ev.Run(runCtx) }()
		defer func() { stop(); <-done }()
		waitFor(t, ctx, "the live consumer past the first events", func() bool {
			pos, err := st.Position(ctx)
			return err == nil && pos == 3000
		})
		ids := map[int]string{}
		for k := 1; k <= 12; k++ {
			rule := &segmentsyncv1.SegmentRule{Event: &segmentsyncv1.EventCondition{Source: "api", Name: "A", CountOperator: segmentsyncv1.CountOperator_COUNT_OPERATOR_EXACTLY, Times: uint32(k)}}
			if k == 12 {
				rule.Event.CountOperator = segmentsyncv1.CountOperator_COUNT_OPERATOR_AT_LEAST
			}
			sg, err := st.CreateComputedSegment(ctx, env, fmt.Sprintf("A %d", k), "", store.Public, rule)
			if err != nil {
				t.Fatal(err)
			}
			ids[k] = sg.ID
		}
		ev.Wake()
		// More events while the backfill reads, in small bursts so the live
		// position keeps moving ahead of it.
		for range 30 {
			publish(100)
			time.Sleep(5 * time.Millisecond)
		}
		info, err := stream.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		last := info.State.LastSeq
		waitFor(t, ctx, "segments live and every event applied", func() bool {
			pos, err := st.Position(ctx)
			if err != nil || pos < last {
				return false
			}
			infos, err := st.ComputedInfos(ctx, env, slices.Collect(maps.Values(ids)))
			if err != nil {
				return false
			}
			for _, in := range infos {
				if in.State != store.Live {
					return false
				}
			}
			return true
		})
		for k, id := range ids {
			sg, err := st.GetSegment(ctx, env, id, true)
			if err != nil {
				t.Fatal(err)
			}
			names, err := st.UserIDs(ctx, env, sg.Members.ToArray())
			if err != nil {
				t.Fatal(err)
			}
			var got, want []string
			for _, u := range names {
				got = append(got, u)
			}
			for u, n := range counts {
				if n == k || k == 12 && n >= 12 {
					want = append(want, u)
				}
			}
			slices.Sort(got)
			slices.Sort(want)
			if !slices.Equal(got, want) {
				t.Errorf("A %d times: members %v, want %v", k, got, want)
			}
		}
	})
}

func waitFor(t *testing.T, ctx context.Context, what string, ok func() bool) {
	t.Helper()
	for !ok() {
		select {
		case <-ctx.Done():
			t.Fatalf("%s: not reached before the deadline", what)
		case <-time.After(20 * time.Millisecond):
		}
	}
}
