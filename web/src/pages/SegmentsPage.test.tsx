import { afterEach, describe, expect, it, vi } from "vitest";
import { screen } from "@testing-library/react";
import userEvent from "@testing-library/user-event";
import { mockFetch, on } from "../test/fetchMock";
import { renderAs } from "../test/render";
import SegmentsPage from "./SegmentsPage";

afterEach(() => vi.unstubAllGlobals());

// Generous: the shared CI machine can be slow to type into many controls.
describe("SegmentsPage", { timeout: 60_000 }, () => {
  it("filters the segments a connection can target by its identity property", async () => {
    const asked: (string | null)[] = [];
    mockFetch(
      on("GET", "/v1/connections", () => ({
        body: {
          connections: [
            { connection_id: "conn_ab", name: "AB Tasty prod", type: "abtasty", settings: { identity_property: "ABTastyVisitorId" } },
            { connection_id: "conn_src", name: "Heap", type: "heap", settings: {} },
          ],
        },
      })),
      on("GET", "/v1/destination-types", () => ({
        body: {
          types: [
            { type: "abtasty", display_name: "AB Tasty", segments_out: true, default_identity_property: "ABTastyVisitorId" },
            { type: "heap", display_name: "Heap", segments_in: true },
          ],
        },
      })),
      on("GET", "/v1/segments", (url) => {
        const by = url.searchParams.get("targetable_by");
        asked.push(by);
        return {
          body: {
            segments: by
              ? [{ segment_id: "seg_t", name: "Visitors", member_count: "3" }]
              : [
                  { segment_id: "seg_t", name: "Visitors", member_count: "3" },
                  { segment_id: "seg_n", name: "No visitor id", member_count: "5" },
                ],
          },
        };
      }),
    );
    renderAs("ROLE_MEMBER", <SegmentsPage />);
    expect(await screen.findByText("No visitor id")).toBeTruthy();
    const select = await screen.findByLabelText("Targetable by");
    // Only tools that receive segments are offered.
    expect(screen.queryByRole("option", { name: /Heap/ })).toBeNull();
    await userEvent.selectOptions(select, "conn_ab");
    await vi.waitFor(() => expect(screen.queryByText("No visitor id")).toBeNull());
    expect(screen.getByText("Visitors")).toBeTruthy();
    expect(asked).toContain("ABTastyVisitorId");
  });

  it("marks computed segments, says their rule, and reads the page again while one is computing", async () => {
    let reads = 0;
    mockFetch(
      on("GET", "/v1/connections", () => ({ body: {} })),
      on("GET", "/v1/destination-types", () => ({ body: {} })),
      on("GET", "/v1/segments", () => {
        reads++;
        return {
          body: {
            segments: [
              { segment_id: "seg_l", name: "VIPs", member_count: "3" },
              {
                segment_id: "seg_c",
                name: "Onboarded this week",
                member_count: reads > 1 ? "9" : "2",
                rule: { event: { source: "appcues", name: "Flow Completed", count_operator: "COUNT_OPERATOR_AT_LEAST", times: 1, within_days: 7 } },
                ...(reads > 1 ? { compute_state: "COMPUTE_STATE_LIVE", compute_percent: 100 } : { compute_state: "COMPUTE_STATE_COMPUTING", compute_percent: 10 }),
              },
            ],
          },
        };
      }),
    );
    renderAs("ROLE_MEMBER", <SegmentsPage />);
    const row = (await screen.findByRole("link", { name: "Onboarded this week" })).closest("tr")!;
    expect(row.textContent).toContain("Computed");
    expect(row.textContent).toContain("Appcues · Flow Completed ≥ 1 time in the last 7 days");
    expect(row.textContent).toContain("computing… 10%");
    expect(screen.getByRole("link", { name: "VIPs" }).closest("tr")!.textContent).not.toContain("Computed");
    await vi.waitFor(() => expect(row.textContent).not.toContain("computing…"), { timeout: 30_000 });
    expect(row.textContent).toContain("9");
    expect(screen.getByRole("link", { name: "New segment" }).getAttribute("href")).toBe("/segments/new");
  });
});
