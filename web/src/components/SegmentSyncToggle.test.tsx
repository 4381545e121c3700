import { afterEach, describe, expect, it, vi } from "vitest";
import { screen } from "@testing-library/react";
import userEvent from "@testing-library/user-event";
import type { Connection, DestinationType, Segment, Sync } from "../api/schema.gen";
import { mockFetch, on } from "../test/fetchMock";
import { renderAs } from "../test/render";
import { SegmentSyncToggle } from "./SegmentSyncToggle";

const segment: Segment = { segment_id: "seg_1", name: "Trial users (renamed)", visibility: "VISIBILITY_PUBLIC", member_count: "40" };
const connection: Connection = { connection_id: "conn_a", name: "Appcues", type: "appcues", settings: { identity_property: "appcuesUserID" } };
const appcues: DestinationType = { type: "appcues", display_name: "Appcues", segments_out: true, recurring_limit: 10, default_interval: "3600s" };
const sync: Sync = {
  sync_id: "sync_1",
  segment_id: "seg_1",
  connection_id: "conn_a",
  enabled: true,
  schedule: "SYNC_SCHEDULE_RECURRING",
  interval: "3600s",
  identity_property: "appcuesUserID",
  frozen_display_name: "Trial users",
  last_synced_time: "2026-11-30T04:00:00Z",
  last_status: "SYNC_RUN_STATUS_SUCCEEDED",
};
const runs = on("GET", "/v1/syncs/sync_1/runs", () => ({ body: {} }));

afterEach(() => vi.unstubAllGlobals());

describe("SegmentSyncToggle", () => {
  it("shows the frozen name beside the toggle, schedule and last sync", async () => {
    mockFetch(on("GET", "/v1/syncs/sync_1", () => ({ body: { sync: { ...sync, delivered_count: "38" } } })), runs);
    renderAs("ROLE_ADMIN", <SegmentSyncToggle segment={segment} connection={connection} type={appcues} listed={sync} recurringUsed={7} />);
    expect(screen.getByRole("switch", { name: "Appcues" })).toHaveProperty("checked", true);
    expect(screen.getByText("“Trial users”")).toBeTruthy();
    expect(screen.getByText("Recurring, hourly")).toBeTruthy();
    expect(screen.getByText(/7 of 10 recurring Appcues syncs in use in this environment/)).toBeTruthy();
    expect(await screen.findByText(/38 identities held by Appcues/)).toBeTruthy();
  });

  it("polls a running sync so its delivered count climbs, and stops when it ends", async () => {
    let calls = 0;
    mockFetch(
      on("GET", "/v1/syncs/sync_1", () => {
        calls++;
        const done = calls >= 3;
        return {
          body: { sync: { ...sync, last_status: done ? "SYNC_RUN_STATUS_SUCCEEDED" : "SYNC_RUN_STATUS_RUNNING", delivered_count: String(calls * 1000) } },
        };
      }),
      runs,
    );
    const running = { ...sync, last_status: "SYNC_RUN_STATUS_RUNNING" as const };
    renderAs("ROLE_ADMIN", <SegmentSyncToggle segment={segment} connection={connection} type={appcues} listed={running} recurringUsed={1} />);
    expect(await screen.findByText(/1,000 identities/)).toBeTruthy();
    expect(screen.getByRole("button", { name: "Syncing…" })).toHaveProperty("disabled", true);
    expect(await screen.findByText(/2,000 identities/, {}, { timeout: 3000 })).toBeTruthy();
    expect(await screen.findByText(/3,000 identities/, {}, { timeout: 3000 })).toBeTruthy();
    expect(screen.getByRole("button", { name: "Sync now" })).toHaveProperty("disabled", false);
    await new Promise((r) => setTimeout(r, 1500));
    expect(calls).toBe(3);
  });

  it("after Sync now, follows the queued run to its end even while the sync still shows the last one", async () => {
    let gets = 0;
    let runLists = 0;
    mockFetch(
      on("POST", "/v1/syncs/sync_1:run", () => ({ body: { run: { run_id: "run_2", status: "SYNC_RUN_STATUS_QUEUED" } } })),
      on("GET", "/v1/syncs/sync_1", () => {
        gets++;
        return { body: { sync: { ...sync, delivered_count: String(gets * 10) } } };
      }),
      on("GET", "/v1/syncs/sync_1/runs", () => {
        runLists++;
        return { body: { runs: [{ run_id: "run_2", status: runLists >= 3 ? "SYNC_RUN_STATUS_SUCCEEDED" : "SYNC_RUN_STATUS_RUNNING" }] } };
      }),
      on("GET", "/v1/syncs", () => ({ body: { syncs: [sync] } })),
    );
    renderAs("ROLE_ADMIN", <SegmentSyncToggle segment={segment} connection={connection} type={appcues} listed={sync} recurringUsed={1} />);
    await screen.findByText(/10 identities/);
    await userEvent.click(screen.getByRole("button", { name: "Sync now" }));
    expect(await screen.findByRole("button", { name: "Syncing…" })).toBeTruthy();
    expect(await screen.findByText(/30 identities/, {}, { timeout: 3000 })).toBeTruthy();
    expect(await screen.findByRole("button", { name: "Sync now" }, { timeout: 3000 })).toBeTruthy();
    const settled = gets;
    await new Promise((r) => setTimeout(r, 1500));
    expect(gets).toBeLessThanOrEqual(settled + 1);
  });

  it("a run stopped because the segment is no longer public ends the wait and says why", async () => {
    const why = 'segment "Trial users" is no longer public, so nothing was sent';
    let runLists = 0;
    mockFetch(
      on("POST", "/v1/syncs/sync_1:run", () => ({ body: { run: { run_id: "run_2", status: "SYNC_RUN_STATUS_QUEUED" } } })),
      on("GET", "/v1/syncs/sync_1", () => ({
        body: { sync: { ...sync, ...(runLists >= 2 ? { last_status: "SYNC_RUN_STATUS_SEGMENT_NOT_PUBLIC", last_error: why } : {}) } },
      })),
      on("GET", "/v1/syncs/sync_1/runs", () => {
        runLists++;
        return { body: { runs: [{ run_id: "run_2", status: runLists >= 2 ? "SYNC_RUN_STATUS_SEGMENT_NOT_PUBLIC" : "SYNC_RUN_STATUS_RUNNING" }] } };
      }),
      on("GET", "/v1/syncs", () => ({ body: { syncs: [sync] } })),
    );
    renderAs("ROLE_ADMIN", <SegmentSyncToggle segment={segment} connection={connection} type={appcues} listed={sync} recurringUsed={1} />);
    await userEvent.click(await screen.findByRole("button", { name: "Sync now" }));
    expect(await screen.findByRole("button", { name: "Syncing…" })).toBeTruthy();
    expect(await screen.findByRole("button", { name: "Sync now" }, { timeout: 4000 })).toBeTruthy();
    expect(await screen.findByText(/no longer public/, {}, { timeout: 3000 })).toBeTruthy();
  });

  it("turning it on asks for the identity property, then recurring or Sync now", async () => {
    const fetch = mockFetch(
      on("GET", "/v1/user-properties", () => ({ body: { properties: [{ name: "appcuesUserID", type: "PROPERTY_TYPE_STRING", user_count: "40" }] } })),
      on("POST", "/v1/syncs", () => ({ body: { sync } })),
      on("GET", "/v1/syncs", () => ({ body: { syncs: [sync] } })),
    );
    renderAs("ROLE_ADMIN", <SegmentSyncToggle segment={segment} connection={connection} type={appcues} listed={undefined} recurringUsed={9} />);
    await userEvent.click(screen.getByRole("switch", { name: "Appcues" }));
    expect(screen.getByText("9 of 10 recurring Appcues syncs in use")).toBeTruthy();
    await userEvent.click(screen.getByRole("button", { name: "Enable Recurring Sync" }));
    await vi.waitFor(() => expect(fetch.mock.calls.some(([u, i]) => String(u) === "/v1/syncs" && (i as RequestInit).method === "POST")).toBe(true));
    const post = fetch.mock.calls.find(([u, i]) => String(u) === "/v1/syncs" && (i as RequestInit).method === "POST")!;
    expect(JSON.parse(String((post[1] as RequestInit).body))).toEqual({
      segment_id: "seg_1",
      connection_id: "conn_a",
      identity_property: "appcuesUserID",
      schedule: "SYNC_SCHEDULE_RECURRING",
      mode: "SYNC_MODE_MIRROR",
    });
  });

  it("offers only Sync now when every recurring sync is in use", async () => {
    mockFetch(on("GET", "/v1/user-properties", () => ({ body: {} })));
    renderAs("ROLE_ADMIN", <SegmentSyncToggle segment={segment} connection={connection} type={appcues} listed={undefined} recurringUsed={10} />);
    await userEvent.click(screen.getByRole("switch", { name: "Appcues" }));
    expect(screen.getByRole("button", { name: "Enable Recurring Sync" })).toHaveProperty("disabled", true);
    expect(screen.getByText(/Every recurring Appcues sync of this environment is in use/)).toBeTruthy();
    expect(screen.getByRole("button", { name: "Sync now" })).toHaveProperty("disabled", false);
  });

  it("is read-only for a member: no toggle flip, no Sync now, the reason shown", async () => {
    mockFetch(on("GET", "/v1/syncs/sync_1", () => ({ body: { sync } })), runs);
    renderAs("ROLE_MEMBER", <SegmentSyncToggle segment={segment} connection={connection} type={appcues} listed={sync} recurringUsed={1} />);
    const toggle = screen.getByRole("switch", { name: "Appcues" });
    expect(toggle).toHaveProperty("disabled", true);
    expect(document.getElementById(toggle.getAttribute("aria-describedby")!)?.textContent).toMatch(/Only admins/);
    expect(screen.getByRole("button", { name: "Sync now" })).toHaveProperty("disabled", true);
    expect(screen.getByRole("button", { name: "Dry run" })).toHaveProperty("disabled", false);
  });

  describe("a destination that can target only segments whose members hold its identity property", () => {
    const abtasty: DestinationType = { type: "abtasty", display_name: "AB Tasty", segments_out: true, recurring_limit: 10, default_identity_property: "ABTastyVisitorId" };
    const abConn: Connection = { connection_id: "conn_ab", name: "AB Tasty", type: "abtasty", settings: { identity_property: "ABTastyVisitorId" } };
    const targetable = (segments: Segment[]) =>
      on("GET", "/v1/segments", (url) => {
        expect(url.searchParams.get("targetable_by")).toBe("ABTastyVisitorId");
        expect(url.searchParams.get("name_contains")).toBe(segment.name);
        return { body: { segments } };
      });

    it("disables the toggle with the reason when no member has it (ListSegments.targetable_by)", async () => {
      mockFetch(targetable([{ segment_id: "seg_other", name: "Trial users (renamed) 2" }]));
      renderAs("ROLE_ADMIN", <SegmentSyncToggle segment={segment} connection={abConn} type={abtasty} listed={undefined} recurringUsed={0} />);
      const toggle = screen.getByRole("switch", { name: "AB Tasty" });
      await vi.waitFor(() => expect(toggle).toHaveProperty("disabled", true));
      expect(document.getElementById(toggle.getAttribute("aria-describedby")!)?.textContent).toMatch(
        /No member of this segment has ABTastyVisitorId, so AB Tasty cannot target it/,
      );
    });

    it("leaves the toggle on offer once a member has it", async () => {
      const fetch = mockFetch(targetable([segment]), on("GET", "/v1/user-properties", () => ({ body: {} })));
      renderAs("ROLE_ADMIN", <SegmentSyncToggle segment={segment} connection={abConn} type={abtasty} listed={undefined} recurringUsed={0} />);
      await vi.waitFor(() => expect(fetch.mock.calls.some(([u]) => String(u).startsWith("/v1/segments?"))).toBe(true));
      const toggle = screen.getByRole("switch", { name: "AB Tasty" });
      expect(toggle).toHaveProperty("disabled", false);
      expect(screen.queryByText(/No member of this segment has/)).toBeNull();
    });

    it("lets an enabled sync be turned off without asking", async () => {
      const on_ = { ...sync, sync_id: "sync_ab", connection_id: "conn_ab", identity_property: "ABTastyVisitorId" };
      const fetch = mockFetch(on("GET", "/v1/syncs/sync_ab", () => ({ body: { sync: on_ } })), on("GET", "/v1/syncs/sync_ab/runs", () => ({ body: {} })));
      renderAs("ROLE_ADMIN", <SegmentSyncToggle segment={segment} connection={abConn} type={abtasty} listed={on_} recurringUsed={1} />);
      expect(screen.getByRole("switch", { name: "AB Tasty" })).toHaveProperty("disabled", false);
      expect(fetch.mock.calls.some(([u]) => String(u).startsWith("/v1/segments?"))).toBe(false);
    });
  });
});
