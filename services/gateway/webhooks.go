package gateway

import (
	"context"
	"io"
	"net/http"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	segmentsyncv1 "github.com/seghub/seghub/gen/seghub/segmentsync/v1"
	"github.com/seghub/seghub/pkg/app"
)

// MaxWebhookBody bounds inbound webhook bodies.
const MaxWebhookBody = 16 << 20

// segmentWebhook receives an analytics tool's partner webhook (Heap's
// format) for a source connection and hands the raw body and signature to
// segmentsync, which verifies and applies it.
func (g *Gateway) segmentWebhook(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxWebhookBody))
	if err != nil {
		writeJSON(w, http.StatusRequestEntityTooLarge, map[string]string{"error": "body too large or unreadable"})
		return
	}
	conn, err := g.p.Conn(app.SegmentSync)
	if err != nil {
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"error": "segmentsync unavailable"})
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 60*time.Second)
	defer cancel()
	resp, err := segmentsyncv1.NewSegmentSyncServiceClient(conn).ReceiveSegmentWebhook(ctx, &segmentsyncv1.ReceiveSegmentWebhookRequest{
		ConnectionId: r.PathValue("connection_id"), Signature: r.Header.Get("Heap-Hash"), Body: body})
	if err != nil {
		st := status.Convert(err)
		switch st.Code() {
		case codes.PermissionDenied:
			writeJSON(w, http.StatusForbidden, map[string]string{"error": "Invalid signature"})
		default:
			writeJSON(w, runtimeStatus(err), map[string]string{"error": st.Message()})
		}
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"status": "ok", "sync_task_id": resp.GetSyncTaskId(), "pages_received": resp.GetPagesReceived(), "total_pages": resp.GetTotalPages(), "applied": resp.GetApplied(), "segment_id": resp.GetSegmentId()})
}
