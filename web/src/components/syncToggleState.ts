import type { Sync } from "../api/schema.gen";
import { isRunning } from "../api/segments";
import type { Access } from "../session/store";

export interface ToggleState {
  on: boolean;
  /** Why the toggle cannot be flipped; "" when it can. */
  reason: string;
  running: boolean;
}

/** A destination that cannot target the segment: no member holds its identity property. */
export interface Untargetable {
  identityProperty: string;
  tool: string;
}

/**
 * What a segment's sync toggle for one connection shows and allows: only
 * public segments sync, only admins may turn syncs on or off, and a tool
 * targets a segment only once a member holds its identity property (turning
 * an enabled sync off stays possible).
 */
export function syncToggleState(sync: Sync | undefined, segmentPublic: boolean, access: Access, untargetable?: Untargetable): ToggleState {
  const on = !!sync?.enabled;
  const running = on && isRunning(sync?.last_status);
  const op = on ? "SegmentSyncService_DisableSync" : "SegmentSyncService_EnableSync";
  let reason = access.reasonFor(op);
  if (!reason && !on && !segmentPublic) {
    reason = "Only public segments sync to tools. Make this segment public to sync it.";
  }
  if (!reason && !on && untargetable) {
    const { identityProperty, tool } = untargetable;
    reason = `No member of this segment has ${identityProperty}, so ${tool} cannot target it; a member gets it when the tool's tag on your page identifies them.`;
  }
  return { on, reason, running };
}
