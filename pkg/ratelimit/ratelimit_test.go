package ratelimit

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/seghub/seghub/pkg/store"
	"github.com/seghub/seghub/pkg/store/storetest"
)

// Two users of one bucket (two handles, as two processes would have) never
// take more than burst + rate × elapsed tokens together.
func TestSharedBucketStaysWithinRate(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *store.DB) {
		ctx := context.Background()
		if err := Migrate(ctx, db); err != nil {
			t.Fatal(err)
		}
		const perMinute, burst, takes = 6000, 5, 30 // 100 a second
		start := time.Now()
		var wg sync.WaitGroup
		for w := 0; w < 2; w++ {
			b := New(db, "conn_1", perMinute, burst)
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; i < takes; i++ {
					if err := b.Wait(ctx, 1); err != nil {
						t.Error(err)
						return
					}
				}
			}()
		}
		wg.Wait()
		elapsed := time.Since(start)
		// 60 tokens: 5 from the burst, 55 at 100/s need at least 0.55 s.
		if min := time.Duration(float64(2*takes-burst)/100*float64(time.Second)) - 20*time.Millisecond; elapsed < min {
			t.Fatalf("60 tokens taken in %v; the rate allows no less than %v", elapsed, min)
		}
		// Another connection's bucket is independent and starts full.
		other := New(db, "conn_2", perMinute, burst)
		t0 := time.Now()
		for i := 0; i < burst; i++ {
			_ = other.Wait(ctx, 1)
		}
		if time.Since(t0) > 500*time.Millisecond {
			t.Fatalf("an independent bucket waited %v", time.Since(t0))
		}
	})
}

func TestPauseHoldsEveryUser(t *testing.T) {
	db := storetest.SQLite(t)
	ctx := context.Background()
	if err := Migrate(ctx, db); err != nil {
		t.Fatal(err)
	}
	a, b := New(db, "conn", 60000, 100), New(db, "conn", 60000, 100)
	if err := a.Pause(ctx, time.Now().Add(300*time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	t0 := time.Now()
	if err := b.Wait(ctx, 1); err != nil {
		t.Fatal(err)
	}
	if time.Since(t0) < 250*time.Millisecond {
		t.Fatalf("waited only %v through a 300 ms pause", time.Since(t0))
	}
}
