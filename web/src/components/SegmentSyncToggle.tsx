import { useEffect, useId, useState } from "react";
import { useQueryClient } from "@tanstack/react-query";
import type { Connection, DestinationType, Segment, Sync } from "../api/schema.gen";
import { useSync } from "../api/segments";
import { useAccess } from "../session/SessionContext";
import { count, every, recurringUsage, when } from "../format";
import { DisableSyncDialog, EnableSyncDialog } from "./SyncDialogs";
import { DryRunPanel } from "./DryRunPanel";
import { GuardedButton } from "./Guarded";
import { RunHistory } from "./RunHistory";
import { SyncStatus } from "./SyncStatus";
import { syncToggleState } from "./syncToggleState";
import { useRunFinished, useSyncNow, useTargetable, useUpdateSync } from "../api/segments";
import { ErrorNotice } from "./ErrorNotice";

/**
 * One connected tool in a segment's Integrations section: the toggle, the
 * name frozen at first sync beside it, schedule, last sync and its status,
 * "Sync now", dry run and the run history.
 */
export function SegmentSyncToggle({
  segment,
  connection,
  type,
  listed,
  recurringUsed,
}: {
  segment: Segment;
  connection: Connection;
  type: DestinationType;
  /** The sync as ListSyncs returned it (no delivered count); GetSync adds it and is polled while running. */
  listed: Sync | undefined;
  recurringUsed: number;
}) {
  const access = useAccess();
  // The run "Sync now" queued, until it finishes.
  const [awaiting, setAwaiting] = useState<string>();
  const runDone = useRunFinished(listed?.sync_id ?? "", awaiting);
  const qc = useQueryClient();
  useEffect(() => {
    if (awaiting && runDone) {
      setAwaiting(undefined);
      void qc.invalidateQueries({ queryKey: ["SegmentSyncService_ListSyncs"] });
      void qc.invalidateQueries({ queryKey: ["SegmentSyncService_GetSync"] });
      void qc.invalidateQueries({ queryKey: ["SegmentSyncService_ListSyncRuns"] });
    }
  }, [awaiting, runDone, qc]);
  const live = useSync(listed?.enabled ? listed.sync_id : undefined, !!awaiting);
  const sync = live.data?.sync ?? listed;
  // Checked only for segments with members: an empty one is explained on the page.
  const identityProperty = connection.settings?.identity_property || type.default_identity_property || "user_id";
  const hasMembers = Number(segment.member_count ?? 0) > 0;
  const targetable = useTargetable(segment, hasMembers && !sync?.enabled ? identityProperty : "");
  const untargetable = targetable === false ? { identityProperty, tool: type.display_name ?? connection.name ?? "" } : undefined;
  const toggle = syncToggleState(sync, segment.visibility !== "VISIBILITY_PRIVATE", access, untargetable);
  const state = { ...toggle, running: toggle.running || !!awaiting };
  const [dialog, setDialog] = useState<"enable" | "disable" | null>(null);
  const [showRuns, setShowRuns] = useState(false);
  const syncNow = useSyncNow();
  const update = useUpdateSync();
  const reasonId = useId();
  const labelId = useId();
  const recurring = sync?.schedule === "SYNC_SCHEDULE_RECURRING";
  const recurringLimit = connection.recurring_syncs_limit ?? type.recurring_limit ?? 0;
  const recurringFull = recurringLimit > 0 && recurringUsed >= recurringLimit;

  return (
    <div className="sync-row" data-testid={`sync-${connection.connection_id}`}>
      <div>
        <label className="toggle" id={labelId}>
          <input
            type="checkbox"
            role="switch"
            checked={state.on}
            disabled={!!state.reason}
            aria-describedby={state.reason ? reasonId : undefined}
            onChange={() => setDialog(state.on ? "disable" : "enable")}
          />
          {connection.name}
        </label>
        {state.reason && (
          <small id={reasonId} className="reason">
            {state.reason}
          </small>
        )}
      </div>
      <div>
        {!sync && <p className="muted">Not synced. Turn the toggle on to send this segment's members to {type.display_name}.</p>}
        {sync && (
          <>
            <p className="frozen">
              {sync.frozen_display_name ? (
                <>
                  Synced as <strong>“{sync.frozen_display_name}”</strong>{" "}
                  <span className="muted">(the name {type.display_name} sees, frozen at first sync; renaming the segment does not change it)</span>
                </>
              ) : (
                <span className="muted">The name is frozen at the first successful sync.</span>
              )}
            </p>
            <dl className="facts">
              <dt>Schedule</dt>
              <dd>
                {!sync.enabled ? "Off" : recurring ? `Recurring, ${every(sync.interval)}` : "One-time (Sync now)"}
                {sync.enabled && recurring && sync.next_run_time && <span className="muted"> — next run {when(sync.next_run_time)}</span>}
              </dd>
              <dt>Identity property</dt>
              <dd>{sync.identity_property}</dd>
              <dt>Last sync</dt>
              <dd>
                {when(sync.last_synced_time)}{" "}
                {sync.last_status && <SyncStatus status={sync.last_status} />}
                {sync.last_error && <span className="status-bad"> — {sync.last_error}</span>}
              </dd>
              {live.data?.sync && (
                <>
                  <dt>Delivered</dt>
                  <dd aria-live="polite">
                    {count(live.data.sync.delivered_count)} identities held by {type.display_name}
                    {state.running && <span className="muted"> (sync running, updating…)</span>}
                  </dd>
                </>
              )}
              {sync.data_expire_time && (
                <>
                  <dt>Data lapses</dt>
                  <dd>{when(sync.data_expire_time)} (seghub re-sends before then)</dd>
                </>
              )}
            </dl>
            {sync.enabled && (
              <div className="actions">
                <GuardedButton
                  op="SegmentSyncService_SyncNow"
                  className="primary"
                  disabled={syncNow.isPending || state.running}
                  onClick={() =>
                    syncNow.mutate({ path: { sync_id: sync.sync_id ?? "" }, body: {} }, { onSuccess: (r) => setAwaiting(r.run?.run_id) })
                  }
                >
                  {state.running ? "Syncing…" : "Sync now"}
                </GuardedButton>
                {!recurring && (
                  <GuardedButton
                    op="SegmentSyncService_UpdateSync"
                    disabled={update.isPending || recurringFull}
                    title={recurringFull ? `Every recurring ${type.display_name} sync of this environment is in use` : undefined}
                    onClick={() => update.mutate({ path: { sync_id: sync.sync_id ?? "" }, body: { schedule: "SYNC_SCHEDULE_RECURRING" } })}
                  >
                    Enable Recurring Sync
                  </GuardedButton>
                )}
                {recurring && (
                  <GuardedButton
                    op="SegmentSyncService_UpdateSync"
                    disabled={update.isPending}
                    onClick={() => update.mutate({ path: { sync_id: sync.sync_id ?? "" }, body: { schedule: "SYNC_SCHEDULE_ONE_TIME" } })}
                  >
                    Stop recurring (keep one-time)
                  </GuardedButton>
                )}
                <button type="button" aria-expanded={showRuns} onClick={() => setShowRuns(!showRuns)}>
                  {showRuns ? "Hide run history" : "Run history"}
                </button>
              </div>
            )}
            <p className="muted">{recurringUsage(recurringUsed, recurringLimit, type)} in this environment (all {type.display_name} connections).</p>
            <ErrorNotice error={syncNow.error ?? update.error} />
            {sync.enabled && <DryRunPanel syncId={sync.sync_id ?? ""} />}
            {(showRuns || !sync.enabled) && sync.sync_id && <RunHistory syncId={sync.sync_id} running={state.running} />}
          </>
        )}
      </div>
      <EnableSyncDialog
        open={dialog === "enable"}
        onClose={() => setDialog(null)}
        segment={segment}
        connection={connection}
        type={type}
        recurringUsed={recurringUsed}
      />
      {sync && <DisableSyncDialog open={dialog === "disable"} onClose={() => setDialog(null)} sync={sync} connection={connection} />}
    </div>
  );
}
