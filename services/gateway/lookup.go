package gateway

import (
	"net/http"
	"strconv"
	"strings"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"

	targetingv1 "github.com/seghub/seghub/gen/seghub/targeting/v1"
	"github.com/seghub/seghub/pkg/app"
)

// lookupPattern is CheckMembership's REST route, the hot one of REST targeting
// (a page view may ask it): it has a handler of its own instead of
// grpc-gateway's generic one, which annotates a context with every header,
// copies metadata and marshals the answer with protojson through
// reflection. The call itself is unchanged: the same TargetingService client
// (in-process in the all-in-one), so the server's chain checks the key's
// access and environment, validates, maps errors, logs and counts as
// before; errors are answered by the gateway's own error handler, and the
// route keeps its name for otelhttp's spans and metrics.
const lookupPattern = "GET /v1/targeting/segments/{segment_id}/members/{user_id}"

// lookupHandler answers the plain lookups; anything unusual goes the generic
// way, so edge cases answer exactly as they always did.
type lookupHandler struct {
	g       *Gateway
	client  targetingv1.TargetingServiceClient
	generic http.Handler
}

func (g *Gateway) mountLookup() error {
	client, err := g.targetingClient()
	if err != nil {
		return err
	}
	g.lookup = &lookupHandler{g: g, client: client, generic: g.guardREST(g.gw)}
	g.mux.Handle(lookupPattern, g.lookup)
	return nil
}

// plain reports whether r is a lookup this handler answers as grpc-gateway
// would: a GET without a body (which grpc-gateway would read under the size
// limit), without escapes in its path (grpc-gateway unescapes path
// parameters its own way), without a gRPC timeout or metadata headers
// (which grpc-gateway forwards) and without TE (trailers).
func plain(r *http.Request) bool {
	if r.Method != http.MethodGet || r.ContentLength != 0 || r.URL.RawPath != "" || strings.IndexByte(r.RequestURI, '%') >= 0 {
		return false
	}
	for k := range r.Header {
		if strings.HasPrefix(k, "Grpc-") || k == "Te" {
			return false
		}
	}
	return true
}

var jsonContentType = []string{"application/json"}

func (h *lookupHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if !plain(r) {
		// The pattern the request would have matched without this route
		// (a HEAD that grpc-gateway does not serve keeps its route label).
		r.Pattern = restPrefix
		h.generic.ServeHTTP(w, r)
		return
	}
	h.serve(w, r)
}

// serve answers a plain lookup (plain(r)) whose path values are set.
func (h *lookupHandler) serve(w http.ResponseWriter, r *http.Request) {
	// The key headers, as grpc-gateway forwards them (forwardHeader).
	md := make(metadata.MD, 2)
	if v := r.Header.Get("Authorization"); v != "" {
		md["authorization"] = []string{v}
	}
	if v := r.Header.Get("X-Api-Key"); v != "" {
		md["x-api-key"] = []string{v}
	}
	// Refused here before any call, as guardREST does for every route.
	if _, err := h.g.p.Auth.Authenticate(metadata.NewIncomingContext(r.Context(), md)); err != nil {
		h.g.restError(w, r, err)
		return
	}
	var header metadata.MD
	req := &targetingv1.CheckMembershipRequest{SegmentId: r.PathValue("segment_id"), UserId: r.PathValue("user_id")}
	resp, err := h.client.CheckMembership(metadata.NewOutgoingContext(r.Context(), md), req, grpc.Header(&header))
	if err != nil {
		ctx := runtime.NewServerMetadataContext(r.Context(), runtime.ServerMetadata{HeaderMD: header})
		_, out := runtime.MarshalerForRequest(h.g.gw, r)
		runtime.HTTPError(ctx, h.g.gw, out, w, r, err)
		return
	}
	wh := w.Header()
	for k, vs := range header {
		for _, v := range vs {
			wh.Add(runtime.MetadataHeaderPrefix+k, v)
		}
	}
	wh["Content-Type"] = jsonContentType
	_, _ = w.Write(appendLookupJSON(make([]byte, 0, 64), resp))
}

// appendLookupJSON is the answer as grpc-gateway's protojson writes it (proto
// field names, zero values included, int64 as a string), without reflection.
func appendLookupJSON(b []byte, resp *targetingv1.CheckMembershipResponse) []byte {
	b = append(b, `{"is_member":`...)
	b = strconv.AppendBool(b, resp.GetIsMember())
	b = append(b, `,"index_version":"`...)
	b = strconv.AppendInt(b, resp.GetIndexVersion(), 10)
	return append(b, `"}`...)
}

// targetingClient is the TargetingService client the gateway's own routes
// call: in the all-in-one, targeting runs in this process and is called
// in-process through its server's own chain, without the loopback gRPC hop.
func (g *Gateway) targetingClient() (targetingv1.TargetingServiceClient, error) {
	var conn grpc.ClientConnInterface = g.p.Local(app.Targeting)
	if conn == nil {
		c, err := g.p.PlainConn(app.Targeting)
		if err != nil {
			return nil, err
		}
		conn = c
	}
	return targetingv1.NewTargetingServiceClient(conn), nil
}
