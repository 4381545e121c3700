package lease

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/seghub/seghub/pkg/store"
	"github.com/seghub/seghub/pkg/store/storetest"
)

func backends(t *testing.T, f func(t *testing.T, db *store.DB)) {
	for name, open := range map[string]func(testing.TB) *store.DB{"sqlite": storetest.SQLite, "postgres": storetest.Postgres} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			db := open(t)
			if err := Migrate(context.Background(), db); err != nil {
				t.Fatal(err)
			}
			f(t, db)
		})
	}
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 20s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// running counts the works running at once, over all processes.
type running struct {
	now, most atomic.Int32
	started   atomic.Int32
}

func (r *running) work(ctx context.Context) error {
	n := r.now.Add(1)
	r.started.Add(1)
	for {
		m := r.most.Load()
		if n <= m || r.most.CompareAndSwap(m, n) {
			break
		}
	}
	<-ctx.Done()
	r.now.Add(-1)
	return nil
}

type logs struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logs) Write(p []byte) (int, error) { l.mu.Lock(); defer l.mu.Unlock(); return l.b.Write(p) }
func (l *logs) String() string              { l.mu.Lock(); defer l.mu.Unlock(); return l.b.String() }

// start runs a role until the returned stop is called; stop waits for Run.
func start(r *Role, work func(context.Context) error) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = r.Run(ctx, work) }()
	return func() { cancel(); <-done }
}

// Two processes: one runs the work, the other stands by and takes over at
// once when the first stops (it releases the lease), and never both.
func TestOneHolderAndHandOver(t *testing.T) {
	backends(t, func(t *testing.T, db *store.DB) {
		var w running
		a := New(Options{DB: db, Name: "test/role", Holder: "a", TTL: 500 * time.Millisecond})
		b := New(Options{DB: db, Name: "test/role", Holder: "b", TTL: 500 * time.Millisecond})
		stopA := start(a, w.work)
		eventually(t, "a holds", a.Held)
		stopB := start(b, w.work)
		defer stopB()
		eventually(t, "b sees a holding", func() bool {
			h, err := Holder(context.Background(), db, "test/role", time.Now())
			return err == nil && h == "a"
		})
		if b.Held() {
			t.Fatal("b holds the lease a holds")
		}
		stopA()
		if a.Held() {
			t.Fatal("a still holds after it stopped")
		}
		eventually(t, "b takes over", b.Held)
		// Held is set as the work goroutine starts: wait for the work itself.
		eventually(t, "b's work starts", func() bool { return w.started.Load() == 2 })
		if w.most.Load() != 1 || w.started.Load() != 2 {
			t.Fatalf("works at once at most %d (want 1), started %d (want 2)", w.most.Load(), w.started.Load())
		}
	})
}

// A holder that died without releasing is replaced once its lease lapses,
// not before (the clock is injected).
func TestTakeOverALapsedLease(t *testing.T) {
	backends(t, func(t *testing.T, db *store.DB) {
		var clock atomic.Int64
		clock.Store(time.Now().UnixMicro())
		now := func() time.Time { return time.UnixMicro(clock.Load()) }
		ctx := context.Background()
		if ok, err := Acquire(ctx, db, "test/role", "dead", now(), 10*time.Second); err != nil || !ok {
			t.Fatalf("acquire: %v %v", ok, err)
		}
		var out logs
		var w running
		r := New(Options{DB: db, Name: "test/role", Holder: "b", TTL: 500 * time.Millisecond, Now: now, Logger: slog.New(slog.NewTextHandler(&out, nil))})
		defer start(r, w.work)()
		eventually(t, "b stands by", func() bool { return strings.Contains(out.String(), "held_by=dead") })
		if r.Held() {
			t.Fatal("b took a live lease")
		}
		clock.Add((10*time.Second + time.Millisecond).Microseconds())
		eventually(t, "b takes the lapsed lease", r.Held)
	})
}

// A holder whose lease was taken over stops its work.
func TestLostLeaseStopsTheWork(t *testing.T) {
	backends(t, func(t *testing.T, db *store.DB) {
		var w running
		r := New(Options{DB: db, Name: "test/role", Holder: "a", TTL: 500 * time.Millisecond})
		defer start(r, w.work)()
		eventually(t, "a holds", r.Held)
		if _, err := db.ExecContext(context.Background(), `UPDATE leases SET holder = 'thief', expires_at = ? WHERE name = 'test/role'`, time.Now().Add(time.Hour).UnixMicro()); err != nil {
			t.Fatal(err)
		}
		eventually(t, "a stops its work", func() bool { return !r.Held() && w.now.Load() == 0 })
	})
}

// A process alone on its database runs the work at once and writes no row.
func TestAloneHoldsWithoutARow(t *testing.T) {
	db := storetest.SQLite(t)
	if err := Migrate(context.Background(), db); err != nil {
		t.Fatal(err)
	}
	var w running
	r := New(Options{DB: db, Name: "test/role", Holder: "a", Alone: true})
	stop := start(r, w.work)
	eventually(t, "a holds", func() bool { return r.Held() && w.now.Load() == 1 })
	var rows int
	if err := db.QueryRowContext(context.Background(), `SELECT COUNT(*) FROM leases`).Scan(&rows); err != nil || rows != 0 {
		t.Fatalf("lease rows: %d (%v), want none", rows, err)
	}
	stop()
	if r.Held() || w.now.Load() != 0 {
		t.Fatal("the work outlived Run")
	}
}
