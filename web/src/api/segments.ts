// Hooks for the Segments section: segments, their syncs and sync runs.
import type { Segment, Sync, SyncRunStatus } from "./schema.gen";
import { useAllPages, useOp, useOpMutation, usePagedOp } from "./hooks";

export const segmentsPageSize = 50;

/**
 * One page of segments; search runs on the server over every segment.
 * targetableBy keeps the segments a destination with that identity property
 * can target (at least one member holds it).
 */
export function useSegmentsPage(search: string, pageToken: string, targetableBy = "", pollMs = 2000) {
  return usePagedOp(
    "SegmentSyncService_ListSegments",
    {
      query: {
        page_size: segmentsPageSize,
        page_token: pageToken || undefined,
        name_contains: search || undefined,
        targetable_by: targetableBy || undefined,
      },
    },
    // Computed segments still computing show their progress, so the page is read again until they are live.
    { refetchInterval: (q) => (q.state.data?.segments?.some(isComputing) ? pollMs : false) },
  );
}

export const isComputed = (s: Segment | undefined) => !!s?.rule;
export const isComputing = (s: Segment | undefined) => s?.compute_state === "COMPUTE_STATE_COMPUTING";

/**
 * Whether a destination whose identity property is prop can target a
 * segment: at least one member holds prop (ListSegments.targetable_by, the AB
 * Tasty document's rule). user_id always can; undefined while unknown. The
 * segment is looked for among the targetable segments whose name contains its
 * own, which is one short page.
 */
export function useTargetable(segment: Segment, prop: string): boolean | undefined {
  const skip = !prop || prop === "user_id" || !segment.name;
  const q = useOp(
    "SegmentSyncService_ListSegments",
    { query: { targetable_by: prop, name_contains: segment.name, page_size: 1000 } },
    { enabled: !skip, staleTime: 30_000 },
  );
  if (skip) return true;
  if (!q.data) return undefined;
  if (q.data.segments?.some((s) => s.segment_id === segment.segment_id)) return true;
  return q.data.next_page_token ? undefined : false;
}

/** One segment, read again every second while it is computing, so "computing… N%" climbs until it is live. */
export function useSegment(segmentId: string, pollMs = 1000) {
  return useOp(
    "SegmentSyncService_GetSegment",
    { path: { segment_id: segmentId } },
    { refetchInterval: (q) => (isComputing(q.state.data?.segment) ? pollMs : false) },
  );
}

/** The first members of a segment (dense-id order). */
export function useMembers(segmentId: string, pageSize: number) {
  return useOp("SegmentSyncService_GetMembers", { path: { segment_id: segmentId }, query: { page_size: pageSize } });
}

const segmentReads = ["SegmentSyncService_GetSegment", "SegmentSyncService_ListSegments", "SegmentSyncService_GetMembers"] as const;
export const useCreateSegment = () => useOpMutation("SegmentSyncService_CreateSegment", segmentReads);
export const usePreviewRule = () => useOpMutation("SegmentSyncService_PreviewSegmentRule");
export const useAddMembers = () => useOpMutation("SegmentSyncService_AddMembers", segmentReads);
export const useRemoveMembers = () => useOpMutation("SegmentSyncService_RemoveMembers", segmentReads);

/** Every sync of the environment (for the recurring-limit count), or of one segment. */
export function useSyncs(segmentId?: string) {
  return useAllPages("SegmentSyncService_ListSyncs", { query: segmentId ? { segment_id: segmentId } : {} }, (a) => a.syncs);
}

export function isRunning(status: SyncRunStatus | undefined): boolean {
  return status === "SYNC_RUN_STATUS_RUNNING" || status === "SYNC_RUN_STATUS_QUEUED";
}

/**
 * One sync, polled every second while a run is going (or one just asked for
 * has not finished) so its delivered count climbs on screen.
 */
export function useSync(syncId: string | undefined, awaitingRun = false, pollMs = 1000) {
  return useOp("SegmentSyncService_GetSync", { path: { sync_id: syncId ?? "" } }, {
    enabled: !!syncId,
    refetchInterval: (q) => (awaitingRun || isRunning(q.state.data?.sync?.last_status) ? pollMs : false),
  });
}

const finished = new Set<SyncRunStatus>(["SYNC_RUN_STATUS_SUCCEEDED", "SYNC_RUN_STATUS_PARTIAL", "SYNC_RUN_STATUS_FAILED", "SYNC_RUN_STATUS_CANCELED", "SYNC_RUN_STATUS_SEGMENT_NOT_PUBLIC"]);

/**
 * Whether the run "Sync now" queued has finished, read from the sync's latest
 * runs: the sync's own status may still show the previous run for a moment.
 */
export function useRunFinished(syncId: string, runId: string | undefined, pollMs = 1000) {
  const runs = useOp(
    "SegmentSyncService_ListSyncRuns",
    { path: { sync_id: syncId }, query: { page_size: 5 } },
    { enabled: !!runId, refetchInterval: pollMs },
  );
  const run = runs.data?.runs?.find((r) => r.run_id === runId);
  return !!run?.status && finished.has(run.status);
}

export function useSyncRuns(syncId: string, pageToken: string, running: boolean) {
  return usePagedOp(
    "SegmentSyncService_ListSyncRuns",
    { path: { sync_id: syncId }, query: { page_size: 20, page_token: pageToken || undefined } },
    { refetchInterval: running ? 2000 : false },
  );
}

export const useUpdateSegment = () => useOpMutation("SegmentSyncService_UpdateSegment", segmentReads);

// Connections carry the recurring syncs in use of their type, so sync
// changes refetch them too.
const syncReads = [
  "SegmentSyncService_ListSyncs",
  "SegmentSyncService_GetSync",
  "SegmentSyncService_ListSyncRuns",
  "ConnectorService_GetConnection",
  "ConnectorService_ListConnections",
] as const;

export const useEnableSync = () => useOpMutation("SegmentSyncService_EnableSync", syncReads);
export const useUpdateSync = () => useOpMutation("SegmentSyncService_UpdateSync", syncReads);
export const useDisableSync = () => useOpMutation("SegmentSyncService_DisableSync", syncReads);
export const useSyncNow = () => useOpMutation("SegmentSyncService_SyncNow", syncReads);
export const useDryRun = () => useOpMutation("SegmentSyncService_DryRun");

/**
 * Recurring syncs in use to one destination type in the environment, across
 * all its connections, against the type's limit ("7 of 10 recurring syncs in
 * use"); the server counts the same way. syncs must be the environment's.
 */
export function recurringInUse(syncs: readonly Sync[], destinationType: string): number {
  return syncs.filter((s) => s.enabled && s.schedule === "SYNC_SCHEDULE_RECURRING" && s.destination_type === destinationType).length;
}

/** The sync a segment's toggle for one connection shows: the enabled one, else the latest. */
export function syncFor(syncs: readonly Sync[], segmentId: string, connectionId: string): Sync | undefined {
  const mine = syncs.filter((s) => s.segment_id === segmentId && s.connection_id === connectionId);
  return mine.find((s) => s.enabled) ?? [...mine].sort((a, b) => (b.create_time ?? "").localeCompare(a.create_time ?? ""))[0];
}
