package harness

import (
	"context"
	"fmt"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
)

// StartPeer publishes one NATS message per interval to itself on subject
// until ctx ends and returns the latencies seen so far as "p50 / p99": how
// long this machine takes to carry a message between processes right now,
// the peer a table row is compared with. An empty natsURL gives "–".
func StartPeer(ctx context.Context, natsURL, subject string, every time.Duration) func() string {
	if natsURL == "" {
		return func() string { return "–" }
	}
	nc, err := nats.Connect(natsURL)
	if err != nil {
		return func() string { return "unreachable: " + err.Error() }
	}
	var mu sync.Mutex
	var lat []time.Duration
	sub, err := nc.Subscribe(subject, func(m *nats.Msg) {
		if sent, perr := strconv.ParseInt(string(m.Data), 10, 64); perr == nil {
			mu.Lock()
			lat = append(lat, time.Since(time.Unix(0, sent)))
			mu.Unlock()
		}
	})
	if err != nil {
		nc.Close()
		return func() string { return err.Error() }
	}
	go func() {
		defer nc.Close()
		defer sub.Unsubscribe()
		tick := time.NewTicker(every)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
				_ = nc.Publish(subject, []byte(strconv.FormatInt(time.Now().UnixNano(), 10)))
			}
		}
	}()
	return func() string {
		mu.Lock()
		defer mu.Unlock()
		return TableQuantile(lat, 0.5) + " / " + TableQuantile(lat, 0.99)
	}
}

// TableQuantile is the q-quantile (0..1) of ds in milliseconds, rounded for
// a results table; "–" when ds is empty.
func TableQuantile(ds []time.Duration, q float64) string {
	if len(ds) == 0 {
		return "–"
	}
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	d := s[int(q*float64(len(s)-1))]
	switch {
	case d < time.Millisecond:
		return fmt.Sprintf("%.2f ms", float64(d)/1e6)
	case d < 100*time.Millisecond:
		return fmt.Sprintf("%.1f ms", float64(d)/1e6)
	}
	return fmt.Sprintf("%.0f ms", float64(d)/1e6)
}
