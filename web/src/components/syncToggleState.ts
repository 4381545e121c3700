import type { Sync } from "../api/schema.gen";
import { isRunning } from "../api/segments";
import type { Access } from "../session/store";

export interface ToggleState {
  on: boolean;
  /** Why the toggle cannot be flipped; "" when it can. */
  reason: string;
  running: boolean;
}

/**
 * What a segment's sync toggle for one connection shows and allows: only
 * public segments sync, and only admins may turn syncs on or off.
 */
export function syncToggleState(sync: Sync | undefined, segmentPublic: boolean, access: Access): ToggleState {
  const on = !!sync?.enabled;
  const running = on && isRunning(sync?.last_status);
  const op = on ? "SegmentSyncService_DisableSync" : "SegmentSyncService_EnableSync";
  let reason = access.reasonFor(op);
  if (!reason && !on && !segmentPublic) {
    reason = "Only public segments sync to tools. Make this segment public to sync it.";
  }
  return { on, reason, running };
}
