package computed

import (
	"context"
	"net"
	"os"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/seghub/seghub/pkg/natsbus"
	"github.com/seghub/seghub/services/segmentsync/internal/rules"
)

// TestReadFloor measures the backfill's read floor: one environment's
// events read from a copy of a stopped seghub's embedded JetStream and
// counted in memory for the backfill bench's two conditions, no store.
// H18_READ_FLOOR_DIR=<copy>/nats H18_READ_FLOOR_ENV=<env> enable it.
func TestReadFloor(t *testing.T) {
	dir, env := os.Getenv("H18_READ_FLOOR_DIR"), os.Getenv("H18_READ_FLOOR_ENV")
	if dir == "" || env == "" {
		t.Skip("H18_READ_FLOOR_DIR and H18_READ_FLOOR_ENV unset")
	}
	ctx := context.Background()
	b, err := natsbus.Connect(ctx, natsbus.Options{StoreDir: dir, Name: "readfloor"})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	e := New(Options{JS: b.JS})
	st, err := b.JS.Stream(ctx, e.stream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	conds := []tallyCond{
		{cond: &rules.Cond{Key: "a", Source: "api", Name: "Bench Backfill A"}},
		{cond: &rules.Cond{Key: "b", Source: "api", Name: "Bench Backfill B"}},
	}
	to := info.State.LastSeq
	if n, err := strconv.ParseUint(os.Getenv("H18_READ_FLOOR_MAX"), 10, 64); err == nil {
		to = min(to, info.State.FirstSeq+n-1)
	}
	cpu0, start := cpuTime(), time.Now()
	tl := newTally(env, conds)
	var r eventReader = newStreamReader(st, e.prefix+env+".>", info.State.FirstSeq)
	if os.Getenv("H18_READ_FLOOR_READER") != "consumer" {
		// The direct reader, as the relay's stream allows it now.
		cfg := info.Config
		cfg.AllowDirect = true
		if _, err := b.JS.UpdateStream(ctx, cfg); err != nil {
			t.Fatal(err)
		}
		var dial func() (net.Conn, error)
		if os.Getenv("H18_READ_FLOOR_READER") != "shared" {
			dial = b.InProcessDialer()
		}
		r = newEventReader(b.JS, dial, st, e.prefix, env, info.State.FirstSeq)
		if n, err := strconv.Atoi(os.Getenv("H18_READ_FLOOR_WORKERS")); err == nil {
			r.(*directReader).workers = n
		}
	}
	defer r.close()
	through, err := r.read(ctx, to, func(seq uint64, subject string, data []byte) bool {
		tl.addMsg(e.prefix, subject, seq, data)
		return false
	})
	if err != nil {
		t.Fatal(err)
	}
	readEl, readCPU := time.Since(start), cpuTime()-cpu0
	users := tl.userAggs()
	el, cpu := time.Since(start), cpuTime()-cpu0
	t.Logf("%T: read %d events (through %d of %d..%d) in %s (%.0f events/s), CPU %s (%.0f %% of one core); %d users, %d user-condition entries, %d day nodes; with the store's shape: %s, CPU %s",
		r, tl.read, through, info.State.FirstSeq, info.State.LastSeq, readEl.Round(time.Millisecond), float64(tl.read)/readEl.Seconds(),
		readCPU.Round(time.Millisecond), 100*readCPU.Seconds()/readEl.Seconds(), len(users), tl.entries(), len(tl.days), el.Round(time.Millisecond), cpu.Round(time.Millisecond))
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
