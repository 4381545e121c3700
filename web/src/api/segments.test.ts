import { describe, expect, it } from "vitest";
import type { Sync } from "./schema.gen";
import { recurringInUse } from "./segments";

describe("recurringInUse", () => {
  const recurring = (id: string, connection: string, type: string, enabled = true): Sync => ({
    sync_id: id,
    connection_id: connection,
    destination_type: type,
    schedule: "SYNC_SCHEDULE_RECURRING",
    enabled,
  });

  it("counts per destination type across its connections, as the server's limit does", () => {
    const syncs: Sync[] = [
      recurring("s1", "appcues_a", "appcues"),
      recurring("s2", "appcues_b", "appcues"),
      recurring("s3", "appcues_b", "appcues", false),
      { ...recurring("s4", "appcues_b", "appcues"), schedule: "SYNC_SCHEDULE_ONE_TIME" },
      recurring("s5", "commandbar", "commandbar"),
    ];
    expect(recurringInUse(syncs, "appcues")).toBe(2);
    expect(recurringInUse(syncs, "commandbar")).toBe(1);
    expect(recurringInUse(syncs, "abtasty")).toBe(0);
  });
});
