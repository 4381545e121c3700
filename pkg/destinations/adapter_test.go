package destinations_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/seghub/seghub/pkg/destinations"
)

// recorder is a destination answering each request with the next of its
// scripted replies (the last one repeats) and remembering what it received.
type recorder struct {
	mu      sync.Mutex
	replies []func(w http.ResponseWriter)
	at      []time.Time
	bodies  []string
}

func (rc *recorder) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	rc.mu.Lock()
	n := len(rc.at)
	rc.at = append(rc.at, time.Now())
	rc.bodies = append(rc.bodies, string(body))
	reply := rc.replies[min(n, len(rc.replies)-1)]
	rc.mu.Unlock()
	reply(w)
}

func (rc *recorder) requests() ([]time.Time, []string) {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return append([]time.Time(nil), rc.at...), append([]string(nil), rc.bodies...)
}

func status(code int, header map[string]string, body string) func(http.ResponseWriter) {
	return func(w http.ResponseWriter) {
		for k, v := range header {
			w.Header().Set(k, v)
		}
		w.WriteHeader(code)
		_, _ = io.WriteString(w, body)
	}
}

// pauses records the connection-wide pauses an adapter asks for.
type pauses struct {
	mu    sync.Mutex
	until []time.Time
}

func (p *pauses) Wait(context.Context, int) error { return nil }

func (p *pauses) Pause(_ context.Context, until time.Time) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.until = append(p.until, until)
	return nil
}

func track(t *testing.T, url string, c destinations.Config) error {
	t.Helper()
	c.BaseURL, c.Credentials = url, map[string]string{"app_id": "app-1"}
	if c.Egress == nil {
		c.Egress = loopbackEgress(t)
	}
	a, err := destinations.New("analytics", c)
	if err != nil {
		t.Fatal(err)
	}
	return a.(destinations.Events).Track(context.Background(), []destinations.Event{{ID: "ev-1", Identity: "u1", Name: "Flow Started", Timestamp: time.Now()}})
}

// loopbackEgress allows the httptest servers these tests talk to.
func loopbackEgress(t *testing.T) *destinations.Egress {
	t.Helper()
	e, err := destinations.NewEgress("127.0.0.0/8,::1")
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// A 429 with Retry-After: 1 holds the request (and the connection's
// limiter) for that second, even when the backoff alone would be far
// shorter, and the resent request succeeds.
func TestRetryAfterHonoured(t *testing.T) {
	t.Parallel()
	rc := &recorder{replies: []func(http.ResponseWriter){
		status(429, map[string]string{"Retry-After": "1"}, `{"error":"Too Many Requests"}`),
		status(200, nil, `{"accepted":1}`),
	}}
	srv := httptest.NewServer(rc)
	defer srv.Close()
	lim := &pauses{}
	start := time.Now()
	if err := track(t, srv.URL, destinations.Config{MaxAttempts: 3, MaxBackoff: time.Millisecond, Limiter: lim}); err != nil {
		t.Fatalf("track after one 429: %v", err)
	}
	at, bodies := rc.requests()
	if len(at) != 2 {
		t.Fatalf("requests = %d, want the refused one and one resend", len(at))
	}
	if waited := at[1].Sub(at[0]); waited < 950*time.Millisecond {
		t.Fatalf("resent %v after the 429, want at least Retry-After (1 s)", waited)
	}
	if bodies[0] != bodies[1] || !strings.Contains(bodies[1], `"idempotency_key":"ev-1"`) {
		t.Fatalf("resend differs or lacks the idempotency key:\n%s\n%s", bodies[0], bodies[1])
	}
	lim.mu.Lock()
	defer lim.mu.Unlock()
	if len(lim.until) != 1 || lim.until[0].Sub(start) < 950*time.Millisecond || lim.until[0].Sub(start) > 5*time.Second {
		t.Fatalf("limiter pauses = %v (start %v), want one pause about 1 s ahead", lim.until, start)
	}
}

func TestFailuresClassified(t *testing.T) {
	t.Parallel()
	const attempts = 3
	for _, tc := range []struct {
		name     string
		code     int
		header   map[string]string
		kind     destinations.ErrorKind
		requests int
	}{
		{"401 needs re-authorisation", 401, nil, destinations.AuthFailed, 1},
		{"403 needs re-authorisation", 403, nil, destinations.AuthFailed, 1},
		{"400 is permanent", 400, nil, destinations.Permanent, 1},
		{"404 is permanent", 404, nil, destinations.Permanent, 1},
		{"500 retried, then retryable", 500, nil, destinations.Retryable, attempts},
		{"502 retried, then retryable", 502, nil, destinations.Retryable, attempts},
		{"503 retried, then retryable", 503, map[string]string{"Retry-After": "0"}, destinations.Retryable, attempts},
		{"429 without end, retryable", 429, nil, destinations.Retryable, attempts},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			rc := &recorder{replies: []func(http.ResponseWriter){status(tc.code, tc.header, `{"error":"answer from the destination"}`)}}
			srv := httptest.NewServer(rc)
			defer srv.Close()
			err := track(t, srv.URL, destinations.Config{MaxAttempts: attempts, MaxBackoff: time.Millisecond})
			var de *destinations.Error
			if !errors.As(err, &de) || de.Kind != tc.kind || de.Status != tc.code {
				t.Fatalf("err = %#v, want kind %d with status %d", err, tc.kind, tc.code)
			}
			if destinations.KindOf(err) != tc.kind || !strings.Contains(err.Error(), "answer from the destination") {
				t.Fatalf("err = %v: kind %d, want %d and the destination's answer", err, destinations.KindOf(err), tc.kind)
			}
			if at, _ := rc.requests(); len(at) != tc.requests {
				t.Fatalf("requests = %d, want %d", len(at), tc.requests)
			}
		})
	}
}

// A destination that cannot be reached is a retryable failure, not a
// refusal of the credentials.
func TestUnreachableIsRetryable(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.NotFoundHandler())
	url := srv.URL
	srv.Close()
	err := track(t, url, destinations.Config{MaxAttempts: 2, MaxBackoff: time.Millisecond})
	if err == nil || destinations.KindOf(err) != destinations.Retryable {
		t.Fatalf("err = %v, want retryable", err)
	}
}

// Sign and Verify agree, and Verify refuses a changed body, another secret
// and a stale timestamp.
func TestSignVerify(t *testing.T) {
	t.Parallel()
	body, _ := json.Marshal(map[string]string{"action_type": "segment.users.sync"})
	now := time.Now()
	h := destinations.Sign("s3cret", now, body)
	if !strings.HasPrefix(h, "ts:") || !strings.Contains(h, ",hmac:") {
		t.Fatalf("header = %q, want ts:<unix>,hmac:<hex>", h)
	}
	if !destinations.Verify("s3cret", h, body, now, time.Minute) {
		t.Fatal("own signature refused")
	}
	for name, ok := range map[string]bool{
		"changed body": destinations.Verify("s3cret", h, append(body, ' '), now, time.Minute),
		"other secret": destinations.Verify("other", h, body, now, time.Minute),
		"stale":        destinations.Verify("s3cret", h, body, now.Add(2*time.Minute), time.Minute),
		"no secret":    destinations.Verify("", destinations.Sign("", now, body), body, now, time.Minute),
	} {
		if ok {
			t.Errorf("%s: accepted", name)
		}
	}
}
