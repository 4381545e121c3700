package relay

import (
	"context"
	"testing"
	"time"

	pstore "github.com/seghub/seghub/pkg/store"
	"github.com/seghub/seghub/pkg/store/storetest"
	"github.com/seghub/seghub/services/eventrelay/internal/store"
)

// tick is one Run iteration's lease work: balance, then give up what it
// hands over (no sinks run here).
func (m *Manager) tick(t *testing.T, ctx context.Context) map[int]bool {
	t.Helper()
	owned, release := m.balance(ctx)
	for _, p := range release {
		if err := m.o.Store.ReleaseLease(ctx, partitionLease(p), m.holder); err != nil {
			t.Fatal(err)
		}
	}
	m.mu.Lock()
	m.setOwned(owned)
	m.mu.Unlock()
	return owned
}

// Replicas share the partitions evenly and never both own one; a replica
// that stops renewing loses its partitions to the others once its leases
// lapse, and one that leaves gives them back at once.
func TestPartitionLeasesBalance(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *pstore.DB) {
		ctx := context.Background()
		st, err := store.Open(ctx, db)
		if err != nil {
			t.Fatal(err)
		}
		newManager := func() *Manager {
			// Refresh 200 ms: leases of 1 s.
			return NewManager(ManagerOptions{Store: st, Layout: NewLayout("t").WithPartitions(16), Refresh: 200 * time.Millisecond})
		}
		ms := []*Manager{newManager(), newManager(), newManager()}
		// settle ticks the live managers in turn until their shares are want
		// (in any order), checking that no partition has two owners.
		settle := func(live []*Manager, want ...int) {
			t.Helper()
			deadline := time.Now().Add(30 * time.Second)
			for {
				var got []int
				owner := map[int]int{}
				views := make([]map[int]bool, len(live))
				for i, m := range live {
					views[i] = m.tick(t, ctx)
					got = append(got, len(views[i]))
				}
				// What each may deliver now: a replica whose tick came too
				// late (a slow round) has stopped sending.
				for i, m := range live {
					for p := range views[i] {
						if !m.holds(p) {
							continue
						}
						if j, ok := owner[p]; ok {
							t.Fatalf("partition %d owned by replicas %d and %d", p, j, i)
						}
						owner[p] = i
					}
				}
				if sameCounts(got, want) {
					return
				}
				if time.Now().After(deadline) {
					t.Fatalf("shares %v, want %v", got, want)
				}
				time.Sleep(50 * time.Millisecond)
			}
		}
		settle(ms[:1], 16)
		settle(ms[:2], 8, 8)
		settle(ms, 6, 6, 4)
		// The third stops renewing (a crash): the others take its partitions
		// once its leases lapse.
		settle(ms[:2], 8, 8)
		// The second leaves: it gives its partitions back at once.
		leases, err := st.LiveLeases(ctx, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		for name, h := range leases {
			if h == ms[1].holder {
				if err := st.ReleaseLease(ctx, name, h); err != nil {
					t.Fatal(err)
				}
			}
		}
		if owned := ms[0].tick(t, ctx); len(owned) != 16 {
			t.Fatalf("the remaining replica owns %d partitions right after the other left, want 16", len(owned))
		}
	})
}

func sameCounts(got, want []int) bool {
	if len(got) != len(want) {
		return false
	}
	n := map[int]int{}
	for _, g := range got {
		n[g]++
	}
	for _, w := range want {
		n[w]--
	}
	for _, v := range n {
		if v != 0 {
			return false
		}
	}
	return true
}
