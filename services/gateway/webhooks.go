package gateway

import (
	"context"
	"errors"
	"net/http"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	eventrelayv1 "github.com/seghub/seghub/gen/seghub/eventrelay/v1"
	segmentsyncv1 "github.com/seghub/seghub/gen/seghub/segmentsync/v1"
)

// webhookCall hands one webhook's raw body and signature header to the
// service that verifies and applies it, and returns the JSON answer.
type webhookCall func(ctx context.Context, conn *grpc.ClientConn, connectionID, signature string, body []byte) (any, error)

// webhook receives a tool's signed webhook for a source connection. The
// gateway does not verify: the owning service holds the signing secret. The
// body is bounded by the source's own limit before it is read.
func (g *Gateway) webhook(source, service string, call webhookCall) http.HandlerFunc {
	limit := g.p.Config.WebhookMaxBody[source]
	return func(w http.ResponseWriter, r *http.Request) {
		if r.ContentLength > limit {
			webhookError(w, webhookBodyTooLarge(source, limit))
			return
		}
		body, err := readBody(http.MaxBytesReader(w, r.Body, limit), limit)
		var mbe *http.MaxBytesError
		switch {
		case errors.As(err, &mbe):
			webhookError(w, webhookBodyTooLarge(source, limit))
			return
		case err != nil:
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": "could not read the body: " + err.Error()})
			return
		}
		conn, err := g.p.Conn(service)
		if err != nil {
			writeJSON(w, http.StatusServiceUnavailable, map[string]string{"error": service + " unavailable"})
			return
		}
		ctx, cancel := context.WithTimeout(r.Context(), 60*time.Second)
		defer cancel()
		// Heap signs with Heap-Hash; seghub's own format uses the same value
		// under X-Seghub-Signature.
		sig := r.Header.Get("X-Seghub-Signature")
		if sig == "" {
			sig = r.Header.Get("Heap-Hash")
		}
		out, err := call(ctx, conn, r.PathValue("connection_id"), sig, body)
		if err != nil {
			if status.Code(err) == codes.PermissionDenied {
				writeJSON(w, http.StatusForbidden, map[string]string{"error": "Invalid signature"})
				return
			}
			webhookError(w, err)
			return
		}
		writeJSON(w, http.StatusOK, out)
	}
}

// webhookError answers in the webhooks' own {"error": ...} shape with the
// status REST would give.
func webhookError(w http.ResponseWriter, err error) {
	st := status.Convert(err)
	code, retryAfter := httpStatus(st)
	if retryAfter != "" {
		w.Header().Set("Retry-After", retryAfter)
	}
	writeJSON(w, code, map[string]string{"error": st.Message()})
}

// segmentWebhook is an analytics tool's partner segment webhook (Heap's format).
func segmentWebhook(ctx context.Context, conn *grpc.ClientConn, id, sig string, body []byte) (any, error) {
	resp, err := segmentsyncv1.NewSegmentSyncServiceClient(conn).ReceiveSegmentWebhook(ctx, &segmentsyncv1.ReceiveSegmentWebhookRequest{
		ConnectionId: id, Signature: sig, Body: body})
	if err != nil {
		return nil, err
	}
	return map[string]any{"status": "ok", "sync_task_id": resp.GetSyncTaskId(), "pages_received": resp.GetPagesReceived(), "total_pages": resp.GetTotalPages(), "applied": resp.GetApplied(), "segment_id": resp.GetSegmentId()}, nil
}

// eventWebhook is an engagement tool's event webhook (Appcues, CommandBar).
func eventWebhook(ctx context.Context, conn *grpc.ClientConn, id, sig string, body []byte) (any, error) {
	resp, err := eventrelayv1.NewEventRelayServiceClient(conn).ReceiveEventWebhook(ctx, &eventrelayv1.ReceiveEventWebhookRequest{
		ConnectionId: id, Signature: sig, Body: body})
	if err != nil {
		return nil, err
	}
	rejected := make([]map[string]any, 0, len(resp.GetRejected()))
	for _, r := range resp.GetRejected() {
		rejected = append(rejected, map[string]any{"index": r.GetIndex(), "field": r.GetField(), "reason": r.GetReason()})
	}
	// A tool that reads only the status still learns part of its batch was refused.
	st := "ok"
	if len(rejected) > 0 {
		st = "partial"
	}
	return map[string]any{"status": st, "accepted": resp.GetAccepted(), "duplicates": resp.GetDuplicates(), "rejected": rejected}, nil
}
