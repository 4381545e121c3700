import { useState } from "react";
import { placeFieldErrors } from "../api/fieldErrors";
import type { Connection, DestinationType, Segment, Sync, SyncMode, SyncSchedule } from "../api/schema.gen";
import { useDisableSync, useEnableSync } from "../api/segments";
import { every } from "../format";
import { ConfirmDialog } from "./ConfirmDialog";
import { Dialog } from "./Dialog";
import { ErrorNotice } from "./ErrorNotice";
import { Field } from "./Field";
import { IdentityPropertySelect } from "./IdentityPropertySelect";

/**
 * Turning a segment's toggle on: choose the identity property, then
 * "Enable Recurring Sync" or "Sync now", as the integration documents do.
 */
export function EnableSyncDialog({
  open,
  onClose,
  segment,
  connection,
  type,
  recurringUsed,
}: {
  open: boolean;
  onClose: () => void;
  segment: Segment;
  connection: Connection;
  type: DestinationType;
  recurringUsed: number;
}) {
  const [identity, setIdentity] = useState(connection.settings?.identity_property || type.default_identity_property || "");
  const [mode, setMode] = useState<SyncMode>("SYNC_MODE_MIRROR");
  const enable = useEnableSync();
  const limit = type.recurring_limit ?? 0;
  const full = limit > 0 && recurringUsed >= limit;
  const { byField, unplaced } = placeFieldErrors(enable.error, ["identity_property", "mode", "schedule", "interval"]);

  function go(schedule: SyncSchedule) {
    enable.mutate(
      {
        body: {
          segment_id: segment.segment_id,
          connection_id: connection.connection_id,
          identity_property: identity || undefined,
          schedule,
          mode,
        },
      },
      { onSuccess: onClose },
    );
  }
  return (
    <Dialog title={`Sync “${segment.name}” to ${connection.name}`} open={open} onClose={onClose}>
      <Field
        label={`${type.display_name} user ID property`}
        hint={`The user property whose values equal ${type.display_name}'s user ids. Members without it are counted as unmatched and never sent. If the property you expect is missing, the tool may not have reported it yet.`}
        errors={byField["identity_property"]}
      >
        <IdentityPropertySelect value={identity} onChange={setIdentity} suggested={type.default_identity_property} />
      </Field>
      <Field
        label="What a sync sends"
        hint="Mirror also removes users who left the segment; upsert only adds."
        errors={byField["mode"]}
      >
        <select value={mode} onChange={(e) => setMode(e.target.value as SyncMode)}>
          <option value="SYNC_MODE_MIRROR">Mirror (adds and removals)</option>
          <option value="SYNC_MODE_UPSERT">Upsert (adds only)</option>
        </select>
      </Field>
      <p>
        <strong>
          {recurringUsed} of {limit} recurring {type.display_name} syncs in use
        </strong>{" "}
        in this environment, across all its {type.display_name} connections. A recurring sync updates {every(type.default_interval)}; “Sync now” syncs once and is unlimited.
      </p>
      {full && (
        <p className="reason" id="recurring-full">
          Every recurring {type.display_name} sync of this environment is in use: use “Sync now”, or turn off another segment's recurring sync first.
        </p>
      )}
      <ErrorNotice error={enable.error} extra={unplaced} />
      <div className="dialog-actions">
        <button type="button" onClick={onClose}>
          Cancel
        </button>
        <button type="button" disabled={enable.isPending} onClick={() => go("SYNC_SCHEDULE_ONE_TIME")}>
          Sync now
        </button>
        <button
          type="button"
          className="primary"
          disabled={enable.isPending || full}
          aria-describedby={full ? "recurring-full" : undefined}
          onClick={() => go("SYNC_SCHEDULE_RECURRING")}
        >
          Enable Recurring Sync
        </button>
      </div>
    </Dialog>
  );
}

/** Turning a toggle off, optionally removing what the sync delivered. */
export function DisableSyncDialog({ open, onClose, sync, connection }: { open: boolean; onClose: () => void; sync: Sync; connection: Connection }) {
  const [clear, setClear] = useState(false);
  const disable = useDisableSync();
  return (
    <ConfirmDialog
      title={`Stop syncing to ${connection.name}?`}
      open={open}
      onClose={onClose}
      error={disable.error}
      confirmLabel="Stop syncing"
      pending={disable.isPending}
      onConfirm={() => disable.mutate({ path: { sync_id: sync.sync_id ?? "" }, body: { clear_destination: clear } }, { onSuccess: onClose })}
    >
      <p>The schedule stops. What {connection.name} already holds stays there unless you also remove it.</p>
      <div className="field">
        <label className="toggle">
          <input type="checkbox" checked={clear} onChange={(e) => setClear(e.target.checked)} />
          Also remove every user this sync delivered from {connection.name}
        </label>
      </div>
    </ConfirmDialog>
  );
}
