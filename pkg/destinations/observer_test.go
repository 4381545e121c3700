package destinations_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/seghub/seghub/pkg/destinations"
)

// observed records what an adapter reports for metrics.
type observed struct {
	mu       sync.Mutex
	statuses []int
	waits    map[string]time.Duration
}

func (o *observed) DestinationRequest(destType string, status int, _ time.Duration) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if destType == "analytics" {
		o.statuses = append(o.statuses, status)
	}
}

func (o *observed) RateLimitWait(destType, reason string, d time.Duration) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.waits[destType+" "+reason] += d
}

// slowBucket makes every request wait for its tokens, and says how long.
type slowBucket struct{ pauses }

func (b *slowBucket) WaitFor(ctx context.Context, n int) (time.Duration, error) {
	time.Sleep(10 * time.Millisecond)
	return 10 * time.Millisecond, nil
}

// Every attempt is reported with its status (0: no answer), and the time
// spent waiting on the bucket and on the destination's Retry-After.
func TestObserverSeesAttemptsAndWaits(t *testing.T) {
	t.Parallel()
	rc := &recorder{replies: []func(http.ResponseWriter){
		status(503, nil, `{}`),
		status(429, map[string]string{"Retry-After": "1"}, `{}`),
		status(200, nil, `{"accepted":1}`),
	}}
	srv := httptest.NewServer(rc)
	defer srv.Close()
	obs := &observed{waits: map[string]time.Duration{}}
	if err := track(t, srv.URL, destinations.Config{MaxAttempts: 4, MaxBackoff: time.Millisecond, Limiter: &slowBucket{}, Observer: obs}); err != nil {
		t.Fatalf("track: %v", err)
	}
	// A closed server: no answer at all.
	srv.Close()
	_ = track(t, srv.URL, destinations.Config{MaxAttempts: 1, Observer: obs})
	obs.mu.Lock()
	defer obs.mu.Unlock()
	if want := []int{503, 429, 200, 0}; len(obs.statuses) != len(want) || obs.statuses[0] != 503 || obs.statuses[1] != 429 || obs.statuses[2] != 200 || obs.statuses[3] != 0 {
		t.Fatalf("statuses reported %v, want %v", obs.statuses, want)
	}
	if w := obs.waits["analytics retry_after"]; w < time.Second || w > 2*time.Second {
		t.Errorf("Retry-After wait reported %v, want the 1 s the destination asked for", w)
	}
	if w := obs.waits["analytics bucket"]; w != 30*time.Millisecond {
		t.Errorf("bucket wait reported %v, want 3 × 10 ms (what the bucket says it slept)", w)
	}
}
