package harness

import (
	"sync"
	"time"
)

// Paced starts one write per interval for d and waits for them all. At most
// 64 writes are in flight: a writer slower than the interval shows as a lower
// sent rate, not as unbounded goroutines. prepare(n) builds write n on the
// pacing goroutine and returns what runs concurrently. It returns how long
// sending took and the first write error.
func Paced(every, d time.Duration, prepare func(n int) func() error) (time.Duration, error) {
	var mu sync.Mutex
	var werr error
	sem := make(chan struct{}, 64)
	var writes sync.WaitGroup
	tick := time.NewTicker(every)
	start := time.Now()
	for n := 0; time.Since(start) < d; n++ {
		<-tick.C
		write := prepare(n)
		sem <- struct{}{}
		writes.Add(1)
		go func() {
			defer writes.Done()
			defer func() { <-sem }()
			if err := write(); err != nil {
				mu.Lock()
				if werr == nil {
					werr = err
				}
				mu.Unlock()
			}
		}()
	}
	tick.Stop()
	writes.Wait()
	return time.Since(start), werr
}

// WaitUntil polls done every 10 ms until it holds or d has passed.
func WaitUntil(d time.Duration, done func() bool) {
	deadline := time.Now().Add(d)
	for !done() && !time.Now().After(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
}
