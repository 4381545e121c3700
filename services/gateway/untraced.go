package gateway

import (
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/semconv/v1.43.0/httpconv"
)

// untracedLookups serves plain lookups that no trace can follow (root spans
// are not sampled and the request carries no trace context) without
// otelhttp's per-request span work (request attributes, span start, writer
// wrapping), which was a fifth of a lookup's CPU. They record the same HTTP
// server metrics otelhttp records: the same instruments (scope, names,
// units, buckets) with the attributes it computes, a set built once per
// status and protocol. Every other request goes through otelhttp.
type untracedLookups struct {
	traced http.Handler
	lookup *lookupHandler
	m      *httpMetrics
}

// httpMetrics are otelhttp's server instruments, registered again on the
// same meter: the SDK hands back the same instruments, so both paths land in
// the same series.
type httpMetrics struct {
	requestSize  httpconv.ServerRequestBodySize
	responseSize httpconv.ServerResponseBodySize
	duration     httpconv.ServerRequestDuration
	host         string
	port         int
	sets         sync.Map // httpSetKey -> attribute.Set
}

type httpSetKey struct {
	status int
	proto  string
	tls    bool
}

func newHTTPMetrics(mp metric.MeterProvider, serverName string) (*httpMetrics, error) {
	meter := mp.Meter(otelhttp.ScopeName, metric.WithInstrumentationVersion(otelhttp.Version))
	m := &httpMetrics{host: serverName, port: -1}
	if h, p, ok := strings.Cut(serverName, ":"); ok {
		if n, err := strconv.Atoi(p); err == nil {
			m.host, m.port = h, n
		}
	}
	var err error
	if m.requestSize, err = httpconv.NewServerRequestBodySize(meter); err != nil {
		return nil, err
	}
	if m.responseSize, err = httpconv.NewServerResponseBodySize(meter); err != nil {
		return nil, err
	}
	if m.duration, err = httpconv.NewServerRequestDuration(meter, metric.WithExplicitBucketBoundaries(
		0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10)); err != nil {
		return nil, err
	}
	return m, nil
}

// set is the attribute set otelhttp's MetricAttributes gives a GET of the
// lookup route answered status.
func (m *httpMetrics) set(r *http.Request, status int) attribute.Set {
	k := httpSetKey{status: status, proto: r.Proto, tls: r.TLS != nil}
	if v, ok := m.sets.Load(k); ok {
		return v.(attribute.Set)
	}
	scheme := "http"
	if k.tls {
		scheme = "https"
	}
	attrs := []attribute.KeyValue{semconv.HTTPRequestMethodGet, semconv.URLScheme(scheme), semconv.ServerAddress(m.host)}
	if k.tls && m.port > 0 && m.port != 443 || !k.tls && m.port > 0 && m.port != 80 {
		attrs = append(attrs, semconv.ServerPort(m.port))
	}
	name, version, _ := strings.Cut(r.Proto, "/")
	if name == "HTTP" {
		name = "http"
	} else {
		name = strings.ToLower(name)
	}
	if name != "" {
		attrs = append(attrs, semconv.NetworkProtocolName(name))
	}
	if version != "" {
		attrs = append(attrs, semconv.NetworkProtocolVersion(version))
	}
	if status > 0 {
		attrs = append(attrs, semconv.HTTPResponseStatusCode(status))
	}
	attrs = append(attrs, semconv.HTTPRoute(strings.TrimPrefix(lookupPattern, http.MethodGet+" ")))
	// Statuses and protocols are few, so the map stays small.
	v, _ := m.sets.LoadOrStore(k, attribute.NewSet(attrs...))
	return v.(attribute.Set)
}

// lookupPath splits a lookup route's path into its segment and user ids, or
// reports false for anything ServeMux would not match the same way (empty or
// dotted segments, doubled slashes).
func lookupPath(p string) (segment, user string, ok bool) {
	rest, found := strings.CutPrefix(p, "/v1/targeting/segments/")
	if !found {
		return "", "", false
	}
	segment, rest, found = strings.Cut(rest, "/")
	if !found || !cleanSegment(segment) {
		return "", "", false
	}
	user, found = strings.CutPrefix(rest, "members/")
	if !found || strings.IndexByte(user, '/') >= 0 || !cleanSegment(user) {
		return "", "", false
	}
	return segment, user, true
}

func cleanSegment(s string) bool { return s != "" && s != "." && s != ".." }

func (u *untracedLookups) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	_, traceContext := r.Header["Traceparent"]
	segment, user, ok := lookupPath(r.URL.Path)
	if traceContext || !ok || !plain(r) {
		u.traced.ServeHTTP(w, r)
		return
	}
	start := time.Now()
	// What ServeMux sets on the requests it routes to the lookup.
	r.Pattern = lookupPattern
	r.SetPathValue("segment_id", segment)
	r.SetPathValue("user_id", user)
	cw := &countingWriter{ResponseWriter: w}
	u.lookup.serve(cw, r)
	status := cw.status
	if status == 0 {
		status = http.StatusOK
	}
	ctx := r.Context()
	o := metric.WithAttributeSet(u.m.set(r, status))
	u.m.requestSize.Inst().Record(ctx, 0, o)
	u.m.responseSize.Inst().Record(ctx, cw.written, o)
	u.m.duration.Inst().Record(ctx, float64(time.Since(start))/float64(time.Second), o)
}

// countingWriter records the status and the body bytes written.
type countingWriter struct {
	http.ResponseWriter
	status  int
	written int64
}

func (c *countingWriter) WriteHeader(code int) {
	if c.status == 0 {
		c.status = code
	}
	c.ResponseWriter.WriteHeader(code)
}

func (c *countingWriter) Write(b []byte) (int, error) {
	if c.status == 0 {
		c.status = http.StatusOK
	}
	n, err := c.ResponseWriter.Write(b)
	c.written += int64(n)
	return n, err
}
