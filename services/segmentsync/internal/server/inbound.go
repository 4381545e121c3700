package server

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/timestamppb"

	connectorv1 "github.com/seghub/seghub/gen/seghub/connector/v1"
	segmentsyncv1 "github.com/seghub/seghub/gen/seghub/segmentsync/v1"
	"github.com/seghub/seghub/pkg/apperr"
	"github.com/seghub/seghub/pkg/auth"
	"github.com/seghub/seghub/pkg/destinations"
	"github.com/seghub/seghub/pkg/paging"
	"github.com/seghub/seghub/services/segmentsync/internal/store"
)

// Inbound webhook limits.
const (
	SignatureTolerance = 5 * time.Minute
	MaxTotalPages      = 10000
	MaxIDsPerPage      = 100000
)

// UnknownConnection is the metric label of requests naming no inbound
// connection of seghub's.
const UnknownConnection = "unknown"

// ErrInvalidSignature is the one answer to every signature problem (bad,
// missing, stale, unknown connection), so it reveals nothing.
var ErrInvalidSignature = apperr.PermissionDenied("Invalid signature")

// ConnectionResolver resolves a connection by id (internal, any environment).
type ConnectionResolver func(ctx context.Context, connectionID string) (*connectorv1.ResolveConnectionResponse, error)

// Inbound applies segments pushed by analytics tools' partner webhooks.
type Inbound struct {
	store   *store.Store
	resolve ConnectionResolver
	now     func() time.Time
	// record counts a request's outcome per source (metrics).
	record func(connectionID, result string)
}

// NewInbound returns the inbound handler; record may be nil.
func NewInbound(st *store.Store, resolve ConnectionResolver, record func(connectionID, result string)) *Inbound {
	if record == nil {
		record = func(string, string) {}
	}
	return &Inbound{store: st, resolve: resolve, now: time.Now, record: record}
}

// VerifySignature checks "ts:<unix>,hmac:<hex>" = HMAC-SHA256(secret, ts+body)
// with the timestamp within SignatureTolerance of now.
func VerifySignature(secret, header string, body []byte, now time.Time) bool {
	return destinations.Verify(secret, header, body, now, SignatureTolerance)
}

type webhookBody struct {
	IDToken    string `json:"id_token"`
	ActionType string `json:"action_type"`
	Data       *struct {
		Segment *struct {
			ID   json.RawMessage `json:"id"`
			Name string          `json:"name"`
		} `json:"segment"`
		SyncInfo *struct {
			PageNumber int             `json:"page_number"`
			TotalPages int             `json:"total_pages"`
			SyncTaskID json.RawMessage `json:"sync_task_id"`
		} `json:"sync_info"`
		Add []struct {
			ID json.RawMessage `json:"id"`
		} `json:"add"`
		Remove []struct {
			ID json.RawMessage `json:"id"`
		} `json:"remove"`
	} `json:"data"`
}

// idString accepts ids sent as JSON strings or numbers; one holding a
// control character is refused (before trimming, which would hide some).
func idString(raw json.RawMessage) (string, bool) {
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return strings.TrimSpace(s), strings.TrimSpace(s) != "" && apperr.IdentifierProblem(s) == ""
	}
	var n json.Number
	if json.Unmarshal(raw, &n) == nil && n.String() != "" {
		return n.String(), true
	}
	return "", false
}

func parseWebhook(body []byte) (store.InboundPage, error) {
	var b webhookBody
	var p store.InboundPage
	dec := json.NewDecoder(strings.NewReader(string(body)))
	if err := dec.Decode(&b); err != nil {
		return p, apperr.Invalid("body", "is not valid JSON: "+err.Error())
	}
	if b.ActionType != "segment.users.sync" {
		return p, apperr.Invalid("action_type", fmt.Sprintf("must be \"segment.users.sync\", got %q", b.ActionType))
	}
	if b.Data == nil || b.Data.Segment == nil || b.Data.SyncInfo == nil {
		return p, apperr.Invalid("data", "must hold segment and sync_info")
	}
	var ok bool
	if p.ExternalSegmentID, ok = idString(b.Data.Segment.ID); !ok {
		return p, apperr.Invalid("data.segment.id", "is required: a string or number without control characters")
	}
	if err := apperr.Identifier("data.segment.name", b.Data.Segment.Name); err != nil {
		return p, err
	}
	if p.SegmentName = strings.TrimSpace(b.Data.Segment.Name); p.SegmentName == "" || len(p.SegmentName) > MaxNameLength {
		return p, apperr.Invalid("data.segment.name", fmt.Sprintf("must be 1 to %d characters", MaxNameLength))
	}
	si := b.Data.SyncInfo
	if p.TaskID, ok = idString(si.SyncTaskID); !ok {
		return p, apperr.Invalid("data.sync_info.sync_task_id", "is required: a string or number without control characters")
	}
	if si.TotalPages < 1 || si.TotalPages > MaxTotalPages {
		return p, apperr.Invalid("data.sync_info.total_pages", fmt.Sprintf("must be 1 to %d", MaxTotalPages))
	}
	if si.PageNumber < 1 || si.PageNumber > si.TotalPages {
		return p, apperr.Invalid("data.sync_info.page_number", fmt.Sprintf("must be 1 to total_pages (%d)", si.TotalPages))
	}
	p.Page, p.TotalPages = si.PageNumber, si.TotalPages
	if len(b.Data.Add)+len(b.Data.Remove) > MaxIDsPerPage {
		return p, apperr.TooLarge("data", fmt.Sprintf("at most %d ids a page", MaxIDsPerPage))
	}
	for i, a := range b.Data.Add {
		id, ok := idString(a.ID)
		if !ok || len(id) > MaxUserIDLength {
			return p, apperr.Invalid(fmt.Sprintf("data.add[%d].id", i), "must be a non-empty id of at most 256 bytes, without control characters")
		}
		p.Adds = append(p.Adds, id)
	}
	for i, r := range b.Data.Remove {
		id, ok := idString(r.ID)
		if !ok || len(id) > MaxUserIDLength {
			return p, apperr.Invalid(fmt.Sprintf("data.remove[%d].id", i), "must be a non-empty id of at most 256 bytes, without control characters")
		}
		p.Removes = append(p.Removes, id)
	}
	return p, nil
}

// pageFailure names why a signed, well-formed page was not applied: the
// store refused it (a page that contradicts its task, over a limit), or
// seghub failed.
func pageFailure(err error) string {
	switch apperr.Code(err) {
	case codes.Internal, codes.Unknown, codes.Unavailable, codes.DeadlineExceeded, codes.Canceled:
		return "error"
	}
	return "refused"
}

// Receive implements ReceiveSegmentWebhook.
func (in *Inbound) Receive(ctx context.Context, req *segmentsyncv1.ReceiveSegmentWebhookRequest) (*segmentsyncv1.ReceiveSegmentWebhookResponse, error) {
	connID := req.GetConnectionId()
	conn, err := in.resolve(ctx, connID)
	if err != nil || !conn.GetDestination().GetSegmentsIn() {
		// The id comes from an unauthenticated URL: labelling the count
		// with it would let anyone mint metric series.
		in.record(UnknownConnection, "rejected")
		return nil, ErrInvalidSignature
	}
	env := conn.GetEnvironmentId()
	if !VerifySignature(conn.GetSigningSecret(), req.GetSignature(), req.GetBody(), in.now()) {
		in.record(connID, "rejected")
		_ = in.store.RejectInbound(ctx, env, connID)
		return nil, ErrInvalidSignature
	}
	page, err := parseWebhook(req.GetBody())
	if err != nil {
		in.record(connID, "malformed")
		_ = in.store.RejectInbound(ctx, env, connID)
		return nil, err
	}
	page.ConnectionID = connID
	page.IdentityProperty = conn.GetConnection().GetSettings().GetIdentityProperty()
	task, err := in.store.ReceiveInboundPage(ctx, env, page)
	if err != nil {
		in.record(connID, pageFailure(err))
		return nil, err
	}
	in.record(connID, "accepted")
	return &segmentsyncv1.ReceiveSegmentWebhookResponse{SegmentId: task.SegmentID, SyncTaskId: task.TaskID, PagesReceived: uint32(task.PagesReceived), TotalPages: uint32(task.TotalPages), Applied: task.Applied}, nil
}

// ReceiveSegmentWebhook implements SegmentSyncService.
func (s *Server) ReceiveSegmentWebhook(ctx context.Context, req *segmentsyncv1.ReceiveSegmentWebhookRequest) (*segmentsyncv1.ReceiveSegmentWebhookResponse, error) {
	if p, _ := auth.FromContext(ctx); !p.Internal {
		return nil, apperr.PermissionDenied("ReceiveSegmentWebhook is called by seghub's gateway; send webhooks to POST /webhooks/heap/{connection_id}")
	}
	if s.inbound == nil {
		return nil, apperr.Unavailable("inbound webhooks are not configured on this process")
	}
	return s.inbound.Receive(ctx, req)
}

// ListInboundSyncTasks implements SegmentSyncService.
func (s *Server) ListInboundSyncTasks(ctx context.Context, req *segmentsyncv1.ListInboundSyncTasksRequest) (*segmentsyncv1.ListInboundSyncTasksResponse, error) {
	if strings.TrimSpace(req.GetConnectionId()) == "" {
		return nil, apperr.Invalid("connection_id", "is required")
	}
	size, err := paging.Size(req.GetPageSize())
	if err != nil {
		return nil, err
	}
	var before *store.TaskCursor
	if req.GetPageToken() != "" {
		before = &store.TaskCursor{}
		if err := paging.Decode(req.GetPageToken(), before); err != nil {
			return nil, err
		}
	}
	tasks, rejected, err := s.store.InboundTasks(ctx, env(ctx), req.GetConnectionId(), before, size+1)
	if err != nil {
		return nil, err
	}
	resp := &segmentsyncv1.ListInboundSyncTasksResponse{RejectedRequests: rejected}
	if len(tasks) > size {
		tasks = tasks[:size]
		last := tasks[size-1]
		resp.NextPageToken = paging.Encode(store.TaskCursor{T: last.FirstPage.UnixMicro(), ID: last.TaskID})
	}
	for _, t := range tasks {
		pb := &segmentsyncv1.InboundSyncTask{ConnectionId: t.ConnectionID, SyncTaskId: t.TaskID, SegmentId: t.SegmentID, ExternalSegmentId: t.ExternalSegmentID,
			PagesReceived: uint32(t.PagesReceived), TotalPages: uint32(t.TotalPages), Adds: t.Adds, Removes: t.Removes, Applied: t.Applied, FirstPageTime: timestamppb.New(t.FirstPage)}
		if t.Applied {
			pb.AppliedTime = timestamppb.New(t.AppliedAt)
		}
		resp.Tasks = append(resp.Tasks, pb)
	}
	return resp, nil
}
