package destinations_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/seghub/seghub/pkg/destinations"
)

func spanAttrs(kvs []attribute.KeyValue) map[attribute.Key]attribute.Value {
	m := map[attribute.Key]attribute.Value{}
	for _, kv := range kvs {
		m[kv.Key] = kv.Value
	}
	return m
}

// Every attempt of a destination request is a client span under the
// caller's span, with method, host, status, sizes and attempt; the 429's
// Retry-After wait is an event on the caller's span, and the request
// carries the attempt's traceparent (never baggage).
func TestRequestSpansPerAttemptWithRetryEvents(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	var parents []string
	n := 0
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		parents = append(parents, r.Header.Get("traceparent"))
		if r.Header.Get("baggage") != "" {
			t.Errorf("baggage sent to a destination: %q", r.Header.Get("baggage"))
		}
		n++
		if n == 1 {
			w.Header().Set("Retry-After", "1")
			w.WriteHeader(http.StatusTooManyRequests)
			return
		}
		_, _ = w.Write([]byte(`{}`))
	}))
	defer srv.Close()
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	a, err := destinations.New("analytics", destinations.Config{BaseURL: srv.URL, Credentials: map[string]string{"app_id": "app-1"},
		Egress: loopbackEgress(t), Tracer: tp.Tracer("test"), MaxBackoff: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, parent := tp.Tracer("test").Start(context.Background(), "sink.batch")
	err = a.(destinations.Events).Track(ctx, []destinations.Event{{ID: "ev-1", Identity: "u1", Name: "Flow Started", Timestamp: time.Now()}})
	parent.End()
	if err != nil {
		t.Fatal(err)
	}
	var clients []sdktrace.ReadOnlySpan
	var batch sdktrace.ReadOnlySpan
	for _, s := range rec.Ended() {
		switch {
		case s.SpanKind() == trace.SpanKindClient:
			clients = append(clients, s)
		case s.Name() == "sink.batch":
			batch = s
		}
	}
	if len(clients) != 2 {
		t.Fatalf("%d client spans, want 2 (a 429 then a 200)", len(clients))
	}
	host := strings.Split(strings.TrimPrefix(srv.URL, "http://"), ":")[0]
	for i, s := range clients {
		a := spanAttrs(s.Attributes())
		wantStatus := []int64{429, 200}[i]
		if s.Name() != "POST" || s.Parent().SpanID() != batch.SpanContext().SpanID() || a["http.request.method"].AsString() != "POST" ||
			a["server.address"].AsString() != host || a["http.response.status_code"].AsInt64() != wantStatus ||
			a["destination.attempt"].AsInt64() != int64(i+1) || a["http.request.body.size"].AsInt64() == 0 {
			t.Fatalf("client span %d: %s parent %v attrs %v", i, s.Name(), s.Parent().SpanID(), s.Attributes())
		}
		if want := "00-" + s.SpanContext().TraceID().String() + "-" + s.SpanContext().SpanID().String() + "-01"; parents[i] != want {
			t.Fatalf("attempt %d sent traceparent %q, want %q", i+1, parents[i], want)
		}
	}
	var retries int
	for _, ev := range batch.Events() {
		if ev.Name != destinations.EventRetry {
			continue
		}
		retries++
		a := spanAttrs(ev.Attributes)
		if a["retry_after.seconds"].AsFloat64() != 1 || a["http.response.status_code"].AsInt64() != 429 || a["destination.attempt"].AsInt64() != 1 {
			t.Fatalf("retry event %v", ev.Attributes)
		}
	}
	if retries != 1 {
		t.Fatalf("%d retry events on the batch span, want 1: %v", retries, batch.Events())
	}
}

// tracedBucket makes every request wait for the connection's token bucket.
type tracedBucket struct{ wait time.Duration }

func (b tracedBucket) Wait(ctx context.Context, _ int) error {
	select {
	case <-time.After(b.wait):
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (tracedBucket) Pause(context.Context, time.Time) error { return nil }

// Time spent waiting for the connection's token bucket is an event on the
// caller's span, with how long it waited.
func TestRateLimitWaitIsASpanEvent(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte(`{}`)) }))
	defer srv.Close()
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	a, err := destinations.New("analytics", destinations.Config{BaseURL: srv.URL, Credentials: map[string]string{"app_id": "app-1"},
		Egress: loopbackEgress(t), Tracer: tp.Tracer("test"), Limiter: tracedBucket{wait: 20 * time.Millisecond}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, parent := tp.Tracer("test").Start(context.Background(), "sync.batch")
	err = a.(destinations.Events).Track(ctx, []destinations.Event{{ID: "ev-1", Identity: "u1", Name: "Flow Started", Timestamp: time.Now()}})
	parent.End()
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range rec.Ended() {
		if s.Name() != "sync.batch" {
			continue
		}
		for _, ev := range s.Events() {
			if ev.Name == destinations.EventRateLimitWait && spanAttrs(ev.Attributes)["wait.seconds"].AsFloat64() >= 0.02 {
				return
			}
		}
		t.Fatalf("no %s event of at least 20ms on the batch span: %v", destinations.EventRateLimitWait, s.Events())
	}
	t.Fatal("no batch span")
}
