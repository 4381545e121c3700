import { afterEach, describe, expect, it, vi } from "vitest";
import { screen } from "@testing-library/react";
import userEvent from "@testing-library/user-event";
import { mockFetch, on } from "../test/fetchMock";
import { renderAs } from "../test/render";
import { ExperienceForm } from "./ExperienceForm";

afterEach(() => vi.unstubAllGlobals());

const targetable = on("GET", "/v1/targeting/segments", () => ({
  body: { segments: [{ segment_id: "seg_trial", name: "Trial users", member_count: "120" }], index_version: "7" },
}));
const properties = on("GET", "/v1/user-properties", () => ({
  body: { properties: [{ name: "seats", type: "PROPERTY_TYPE_NUMBER", user_count: "90" }] },
}));
const sent = (fetch: ReturnType<typeof mockFetch>, method: string) =>
  fetch.mock.calls.filter(([, i]) => (i as RequestInit).method === method).map(([, i]) => JSON.parse(String((i as RequestInit).body)));

describe("ExperienceForm", () => {
  it("builds a product tour's audience the documents' way: Custom → Add condition → Segment", async () => {
    const fetch = mockFetch(
      targetable,
      properties,
      on("POST", "/v1/experiences", (_, init) => ({ body: { experience: { experience_id: "exp_1", ...JSON.parse(String(init.body)) } } })),
    );
    const onSaved = vi.fn();
    renderAs("ROLE_MEMBER", <ExperienceForm type="EXPERIENCE_TYPE_PRODUCT_TOUR" onSaved={onSaved} />);
    await userEvent.type(screen.getByLabelText("Name"), "Welcome tour");
    await userEvent.selectOptions(screen.getByLabelText("Audience"), "custom");
    await userEvent.click(screen.getByRole("button", { name: "Add condition" }));
    expect((screen.getByLabelText("Condition") as HTMLSelectElement).value).toBe("in_segment");
    const segment = screen.getByLabelText("Segment") as HTMLSelectElement;
    // Only public, non-empty segments are offered.
    await screen.findByRole("option", { name: "Trial users — 120 members" });
    expect([...segment.options].map((o) => o.value)).toEqual(["", "seg_trial"]);
    await userEvent.selectOptions(segment, "seg_trial");
    await userEvent.click(screen.getByRole("button", { name: "Create product tour" }));
    await vi.waitFor(() => expect(onSaved).toHaveBeenCalled());
    expect(sent(fetch, "POST")).toEqual([
      {
        name: "Welcome tour",
        type: "EXPERIENCE_TYPE_PRODUCT_TOUR",
        disabled: false,
        audience: { match: { combinator: "COMBINATOR_AND", conditions: [{ operator: "OPERATOR_IN_SEGMENT", segment_id: "seg_trial" }] } },
      },
    ]);
  });

  it("marks an incomplete audience on its fields and sends nothing", async () => {
    const fetch = mockFetch(targetable, properties);
    renderAs("ROLE_MEMBER", <ExperienceForm type="EXPERIENCE_TYPE_CHECKLIST" onSaved={() => {}} />);
    await userEvent.type(screen.getByLabelText("Name"), "Onboarding");
    await userEvent.selectOptions(screen.getByLabelText("Audience"), "custom");
    await userEvent.click(screen.getByRole("button", { name: "Create checklist" }));
    expect(await screen.findByText(/a group needs at least one condition/)).toBeTruthy();
    await userEvent.click(screen.getByRole("button", { name: "Add condition" }));
    await userEvent.selectOptions(screen.getByLabelText("Condition"), "property");
    await userEvent.type(screen.getByLabelText("Property"), "seats");
    // The property's type (number) picked the value type and its comparisons.
    expect((screen.getByLabelText("Value type") as HTMLSelectElement).value).toBe("number");
    await userEvent.selectOptions(screen.getByLabelText("Comparison"), "OPERATOR_GREATER_THAN");
    const value = screen.getByLabelText("Value");
    await vi.waitFor(() => expect(value.getAttribute("aria-invalid")).toBe("true"));
    expect(screen.queryByText(/a group needs at least one condition/)).toBeNull();
    expect(sent(fetch, "POST")).toEqual([]);
    await userEvent.type(value, "5");
    await vi.waitFor(() => expect(value.getAttribute("aria-invalid")).toBeNull());
  });

  it("shows the server's violation on the condition it names", async () => {
    mockFetch(
      targetable,
      properties,
      on("PATCH", "/v1/experiences/exp_1", () => ({
        status: 400,
        body: {
          code: 3,
          message: 'audience.match.conditions[0].segment_id: unknown segment "seg_gone"',
          details: [
            {
              "@type": "type.googleapis.com/google.rpc.BadRequest",
              field_violations: [{ field: "audience.match.conditions[0].segment_id", description: 'unknown segment "seg_gone"' }],
            },
          ],
        },
      })),
    );
    const experience = {
      experience_id: "exp_1",
      name: "Tour",
      type: "EXPERIENCE_TYPE_PRODUCT_TOUR" as const,
      enabled: true,
      audience: { match: { combinator: "COMBINATOR_AND" as const, conditions: [{ operator: "OPERATOR_IN_SEGMENT" as const, segment_id: "seg_gone" }] } },
    };
    renderAs("ROLE_MEMBER", <ExperienceForm experience={experience} type="EXPERIENCE_TYPE_PRODUCT_TOUR" onSaved={() => {}} />);
    // A segment no longer targetable stays visible, marked so.
    expect(screen.getByRole("option", { name: "seg_gone (no longer public, or empty)" })).toBeTruthy();
    await userEvent.click(screen.getByRole("button", { name: "Save changes" }));
    const segment = screen.getByLabelText("Segment");
    await vi.waitFor(() => expect(segment.getAttribute("aria-invalid")).toBe("true"));
    const described = segment.getAttribute("aria-describedby")!.split(" ").map((id) => document.getElementById(id)?.textContent);
    expect(described).toContain('unknown segment "seg_gone"');
  });
});
