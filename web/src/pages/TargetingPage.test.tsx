import { afterEach, describe, expect, it, vi } from "vitest";
import { screen } from "@testing-library/react";
import userEvent from "@testing-library/user-event";
import { Route, Routes } from "react-router";
import { mockFetch, on } from "../test/fetchMock";
import { renderAs } from "../test/render";
import TargetingPage from "./TargetingPage";

afterEach(() => vi.unstubAllGlobals());

const page = (
  <Routes>
    <Route path="/targeting/*" element={<TargetingPage />} />
  </Routes>
);

describe("TargetingPage", () => {
  it("lists one type's experiences with their audience and links each under its tab", async () => {
    const fetch = mockFetch(
      on("GET", "/v1/experiences", () => ({
        body: {
          experiences: [
            { experience_id: "exp_1", name: "Welcome tour", type: "EXPERIENCE_TYPE_PRODUCT_TOUR", enabled: true, audience: { everyone: true } },
            {
              experience_id: "exp_2",
              name: "Trial tour",
              type: "EXPERIENCE_TYPE_PRODUCT_TOUR",
              enabled: false,
              audience: { match: { combinator: "COMBINATOR_OR", conditions: [{}, {}], groups: [{ conditions: [{}] }] } },
            },
          ],
        },
      })),
    );
    renderAs("ROLE_MEMBER", page, "/targeting/tours");
    expect((await screen.findByRole("link", { name: "Welcome tour" })).getAttribute("href")).toBe("/targeting/tours/exp_1");
    expect(screen.getByText("Everyone")).toBeTruthy();
    expect(screen.getByText("Custom: 3 conditions (any)")).toBeTruthy();
    expect(String(fetch.mock.calls[0]![0])).toContain("type=EXPERIENCE_TYPE_PRODUCT_TOUR");
  });

  it("says what to do when a type has none, and the link opens the new form", async () => {
    mockFetch(
      on("GET", "/v1/experiences", () => ({ body: {} })),
      on("GET", "/v1/targeting/segments", () => ({ body: {} })),
      on("GET", "/v1/user-properties", () => ({ body: {} })),
    );
    renderAs("ROLE_MEMBER", page, "/targeting/checklists");
    expect(await screen.findByText("No checklists yet.")).toBeTruthy();
    await userEvent.click(screen.getByRole("link", { name: "Create a checklist" }));
    expect(await screen.findByRole("heading", { name: "New checklist" })).toBeTruthy();
    expect(screen.getByRole("button", { name: "Create checklist" })).toBeTruthy();
  });
});
