package gateway

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/seghub/seghub/pkg/apperr"
	"github.com/seghub/seghub/pkg/config"
)

// errBodyTooLarge is the cause a REST request's context is cancelled with
// when its body goes over the limit, so that nothing is sent on to a service
// even when the generated handler ignores the read error (it drains the body
// after decoding).
var errBodyTooLarge = errors.New("request body over the limit")

// guardREST runs before grpc-gateway reads anything: a request without a
// valid key is refused 401 with its body unread, then a body over the limit
// is refused 413 (at once when its Content-Length says so, otherwise when a
// read crosses the limit).
func (g *Gateway) guardREST(next http.Handler) http.Handler {
	limit := g.p.Config.RESTMaxBody
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := g.authenticate(r); err != nil {
			g.restError(w, r, err)
			return
		}
		if r.ContentLength > limit {
			g.restError(w, r, restBodyTooLarge(limit))
			return
		}
		ctx, cancel := context.WithCancelCause(r.Context())
		defer cancel(nil)
		r = r.WithContext(ctx)
		if r.Body != nil {
			r.Body = &cappedBody{ReadCloser: http.MaxBytesReader(w, r.Body, limit), over: func() { cancel(errBodyTooLarge) }}
		}
		next.ServeHTTP(w, r)
	})
}

// authenticate checks the caller's key with the same authenticator (and
// cache) the gRPC servers use; access per RPC is still checked there.
func (g *Gateway) authenticate(r *http.Request) error {
	md := metadata.MD{}
	if v := r.Header.Get("Authorization"); v != "" {
		md.Set("authorization", v)
	}
	if v := r.Header.Get("X-Api-Key"); v != "" {
		md.Set("x-api-key", v)
	}
	_, err := g.p.Auth.Authenticate(metadata.NewIncomingContext(r.Context(), md))
	return err
}

// forwardHeader passes the x-api-key header on to gRPC as auth reads it,
// besides grpc-gateway's defaults (Authorization among them).
func forwardHeader(key string) (string, bool) {
	if http.CanonicalHeaderKey(key) == "X-Api-Key" {
		return "x-api-key", true
	}
	return runtime.DefaultHeaderMatcher(key)
}

type cappedBody struct {
	io.ReadCloser
	over func()
}

func (b *cappedBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		b.over()
	}
	return n, err
}

func restBodyTooLarge(limit int64) error {
	return apperr.TooLarge("body", fmt.Sprintf("REST request bodies are at most %s (%d bytes; SEGHUB_REST_MAX_BODY); send smaller batches", config.FormatSize(limit), limit))
}

func webhookBodyTooLarge(source string, limit int64) error {
	return apperr.TooLarge("body", fmt.Sprintf("%s webhook bodies are at most %s (%d bytes; SEGHUB_WEBHOOK_MAX_BODY); send smaller pages", source, config.FormatSize(limit), limit))
}

// restError answers err the way grpc-gateway answers a service's error.
func (g *Gateway) restError(w http.ResponseWriter, r *http.Request, err error) {
	_, out := runtime.MarshalerForRequest(g.gw, r)
	runtime.HTTPError(r.Context(), g.gw, out, w, r, err)
}

// httpError is the REST error handler: grpc-gateway's mapping, except that
// size refusals are 413 (not 400, nor 429 for gRPC's own message limit) and
// errors carrying a retry delay send it as Retry-After.
func (g *Gateway) httpError(ctx context.Context, mux *runtime.ServeMux, m runtime.Marshaler, w http.ResponseWriter, r *http.Request, err error) {
	if errors.Is(context.Cause(r.Context()), errBodyTooLarge) {
		err = restBodyTooLarge(g.p.Config.RESTMaxBody)
	}
	var custom *runtime.HTTPStatusError
	if !errors.As(err, &custom) {
		st := status.Convert(err)
		if !utf8.ValidString(st.Message()) {
			// Decode errors quote the input; a status that is not valid
			// UTF-8 cannot be marshalled and would turn into a 500.
			p := st.Proto()
			p.Message = strings.ToValidUTF8(p.Message, "\uFFFD")
			st = status.FromProto(p)
			err = st.Err()
		}
		code, retryAfter := httpStatus(st)
		if retryAfter != "" {
			w.Header().Set("Retry-After", retryAfter)
		}
		err = &runtime.HTTPStatusError{HTTPStatus: code, Err: err}
	}
	runtime.DefaultHTTPErrorHandler(ctx, mux, m, w, r, err)
}

// httpStatus maps a gRPC status to its HTTP status and Retry-After value
// ("" when the status carries no retry delay).
func httpStatus(st *status.Status) (int, string) {
	code := runtime.HTTPStatusFromCode(st.Code())
	if apperr.IsTooLarge(st) {
		code = http.StatusRequestEntityTooLarge
	}
	for _, d := range st.Details() {
		if ri, ok := d.(*errdetails.RetryInfo); ok && ri.GetRetryDelay() != nil {
			secs := math.Ceil(ri.GetRetryDelay().AsDuration().Seconds())
			return code, strconv.Itoa(max(1, int(secs)))
		}
	}
	return code, ""
}
