import { afterEach, describe, expect, it, vi } from "vitest";
import { screen, within } from "@testing-library/react";
import userEvent from "@testing-library/user-event";
import { Route, Routes } from "react-router";
import type { Segment } from "../api/schema.gen";
import { mockFetch, on } from "../test/fetchMock";
import { renderAs } from "../test/render";
import SegmentPage from "./SegmentPage";

afterEach(() => vi.unstubAllGlobals());

const page = (
  <Routes>
    <Route path="/segments/:segmentId" element={<SegmentPage />} />
  </Routes>
);

const rule = {
  all: [{ event: { source: "appcues", name: "Flow Completed", count_operator: "COUNT_OPERATOR_AT_LEAST" as const, times: 1, within_days: 7 } }],
};

const around = [
  on("GET", "/v1/connections", () => ({ body: {} })),
  on("GET", "/v1/destination-types", () => ({ body: {} })),
  on("GET", "/v1/syncs", () => ({ body: {} })),
  on("GET", "/v1/event-schemas", () => ({ body: {} })),
  on("GET", "/v1/user-properties", () => ({ body: {} })),
];

// Generous: the shared CI machine can be slow to type into many controls.
describe("SegmentPage", { timeout: 60_000 }, () => {
  it("shows a computed segment computing… N% until it is live, its rule in words, and no hand-edited membership", async () => {
    const states: Segment[] = [
      { compute_state: "COMPUTE_STATE_COMPUTING", compute_percent: 40, member_count: "3", version: "1" },
      { compute_state: "COMPUTE_STATE_COMPUTING", compute_percent: 85, member_count: "8", version: "2" },
      { compute_state: "COMPUTE_STATE_LIVE", compute_percent: 100, member_count: "9", version: "3" },
    ];
    let reads = 0;
    let members = 0;
    mockFetch(
      ...around,
      on("GET", "/v1/segments/seg_c", () => ({
        body: { segment: { segment_id: "seg_c", name: "Onboarded this week", visibility: "VISIBILITY_PUBLIC", rule, ...states[Math.min(reads++, 2)] } },
      })),
      on("GET", "/v1/segments/seg_c/members", () => {
        members++;
        return { body: { user_ids: reads >= 3 ? ["user-001", "user-002"] : ["user-001"] } };
      }),
    );
    renderAs("ROLE_MEMBER", page, "/segments/seg_c");
    expect(await screen.findByRole("heading", { name: "Onboarded this week" })).toBeTruthy();
    expect(screen.getByText("Computed")).toBeTruthy();
    expect(screen.getByText("Appcues · Flow Completed ≥ 1 time in the last 7 days")).toBeTruthy();
    expect(screen.getByText("computing… 40%", { exact: false }).getAttribute("role")).toBe("status");
    // Read again while computing, until live.
    await screen.findByText("computing… 85%", { exact: false }, { timeout: 30_000 });
    await screen.findByText("live", {}, { timeout: 30_000 });
    expect(screen.queryByText(/computing…/)).toBeNull();
    await vi.waitFor(() => expect(within(screen.getByRole("list", { name: "Members" })).getAllByRole("listitem")).toHaveLength(2));
    expect(members).toBeGreaterThanOrEqual(2);
    // Once live it is not read again.
    const settled = reads;
    await new Promise((r) => setTimeout(r, 1500));
    expect(reads).toBe(settled);
    // No add / remove controls, and the reason.
    expect(screen.queryByRole("button", { name: "Add members" })).toBeNull();
    expect(screen.queryByLabelText("User ids")).toBeNull();
    expect(screen.getByText(/cannot be added, removed or replaced by hand/).getAttribute("role")).toBe("note");
  });

  it("edits a computed segment's rule, prefilled from the saved one", async () => {
    const fetch = mockFetch(
      ...around,
      on("GET", "/v1/segments/seg_c", () => ({
        body: { segment: { segment_id: "seg_c", name: "Onboarded this week", rule, compute_state: "COMPUTE_STATE_LIVE", compute_percent: 100 } },
      })),
      on("GET", "/v1/segments/seg_c/members", () => ({ body: {} })),
      on("PATCH", "/v1/segments/seg_c", () => ({ body: { segment: { segment_id: "seg_c" } } })),
    );
    renderAs("ROLE_MEMBER", page, "/segments/seg_c");
    await userEvent.click(await screen.findByRole("button", { name: "Edit rule…" }));
    expect((screen.getByLabelText("Event") as HTMLInputElement).value).toBe("Flow Completed");
    const days = screen.getByLabelText("Days");
    await userEvent.clear(days);
    await userEvent.type(days, "30");
    await userEvent.click(screen.getByRole("button", { name: "Save rule" }));
    await vi.waitFor(() => expect(screen.queryByRole("button", { name: "Save rule" })).toBeNull());
    const patch = fetch.mock.calls.find(([, init]) => (init as RequestInit).method === "PATCH")!;
    expect(JSON.parse(String((patch[1] as RequestInit).body))).toEqual({
      rule: { all: [{ event: { ...rule.all[0]!.event, within_days: 30 } }] },
    });
  });

  it("offers adding and removing members by id on a list segment", async () => {
    const fetch = mockFetch(
      ...around,
      on("GET", "/v1/segments/seg_l", () => ({ body: { segment: { segment_id: "seg_l", name: "VIPs", member_count: "1" } } })),
      on("GET", "/v1/segments/seg_l/members", () => ({ body: { user_ids: ["user-001"] } })),
      on("POST", "/v1/segments/seg_l/members:add", () => ({ body: { added: "2", member_count: "3" } })),
    );
    renderAs("ROLE_MEMBER", page, "/segments/seg_l");
    expect(await screen.findByText("List")).toBeTruthy();
    expect(screen.queryByText("Computed")).toBeNull();
    // Nothing typed: said, not sent.
    await userEvent.click(screen.getByRole("button", { name: "Add members" }));
    expect(screen.getByText("enter at least one user id")).toBeTruthy();
    await userEvent.type(screen.getByLabelText("User ids"), "user-002, user-003\nuser-002");
    await userEvent.click(screen.getByRole("button", { name: "Add members" }));
    expect(await screen.findByText("Added 2 of 2.")).toBeTruthy();
    const add = fetch.mock.calls.find(([u]) => String(u).endsWith("members:add"))!;
    expect(JSON.parse(String((add[1] as RequestInit).body))).toEqual({ user_ids: ["user-002", "user-003"] });
  });
});
