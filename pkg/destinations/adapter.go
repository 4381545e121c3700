package destinations

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"strconv"
	"strings"
	"syscall"
	"time"
	"unicode"
	"unicode/utf8"

	"go.opentelemetry.io/otel/trace"
)

// Identity is one user as the destination knows it.
type Identity struct {
	// UserID is seghub's user id (for reports), ID the destination's id.
	UserID, ID string
}

// SegmentBatch is one batch of a sync run.
type SegmentBatch struct {
	// SegmentID is seghub's segment id; DisplayName the frozen name the
	// destination shows.
	SegmentID, DisplayName string
	Add, Remove            []Identity
	// IdempotencyKey names this batch's content (ContentKey): the same
	// key is sent again only with the same segment, name, adds and removes.
	IdempotencyKey string
	// Page / TotalPages / TaskID place the batch in its task (the Heap
	// partner format's sync_info): one task has one page total, and a page
	// number within it names one content.
	Page, TotalPages int
	TaskID           string
}

// Failure is an identity the destination refused permanently.
type Failure struct {
	Identity
	Removal bool
	Reason  string
}

// BatchResult lists per-identity permanent failures of an accepted batch.
type BatchResult struct{ Failed []Failure }

// Event is one event to track.
type Event struct {
	ID         string
	Identity   string
	Name       string
	Timestamp  time.Time
	Properties map[string]any
}

// Segments delivers segment membership.
type Segments interface {
	DeliverSegment(ctx context.Context, b SegmentBatch) (BatchResult, error)
}

// Events delivers events.
type Events interface {
	Track(ctx context.Context, events []Event) error
}

// Adapter is a connected destination.
type Adapter interface {
	Type() Type
	// Check makes a cheap authenticated call (credentials test).
	Check(ctx context.Context) error
}

// ErrorKind classifies a delivery failure.
type ErrorKind int

const (
	Retryable ErrorKind = iota + 1
	Permanent
	AuthFailed
	// Refused: the egress policy stopped the request before it was sent;
	// it concerns the destination as a whole, not one batch or identity,
	// and only a change of URL or of the allow list helps.
	Refused
)

// Error is a delivery failure with its classification.
type Error struct {
	Kind       ErrorKind
	Status     int
	RetryAfter time.Duration
	Message    string
}

func (e *Error) Error() string {
	if e.Kind == Refused {
		return e.Message
	}
	kind := map[ErrorKind]string{Retryable: "retryable", Permanent: "permanent", AuthFailed: "auth"}[e.Kind]
	if e.Status > 0 {
		return fmt.Sprintf("%s failure (HTTP %d): %s", kind, e.Status, e.Message)
	}
	return fmt.Sprintf("%s failure: %s", kind, e.Message)
}

// KindOf returns the classification of err (Retryable for unknown errors,
// as network failures are).
func KindOf(err error) ErrorKind {
	var e *Error
	if errors.As(err, &e) {
		return e.Kind
	}
	return Retryable
}

// Limiter paces requests to one connection; shared by every run and process.
type Limiter interface {
	Wait(ctx context.Context, n int) error
	// Pause holds every user of the bucket until t (a 429's Retry-After).
	Pause(ctx context.Context, until time.Time) error
}

type noLimit struct{}

func (noLimit) Wait(context.Context, int) error        { return nil }
func (noLimit) Pause(context.Context, time.Time) error { return nil }

// Config builds an adapter.
type Config struct {
	BaseURL     string
	Credentials map[string]string
	// Egress is the outbound policy whose client sends every request; nil
	// means DefaultEgress (no private address allowed).
	Egress  *Egress
	Limiter Limiter
	// MaxAttempts per request (default 6) and MaxBackoff between them.
	MaxAttempts int
	MaxBackoff  time.Duration
	// TokenSource supplies OAuth access tokens (CommandBar); nil uses the
	// "access_token" credential.
	TokenSource func(ctx context.Context) (string, error)
	// Prefix of Appcues' boolean segment properties, the label before the
	// name ("[seghub]" in "[seghub] name"); empty means the type's default.
	Prefix string
	// SigningSecret signs outbound webhooks.
	SigningSecret string
	// Tracer records a client span per request attempt; nil uses the
	// Egress's (else the global provider's).
	Tracer trace.Tracer
	// Observer sees every request and rate-limit wait (metrics); nil: none.
	Observer Observer
}

// Observer sees what an adapter's HTTP client does, for metrics.
type Observer interface {
	// DestinationRequest is one attempt: its HTTP status (0 when no answer
	// came) and how long it took.
	DestinationRequest(destType string, status int, d time.Duration)
	// RateLimitWait is time spent waiting on a rate limit for reason
	// ("bucket" or "retry_after").
	RateLimitWait(destType, reason string, d time.Duration)
}

type noObserver struct{}

func (noObserver) DestinationRequest(string, int, time.Duration) {}
func (noObserver) RateLimitWait(string, string, time.Duration)   {}

// New returns the adapter for destination type name.
func New(name string, c Config) (Adapter, error) {
	t, ok := Lookup(name)
	if !ok {
		return nil, fmt.Errorf("unknown destination type %q", name)
	}
	if c.Egress == nil {
		c.Egress = DefaultEgress()
	}
	if c.Limiter == nil {
		c.Limiter = noLimit{}
	}
	if c.Observer == nil {
		c.Observer = noObserver{}
	} else if _, none := c.Limiter.(noLimit); !none {
		c.Limiter = observedLimiter{Limiter: c.Limiter, obs: c.Observer, typ: name}
	}
	if c.MaxAttempts == 0 {
		c.MaxAttempts = 6
	}
	if c.MaxBackoff == 0 {
		c.MaxBackoff = 30 * time.Second
	}
	if c.Prefix == "" {
		c.Prefix = t.PropertyPrefix
	}
	if c.Tracer == nil {
		c.Tracer = c.Egress.tracer
	}
	if c.Tracer == nil {
		c.Tracer = defaultTracer()
	}
	c.BaseURL = strings.TrimRight(c.BaseURL, "/")
	for _, f := range t.CredentialFields {
		if strings.TrimSpace(c.Credentials[f]) == "" {
			return nil, &Error{Kind: Permanent, Message: fmt.Sprintf("credential %q is required for %s", f, t.DisplayName)}
		}
	}
	h := &httpClient{c: c, typ: name}
	switch name {
	case "appcues":
		return &appcues{t: t, h: h}, nil
	case "commandbar":
		return &commandbar{t: t, h: h}, nil
	case "abtasty":
		return newABTasty(t, h), nil
	case "analytics":
		return &analytics{t: t, h: h}, nil
	case "webhook":
		return &webhook{t: t, h: h}, nil
	}
	return nil, fmt.Errorf("%s receives from seghub no deliveries", t.DisplayName)
}

// httpClient sends requests with pacing, retries and classification.
type httpClient struct {
	c   Config
	typ string // the destination type, for metrics
}

type request struct {
	method, path string
	body         any
	header       map[string]string
	// raw, when set, is sent instead of JSON-encoding body.
	raw []byte
	// weight is how many tokens of the bucket the request costs.
	weight int
}

// do sends r, retrying retryable failures with backoff (honouring
// Retry-After), and decodes a JSON answer into out when out is non-nil.
func (h *httpClient) do(ctx context.Context, r request, out any) error {
	var payload []byte
	if r.raw != nil {
		payload = r.raw
	} else if r.body != nil {
		var err error
		if payload, err = json.Marshal(r.body); err != nil {
			return &Error{Kind: Permanent, Message: "encode request: " + err.Error()}
		}
	}
	if r.weight == 0 {
		r.weight = 1
	}
	var last error
	for attempt := 1; attempt <= h.c.MaxAttempts; attempt++ {
		waitStart := time.Now()
		if err := h.c.Limiter.Wait(ctx, r.weight); err != nil {
			return err
		}
		noteRateLimitWait(ctx, time.Since(waitStart), attempt)
		status, body, retryAfter, err := h.timed(ctx, r, payload, attempt)
		if err == nil && status >= 200 && status < 300 {
			if out != nil && len(body) > 0 {
				if err := json.Unmarshal(body, out); err != nil {
					return &Error{Kind: Retryable, Status: status, Message: "undecodable answer: " + err.Error()}
				}
			}
			return nil
		}
		last = classify(status, body, retryAfter, err)
		var de *Error
		if errors.As(last, &de) && de.Kind != Retryable {
			return last
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		wait := min(time.Duration(float64(100*time.Millisecond)*float64(uint(1)<<min(attempt, 10))*(0.5+rand.Float64())), h.c.MaxBackoff)
		if retryAfter > 0 {
			wait = retryAfter
			// Every user of this connection waits, not only this request.
			_ = h.c.Limiter.Pause(ctx, time.Now().Add(retryAfter))
		}
		if attempt == h.c.MaxAttempts {
			break
		}
		noteRetry(ctx, attempt, wait, retryAfter, last)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(wait):
		}
		if retryAfter > 0 {
			h.c.Observer.RateLimitWait(h.typ, "retry_after", wait)
		}
	}
	return last
}

// observedLimiter counts the time a connection's bucket holds requests up.
type observedLimiter struct {
	Limiter
	obs Observer
	typ string
}

func (l observedLimiter) Wait(ctx context.Context, n int) error {
	// A bucket that says how long it slept is counted by that, not by the
	// store round trips of taking tokens.
	if t, ok := l.Limiter.(interface {
		WaitFor(ctx context.Context, n int) (time.Duration, error)
	}); ok {
		slept, err := t.WaitFor(ctx, n)
		l.obs.RateLimitWait(l.typ, "bucket", slept)
		return err
	}
	start := time.Now()
	err := l.Limiter.Wait(ctx, n)
	l.obs.RateLimitWait(l.typ, "bucket", time.Since(start))
	return err
}

// timed is once, counted by its status and duration.
func (h *httpClient) timed(ctx context.Context, r request, payload []byte, attempt int) (int, []byte, time.Duration, error) {
	start := time.Now()
	status, body, retryAfter, err := h.once(ctx, r, payload, attempt)
	h.c.Observer.DestinationRequest(h.typ, status, time.Since(start))
	return status, body, retryAfter, err
}

func (h *httpClient) once(ctx context.Context, r request, payload []byte, attempt int) (status int, body []byte, ra time.Duration, err error) {
	var rd io.Reader
	if payload != nil {
		rd = bytes.NewReader(payload)
	}
	req, err := http.NewRequestWithContext(ctx, r.method, h.c.BaseURL+r.path, rd)
	if err != nil {
		return 0, nil, 0, &Error{Kind: Permanent, Message: err.Error()}
	}
	if payload != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	for k, v := range r.header {
		req.Header.Set(k, v)
	}
	ctx, span := h.startRequestSpan(ctx, req, attempt, len(payload))
	defer func() { endRequestSpan(span, status, len(body), err) }()
	resp, err := h.c.Egress.Client().Do(req.WithContext(ctx))
	if err != nil {
		return 0, nil, 0, err
	}
	defer resp.Body.Close()
	body, _ = io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	return resp.StatusCode, body, retryAfter(resp.Header.Get("Retry-After")), nil
}

func retryAfter(v string) time.Duration {
	if v == "" {
		return 0
	}
	if s, err := strconv.Atoi(v); err == nil && s >= 0 {
		return time.Duration(s) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil {
		return max(time.Until(t), 0)
	}
	return 0
}

func classify(status int, body []byte, ra time.Duration, err error) error {
	if err != nil {
		var refused *RefusedError
		if errors.As(err, &refused) {
			return &Error{Kind: Refused, Message: refused.Error()}
		}
		return &Error{Kind: Retryable, Message: NetworkProblem(err)}
	}
	msg := Excerpt(string(body))
	switch {
	case status == http.StatusTooManyRequests:
		return &Error{Kind: Retryable, Status: status, RetryAfter: ra, Message: "rate limited: " + msg}
	case status == http.StatusUnauthorized || status == http.StatusForbidden:
		return &Error{Kind: AuthFailed, Status: status, Message: "credentials refused: " + msg}
	case status >= 500 || status == http.StatusRequestTimeout:
		return &Error{Kind: Retryable, Status: status, RetryAfter: ra, Message: msg}
	}
	return &Error{Kind: Permanent, Status: status, Message: msg}
}

// MaxExcerpt bounds how much of a destination's answer seghub repeats in
// errors, run records and last_error.
const MaxExcerpt = 200

// Excerpt is the part of a remote answer seghub may repeat: at most
// MaxExcerpt bytes of valid UTF-8, control characters and runs of spaces
// folded into one space, "…" marking a cut.
func Excerpt(s string) string {
	var b strings.Builder
	space := false
	for _, r := range s {
		if r == utf8.RuneError || unicode.IsControl(r) || unicode.IsSpace(r) || unicode.Is(unicode.Cf, r) {
			space = b.Len() > 0
			continue
		}
		need := utf8.RuneLen(r)
		if space {
			need++
		}
		if b.Len()+need > MaxExcerpt {
			return b.String() + "…"
		}
		if space {
			b.WriteByte(' ')
			space = false
		}
		b.WriteRune(r)
	}
	return b.String()
}

// NetworkProblem describes a failed request without its internals (URLs,
// addresses, resolver and socket details): what an operator can act on.
func NetworkProblem(err error) string {
	var refused *RefusedError
	var dns *net.DNSError
	var ne net.Error
	switch {
	case errors.As(err, &refused):
		return refused.Error()
	case errors.Is(err, context.Canceled):
		return "request cancelled"
	case errors.As(err, &dns):
		return "could not resolve the destination's host name"
	case errors.Is(err, syscall.ECONNREFUSED):
		return "the destination refused the connection"
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "the destination closed the connection"
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		return "the destination did not answer in time"
	}
	var cert *tls.CertificateVerificationError
	if errors.As(err, &cert) {
		return "the destination's TLS certificate was not accepted"
	}
	return "could not reach the destination"
}
