package server

import (
	"context"
	"fmt"
	"strings"

	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	segmentsyncv1 "github.com/seghub/seghub/gen/seghub/segmentsync/v1"
	"github.com/seghub/seghub/pkg/apperr"
	"github.com/seghub/seghub/pkg/paging"
	"github.com/seghub/seghub/services/segmentsync/internal/syncengine"
)

// MinInterval bounds recurring schedules from below.
const MinInterval = 5 * 60 // seconds

func (s *Server) engineOrErr() (*syncengine.Engine, error) {
	if s.engine == nil {
		return nil, apperr.Unavailable("the sync engine is not running on this process")
	}
	return s.engine, nil
}

var statusPB = map[string]segmentsyncv1.SyncRunStatus{
	syncengine.StatusQueued: segmentsyncv1.SyncRunStatus_SYNC_RUN_STATUS_QUEUED, syncengine.StatusRunning: segmentsyncv1.SyncRunStatus_SYNC_RUN_STATUS_RUNNING,
	syncengine.StatusSucceeded: segmentsyncv1.SyncRunStatus_SYNC_RUN_STATUS_SUCCEEDED, syncengine.StatusPartial: segmentsyncv1.SyncRunStatus_SYNC_RUN_STATUS_PARTIAL,
	syncengine.StatusFailed: segmentsyncv1.SyncRunStatus_SYNC_RUN_STATUS_FAILED, syncengine.StatusCanceled: segmentsyncv1.SyncRunStatus_SYNC_RUN_STATUS_CANCELED,
	syncengine.StatusSegmentNotPublic: segmentsyncv1.SyncRunStatus_SYNC_RUN_STATUS_SEGMENT_NOT_PUBLIC,
}

var triggerPB = map[string]segmentsyncv1.SyncRunTrigger{
	syncengine.TriggerEnable: segmentsyncv1.SyncRunTrigger_SYNC_RUN_TRIGGER_ENABLE, syncengine.TriggerManual: segmentsyncv1.SyncRunTrigger_SYNC_RUN_TRIGGER_MANUAL,
	syncengine.TriggerSchedule: segmentsyncv1.SyncRunTrigger_SYNC_RUN_TRIGGER_SCHEDULE, syncengine.TriggerRetention: segmentsyncv1.SyncRunTrigger_SYNC_RUN_TRIGGER_RETENTION_REFRESH,
	syncengine.TriggerDisable: segmentsyncv1.SyncRunTrigger_SYNC_RUN_TRIGGER_DISABLE,
}

func ts(t interface{ IsZero() bool }, f func() *timestamppb.Timestamp) *timestamppb.Timestamp {
	if t.IsZero() {
		return nil
	}
	return f()
}

// SyncToPB converts a sync.
func SyncToPB(x *syncengine.Sync) *segmentsyncv1.Sync {
	pb := &segmentsyncv1.Sync{SyncId: x.ID, SegmentId: x.SegmentID, ConnectionId: x.ConnectionID, DestinationType: x.DestinationType, IdentityProperty: x.IdentityProperty,
		Schedule: segmentsyncv1.SyncSchedule_SYNC_SCHEDULE_ONE_TIME, Mode: segmentsyncv1.SyncMode_SYNC_MODE_MIRROR, Enabled: x.Enabled, FrozenDisplayName: x.FrozenName, FrozenPropertyPrefix: x.FrozenPrefix,
		LastStatus: statusPB[x.LastStatus], LastError: x.LastError, DeliveredCount: x.Delivered, CreateTime: timestamppb.New(x.Created)}
	if x.Schedule == syncengine.Recurring {
		pb.Schedule = segmentsyncv1.SyncSchedule_SYNC_SCHEDULE_RECURRING
		pb.Interval = durationpb.New(x.Interval)
	}
	if x.Mode == syncengine.Upsert {
		pb.Mode = segmentsyncv1.SyncMode_SYNC_MODE_UPSERT
	}
	pb.LastSyncedTime = ts(x.LastSynced, func() *timestamppb.Timestamp { return timestamppb.New(x.LastSynced) })
	pb.NextRunTime = ts(x.NextRun, func() *timestamppb.Timestamp { return timestamppb.New(x.NextRun) })
	pb.DataExpireTime = ts(x.DataExpires, func() *timestamppb.Timestamp { return timestamppb.New(x.DataExpires) })
	return pb
}

// RunToPB converts a run.
func RunToPB(r *syncengine.Run) *segmentsyncv1.SyncRun {
	if r == nil {
		return nil
	}
	pb := &segmentsyncv1.SyncRun{RunId: r.ID, SyncId: r.SyncID, Trigger: triggerPB[r.Trigger], Status: statusPB[r.Status], CreateTime: timestamppb.New(r.Created),
		Added: r.Added, Removed: r.Removed, Unmatched: r.Unmatched, Failed: r.Failed, Retried: r.Retried, Error: r.Error, TraceId: r.TraceID}
	pb.StartTime = ts(r.Started, func() *timestamppb.Timestamp { return timestamppb.New(r.Started) })
	pb.FinishTime = ts(r.Finished, func() *timestamppb.Timestamp { return timestamppb.New(r.Finished) })
	pb.DataExpireTime = ts(r.DataExpires, func() *timestamppb.Timestamp { return timestamppb.New(r.DataExpires) })
	for _, f := range r.FailedSample {
		pb.FailedIdentities = append(pb.FailedIdentities, &segmentsyncv1.FailedIdentity{UserId: f.UserID, Identity: f.Identity, Reason: f.Reason, Removal: f.Removal})
	}
	return pb
}

func scheduleOf(field string, v segmentsyncv1.SyncSchedule, def string) (string, error) {
	switch v {
	case segmentsyncv1.SyncSchedule_SYNC_SCHEDULE_UNSPECIFIED:
		return def, nil
	case segmentsyncv1.SyncSchedule_SYNC_SCHEDULE_ONE_TIME:
		return syncengine.OneTime, nil
	case segmentsyncv1.SyncSchedule_SYNC_SCHEDULE_RECURRING:
		return syncengine.Recurring, nil
	}
	return "", apperr.Invalid(field, "must be SYNC_SCHEDULE_ONE_TIME or SYNC_SCHEDULE_RECURRING")
}

func modeOf(field string, v segmentsyncv1.SyncMode, def string) (string, error) {
	switch v {
	case segmentsyncv1.SyncMode_SYNC_MODE_UNSPECIFIED:
		return def, nil
	case segmentsyncv1.SyncMode_SYNC_MODE_UPSERT:
		return syncengine.Upsert, nil
	case segmentsyncv1.SyncMode_SYNC_MODE_MIRROR:
		return syncengine.Mirror, nil
	}
	return "", apperr.Invalid(field, "must be SYNC_MODE_UPSERT or SYNC_MODE_MIRROR")
}

func checkInterval(d *durationpb.Duration) error {
	if d == nil {
		return nil
	}
	if err := d.CheckValid(); err != nil || d.GetSeconds() < MinInterval {
		return apperr.Invalid("interval", fmt.Sprintf("must be at least %d minutes", MinInterval/60))
	}
	return nil
}

// EnableSync implements SegmentSyncService.
func (s *Server) EnableSync(ctx context.Context, req *segmentsyncv1.EnableSyncRequest) (*segmentsyncv1.EnableSyncResponse, error) {
	e, err := s.engineOrErr()
	if err != nil {
		return nil, err
	}
	if err := checkSegmentID(req.GetSegmentId()); err != nil {
		return nil, err
	}
	if strings.TrimSpace(req.GetConnectionId()) == "" {
		return nil, apperr.Invalid("connection_id", "is required")
	}
	sched, err := scheduleOf("schedule", req.GetSchedule(), "")
	if err != nil {
		return nil, err
	}
	if sched == "" {
		return nil, apperr.Invalid("schedule", "is required: SYNC_SCHEDULE_ONE_TIME or SYNC_SCHEDULE_RECURRING")
	}
	mode, err := modeOf("mode", req.GetMode(), syncengine.Mirror)
	if err != nil {
		return nil, err
	}
	if err := checkInterval(req.GetInterval()); err != nil {
		return nil, err
	}
	x, run, err := e.Enable(ctx, syncengine.EnableRequest{Env: env(ctx), SegmentID: req.GetSegmentId(), ConnectionID: req.GetConnectionId(), IdentityProperty: strings.TrimSpace(req.GetIdentityProperty()),
		Schedule: sched, Interval: req.GetInterval().AsDuration(), Mode: mode, Reset: req.GetStartOver()})
	if err != nil {
		return nil, err
	}
	return &segmentsyncv1.EnableSyncResponse{Sync: SyncToPB(x), Run: RunToPB(run)}, nil
}

func checkSyncID(id string) error {
	if strings.TrimSpace(id) == "" {
		return apperr.Invalid("sync_id", "is required")
	}
	return nil
}

// GetSync implements SegmentSyncService.
func (s *Server) GetSync(ctx context.Context, req *segmentsyncv1.GetSyncRequest) (*segmentsyncv1.GetSyncResponse, error) {
	e, err := s.engineOrErr()
	if err != nil {
		return nil, err
	}
	if err := checkSyncID(req.GetSyncId()); err != nil {
		return nil, err
	}
	x, err := e.Store().GetSync(ctx, env(ctx), req.GetSyncId())
	if err != nil {
		return nil, err
	}
	if x.Delivered, err = e.Store().DeliveredCount(ctx, x.ID); err != nil {
		return nil, err
	}
	return &segmentsyncv1.GetSyncResponse{Sync: SyncToPB(x)}, nil
}

// ListSyncs implements SegmentSyncService.
func (s *Server) ListSyncs(ctx context.Context, req *segmentsyncv1.ListSyncsRequest) (*segmentsyncv1.ListSyncsResponse, error) {
	e, err := s.engineOrErr()
	if err != nil {
		return nil, err
	}
	var after syncengine.Cursor
	size, err := paging.Parse(req.GetPageSize(), req.GetPageToken(), &after)
	if err != nil {
		return nil, err
	}
	xs, err := e.Store().ListSyncsPage(ctx, env(ctx), req.GetSegmentId(), req.GetConnectionId(), after, size+1)
	if err != nil {
		return nil, err
	}
	resp := &segmentsyncv1.ListSyncsResponse{}
	if len(xs) > size {
		xs = xs[:size]
		last := xs[size-1]
		resp.NextPageToken = paging.Encode(syncengine.Cursor{T: last.Created.UnixMicro(), ID: last.ID})
	}
	for _, x := range xs {
		resp.Syncs = append(resp.Syncs, SyncToPB(x))
	}
	return resp, nil
}

// UpdateSync implements SegmentSyncService.
func (s *Server) UpdateSync(ctx context.Context, req *segmentsyncv1.UpdateSyncRequest) (*segmentsyncv1.UpdateSyncResponse, error) {
	e, err := s.engineOrErr()
	if err != nil {
		return nil, err
	}
	if err := checkSyncID(req.GetSyncId()); err != nil {
		return nil, err
	}
	mode, err := modeOf("mode", req.GetMode(), "")
	if err != nil {
		return nil, err
	}
	sched, err := scheduleOf("schedule", req.GetSchedule(), "")
	if err != nil {
		return nil, err
	}
	if err := checkInterval(req.GetInterval()); err != nil {
		return nil, err
	}
	x, err := e.Update(ctx, env(ctx), req.GetSyncId(), syncengine.UpdateRequest{Mode: mode, Schedule: sched, Interval: req.GetInterval().AsDuration(), IdentityProperty: req.IdentityProperty})
	if err != nil {
		return nil, err
	}
	return &segmentsyncv1.UpdateSyncResponse{Sync: SyncToPB(x)}, nil
}

// DisableSync implements SegmentSyncService.
func (s *Server) DisableSync(ctx context.Context, req *segmentsyncv1.DisableSyncRequest) (*segmentsyncv1.DisableSyncResponse, error) {
	e, err := s.engineOrErr()
	if err != nil {
		return nil, err
	}
	if err := checkSyncID(req.GetSyncId()); err != nil {
		return nil, err
	}
	x, run, err := e.Disable(ctx, env(ctx), req.GetSyncId(), req.GetClearDestination())
	if err != nil {
		return nil, err
	}
	return &segmentsyncv1.DisableSyncResponse{Sync: SyncToPB(x), Run: RunToPB(run)}, nil
}

// SyncNow implements SegmentSyncService.
func (s *Server) SyncNow(ctx context.Context, req *segmentsyncv1.SyncNowRequest) (*segmentsyncv1.SyncNowResponse, error) {
	e, err := s.engineOrErr()
	if err != nil {
		return nil, err
	}
	if err := checkSyncID(req.GetSyncId()); err != nil {
		return nil, err
	}
	run, err := e.SyncNow(ctx, env(ctx), req.GetSyncId())
	if err != nil {
		return nil, err
	}
	return &segmentsyncv1.SyncNowResponse{Run: RunToPB(run)}, nil
}

// ListSyncRuns implements SegmentSyncService.
func (s *Server) ListSyncRuns(ctx context.Context, req *segmentsyncv1.ListSyncRunsRequest) (*segmentsyncv1.ListSyncRunsResponse, error) {
	e, err := s.engineOrErr()
	if err != nil {
		return nil, err
	}
	if err := checkSyncID(req.GetSyncId()); err != nil {
		return nil, err
	}
	if _, err := e.Store().GetSync(ctx, env(ctx), req.GetSyncId()); err != nil {
		return nil, err
	}
	size, err := paging.Size(req.GetPageSize())
	if err != nil {
		return nil, err
	}
	var before *syncengine.Cursor
	if req.GetPageToken() != "" {
		before = &syncengine.Cursor{}
		if err := paging.Decode(req.GetPageToken(), before); err != nil {
			return nil, err
		}
	}
	runs, err := e.Store().ListRuns(ctx, req.GetSyncId(), before, size+1)
	if err != nil {
		return nil, err
	}
	resp := &segmentsyncv1.ListSyncRunsResponse{}
	if len(runs) > size {
		runs = runs[:size]
		last := runs[size-1]
		resp.NextPageToken = paging.Encode(syncengine.Cursor{T: last.Created.UnixMicro(), ID: last.ID})
	}
	for _, r := range runs {
		resp.Runs = append(resp.Runs, RunToPB(r))
	}
	return resp, nil
}

// DryRun implements SegmentSyncService.
func (s *Server) DryRun(ctx context.Context, req *segmentsyncv1.DryRunRequest) (*segmentsyncv1.DryRunResponse, error) {
	e, err := s.engineOrErr()
	if err != nil {
		return nil, err
	}
	if err := checkSyncID(req.GetSyncId()); err != nil {
		return nil, err
	}
	n := int(req.GetSampleSize())
	if n < 0 || n > 100 {
		return nil, apperr.Invalid("sample_size", "must be 0 to 100")
	}
	p, err := e.DryRun(ctx, env(ctx), req.GetSyncId(), n)
	if err != nil {
		return nil, err
	}
	resp := &segmentsyncv1.DryRunResponse{ToAdd: uint64(len(p.Adds)), ToRemove: uint64(len(p.Removes)), Unmatched: p.Unmatched, ToRetry: p.Retry, SegmentVersion: p.Version}
	for i := 0; i < n && i < len(p.Adds); i++ {
		resp.SampleAdds = append(resp.SampleAdds, p.Adds[i].Identity())
	}
	for i := 0; i < n && i < len(p.Removes); i++ {
		resp.SampleRemoves = append(resp.SampleRemoves, p.Removes[i].Identity())
	}
	return resp, nil
}
