package harness

import (
	"testing"
	"time"
)

// A batch counts once every observer has seen it; one an observer missed is
// in no observer's times.
func TestBatchesWaitForEveryObserver(t *testing.T) {
	bs := NewBatches(2)
	_, err := bs.Send(time.Millisecond, 5*time.Millisecond, func(n int) (string, func() error) {
		return "u" + string(rune('a'+n)), func() error { return nil }
	})
	if err != nil {
		t.Fatal(err)
	}
	all := bs.All()
	if len(all) < 2 {
		t.Fatalf("%d batches sent in 5 ms at one a millisecond", len(all))
	}
	at := time.Now()
	everyone := func(int) bool { return true }
	bs.MarkSeen(0, bs.Unseen(0, len(all)), everyone, at)
	if got := len(bs.Unseen(1, len(all))); got != len(all) {
		t.Fatalf("observer 1 has %d unseen batches, want %d", got, len(all))
	}
	// Observer 1 sees all but the last.
	bs.MarkSeen(1, bs.Unseen(1, len(all)), func(i int) bool { return i < len(all)-1 }, at)
	if u := bs.Unseen(1, len(all)); len(u) != 1 || u[0] != all[len(all)-1] {
		t.Fatalf("unseen by observer 1: %v, want the last batch", u)
	}
	if u := bs.Unseen(0, len(all)); len(u) != 0 {
		t.Fatalf("observer 0 saw every batch, yet %d are unseen", len(u))
	}
	tm := bs.Times()
	if tm.Missing != 1 || len(tm.Ack) != len(all) || len(tm.Seen[0]) != len(all)-1 || len(tm.Seen[1]) != len(all)-1 {
		t.Fatalf("times: missing %d, %d acks, seen %d / %d (of %d batches)", tm.Missing, len(tm.Ack), len(tm.Seen[0]), len(tm.Seen[1]), len(all))
	}
	bs.MarkSeen(1, bs.Unseen(1, 1), everyone, at)
	bs.Wait(time.Second)
	if tm := bs.Times(); tm.Missing != 0 {
		t.Fatalf("%d batches missing once both observers saw all", tm.Missing)
	}
}
