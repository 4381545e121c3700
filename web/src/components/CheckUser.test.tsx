import { afterEach, describe, expect, it, vi } from "vitest";
import { screen, within } from "@testing-library/react";
import userEvent from "@testing-library/user-event";
import { mockFetch, on } from "../test/fetchMock";
import { renderAs } from "../test/render";
import { CheckUser } from "./CheckUser";

afterEach(() => vi.unstubAllGlobals());

describe("CheckUser", () => {
  it("shows the user's segments, each experience's verdict with the deciding condition, and the index version", async () => {
    mockFetch(
      on("GET", "/v1/targeting/users/u1/segments", () => ({ body: { segment_ids: ["seg_trial", "seg_private"], index_version: "42" } })),
      on("GET", "/v1/segments/seg_trial", () => ({ body: { segment: { segment_id: "seg_trial", name: "Trial users" } } })),
      on("GET", "/v1/segments/seg_private", () => ({ body: { segment: { segment_id: "seg_private", name: "Internal staff" } } })),
      on("GET", "/v1/experiences", () => ({
        body: {
          experiences: [
            {
              experience_id: "exp_tour",
              name: "Welcome tour",
              type: "EXPERIENCE_TYPE_PRODUCT_TOUR",
              audience: { match: { conditions: [{ operator: "OPERATOR_IN_SEGMENT", segment_id: "seg_trial" }] } },
            },
            { experience_id: "exp_off", name: "Old checklist", type: "EXPERIENCE_TYPE_CHECKLIST", audience: { everyone: true } },
          ],
        },
      })),
      on("GET", "/v1/experiences/exp_tour/users/u1", () => ({
        body: { eligible: true, decided_by: "match.conditions[0]", reason: "user is in segment seg_trial", index_version: "42" },
      })),
      on("GET", "/v1/experiences/exp_off/users/u1", () => ({ body: { eligible: false, decided_by: "disabled", reason: "the experience is disabled", index_version: "42" } })),
    );
    renderAs("ROLE_MEMBER", <CheckUser />, "/targeting/check");
    await userEvent.type(screen.getByLabelText("User id"), "u1");
    await userEvent.click(screen.getByRole("button", { name: "Check" }));
    const segs = await screen.findByRole("list", { name: "Segments of u1" });
    expect(await within(segs).findByText("Trial users")).toBeTruthy();
    // A private segment is named too, not shown as an id.
    expect(await within(segs).findByText("Internal staff")).toBeTruthy();
    expect(screen.getByText("Answered from index version 42.")).toBeTruthy();
    const tour = (await screen.findByText("Welcome tour")).closest("tr")!;
    expect(await within(tour).findByText("Eligible")).toBeTruthy();
    expect(within(tour).getByText("in segment “Trial users”")).toBeTruthy();
    expect(within(tour).getByText("42")).toBeTruthy();
    const off = screen.getByText("Old checklist").closest("tr")!;
    expect(await within(off).findByText("Not eligible")).toBeTruthy();
    expect(within(off).getByText("disabled")).toBeTruthy();
    expect(within(off).getByText("the experience is disabled")).toBeTruthy();
  });
});
