import { describe, expect, it } from "vitest";
import type { Sync } from "../api/schema.gen";
import { accessOf } from "../session/store";
import { syncToggleState } from "./syncToggleState";

const admin = accessOf("ROLE_ADMIN");
const member = accessOf("ROLE_MEMBER");
const on: Sync = { sync_id: "sync_1", enabled: true, last_status: "SYNC_RUN_STATUS_SUCCEEDED" };

describe("syncToggleState", () => {
  it.each([
    ["no sync, public, admin: can be turned on", undefined, true, admin, { on: false, reason: "", running: false }],
    ["enabled, admin: can be turned off", on, true, admin, { on: true, reason: "", running: false }],
    ["disabled sync, admin: can be turned on again", { ...on, enabled: false }, true, admin, { on: false, reason: "", running: false }],
    ["running", { ...on, last_status: "SYNC_RUN_STATUS_RUNNING" as const }, true, admin, { on: true, reason: "", running: true }],
    ["queued counts as running", { ...on, last_status: "SYNC_RUN_STATUS_QUEUED" as const }, true, admin, { on: true, reason: "", running: true }],
  ])("%s", (_, sync, isPublic, access, want) => {
    expect(syncToggleState(sync, isPublic, access)).toEqual(want);
  });

  it("a private segment cannot be turned on, and says why", () => {
    const s = syncToggleState(undefined, false, admin);
    expect(s.on).toBe(false);
    expect(s.reason).toMatch(/Only public segments sync/);
  });

  it("a member sees the toggle read-only with the reason, on or off", () => {
    expect(syncToggleState(undefined, true, member).reason).toMatch(/Only admins/);
    expect(syncToggleState(on, true, member)).toMatchObject({ on: true, reason: expect.stringMatching(/Only admins/) });
  });
});
