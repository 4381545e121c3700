import { afterEach, describe, expect, it, vi } from "vitest";
import { fireEvent, screen, within } from "@testing-library/react";
import userEvent from "@testing-library/user-event";
import { mockFetch, on } from "../test/fetchMock";
import { renderAs } from "../test/render";
import { SegmentForm } from "./SegmentForm";

afterEach(() => vi.unstubAllGlobals());

const reads = [
  on("GET", "/v1/event-schemas", () => ({
    body: { schemas: [{ source: "appcues", name: "Flow Completed", properties: [{ name: "Flow ID", type: "string" }] }] },
  })),
  on("GET", "/v1/user-properties", () => ({ body: { properties: [{ name: "plan", type: "PROPERTY_TYPE_STRING", user_count: "40" }] } })),
];

const bodyOf = (fetch: ReturnType<typeof mockFetch>, path: string) =>
  fetch.mock.calls
    .filter(([u, init]) => new URL(String(u), "http://console.test").pathname === path && (init as RequestInit).method === "POST")
    .map(([, init]) => JSON.parse(String((init as RequestInit).body)));

/** The message(s) a control's aria-describedby points at with role alert. */
const errorsOn = (el: HTMLElement) =>
  (el.getAttribute("aria-describedby") ?? "")
    .split(" ")
    .map((id) => document.getElementById(id))
    .filter((x) => x?.getAttribute("role") === "alert")
    .map((x) => x!.textContent);

async function startComputed(name = "Onboarded recently") {
  await userEvent.type(screen.getByLabelText("Name"), name);
  await userEvent.click(screen.getByRole("radio", { name: "Computed" }));
}

// Generous: the shared CI machine can be slow to type into many controls.
describe("SegmentForm", { timeout: 60_000 }, () => {
  it("creates a list segment without a rule", async () => {
    const fetch = mockFetch(...reads, on("POST", "/v1/segments", () => ({ body: { segment: { segment_id: "seg_l", name: "VIPs" } } })));
    const onCreated = vi.fn();
    renderAs("ROLE_MEMBER", <SegmentForm onCreated={onCreated} />);
    await userEvent.type(screen.getByLabelText("Name"), "VIPs");
    await userEvent.click(screen.getByRole("button", { name: "Create segment" }));
    await vi.waitFor(() => expect(onCreated).toHaveBeenCalledWith({ segment_id: "seg_l", name: "VIPs" }));
    expect(bodyOf(fetch, "/v1/segments")).toEqual([{ name: "VIPs", visibility: "VISIBILITY_PUBLIC" }]);
  });

  it("builds a nested rule (group, NOT, filters, dates) into the exact CreateSegment request", async () => {
    const fetch = mockFetch(...reads, on("POST", "/v1/segments", () => ({ body: { segment: { segment_id: "seg_c" } } })));
    const onCreated = vi.fn();
    renderAs("ROLE_MEMBER", <SegmentForm onCreated={onCreated} />);
    await startComputed();
    const first = screen.getByRole("group", { name: "Event condition 1" });
    await userEvent.type(within(first).getByLabelText("Event"), "Flow Completed");
    await userEvent.click(within(first).getByRole("button", { name: "Add property filter" }));
    await userEvent.type(within(first).getByLabelText("Event property 1"), "Flow ID");
    await userEvent.type(within(first).getByLabelText("Equals"), "onboarding");

    await userEvent.click(screen.getAllByRole("button", { name: "Add group" })[0]!);
    const group = screen.getByRole("group", { name: "Group (level 2)" });
    expect((within(group).getByLabelText("Users in this group match") as HTMLSelectElement).value).toBe("any");
    const inner = within(group).getByRole("group", { name: "Event condition 1" });
    await userEvent.selectOptions(within(inner).getByLabelText("Source"), "commandbar");
    await userEvent.type(within(inner).getByLabelText("Event"), "Command Executed");
    await userEvent.selectOptions(within(inner).getByLabelText("Count"), "COUNT_OPERATOR_AT_MOST");
    await userEvent.clear(within(inner).getByLabelText("Times"));
    await userEvent.type(within(inner).getByLabelText("Times"), "2");
    await userEvent.selectOptions(within(inner).getByLabelText("Counted over"), "between");
    fireEvent.change(within(inner).getByLabelText("From"), { target: { value: "2026-01-01" } });
    fireEvent.change(within(inner).getByLabelText("To"), { target: { value: "2026-01-31" } });
    await userEvent.click(within(group).getByRole("button", { name: "Add property condition" }));
    const prop = within(group).getByRole("group", { name: "User property condition 2" });
    await userEvent.type(within(prop).getByLabelText("Property"), "plan");
    await userEvent.type(within(prop).getByLabelText("Value"), "free");
    await userEvent.click(within(prop).getByRole("checkbox", { name: /NOT/ }));

    await userEvent.click(screen.getByRole("button", { name: "Create segment" }));
    await vi.waitFor(() => expect(onCreated).toHaveBeenCalled());
    expect(bodyOf(fetch, "/v1/segments")).toEqual([
      {
        name: "Onboarded recently",
        visibility: "VISIBILITY_PUBLIC",
        rule: {
          all: [
            {
              event: {
                source: "appcues",
                name: "Flow Completed",
                where: [{ property: "Flow ID", string_value: "onboarding" }],
                count_operator: "COUNT_OPERATOR_AT_LEAST",
                times: 1,
                within_days: 7,
              },
            },
            {
              any: [
                {
                  event: {
                    source: "commandbar",
                    name: "Command Executed",
                    count_operator: "COUNT_OPERATOR_AT_MOST",
                    times: 2,
                    start_date: "2026-01-01",
                    end_date: "2026-01-31",
                  },
                },
                { not: { property: { property: "plan", operator: "PROPERTY_OPERATOR_EQUALS", value: { string_value: "free" } } } },
              ],
            },
          ],
        },
      },
    ]);
  });

  it("checks the contract's bounds before sending, next to each field", async () => {
    const fetch = mockFetch(...reads);
    renderAs("ROLE_MEMBER", <SegmentForm onCreated={() => {}} />);
    await startComputed();
    const days = screen.getByLabelText("Days");
    await userEvent.clear(days);
    await userEvent.type(days, "400");
    await userEvent.click(screen.getByRole("button", { name: "Create segment" }));
    expect(errorsOn(screen.getByLabelText("Event"))).toEqual(["enter the event's name, e.g. Flow Completed"]);
    expect(errorsOn(days)).toEqual(["enter a number of days from 1 to 365"]);
    expect(screen.getByText("Fix the fields marked above, then create again.")).toBeTruthy();
    // Fixed fields clear their marks as they change.
    await userEvent.type(screen.getByLabelText("Event"), "Flow Completed");
    await userEvent.clear(days);
    await userEvent.type(days, "30");
    expect(errorsOn(days)).toEqual([]);
    expect(bodyOf(fetch, "/v1/segments")).toEqual([]);
  });

  it("says an empty nested group once, on the group", async () => {
    const fetch = mockFetch(...reads);
    renderAs("ROLE_MEMBER", <SegmentForm onCreated={() => {}} />);
    await startComputed();
    await userEvent.type(screen.getByLabelText("Event"), "Flow Completed");
    await userEvent.click(screen.getAllByRole("button", { name: "Add group" })[0]!);
    const group = screen.getByRole("group", { name: "Group (level 2)" });
    await userEvent.click(within(group).getByRole("button", { name: "Remove condition 1" }));
    await userEvent.click(screen.getByRole("button", { name: "Create segment" }));
    expect(within(group).getAllByText("an empty group: add a condition or remove the group")).toHaveLength(1);
    await userEvent.click(within(group).getByRole("checkbox", { name: /NOT/ }));
    expect(within(group).getAllByText("an empty group: add a condition or remove the group")).toHaveLength(1);
    expect(bodyOf(fetch, "/v1/segments")).toEqual([]);
  });

  it("places a server violation on a whole condition next to that condition", async () => {
    mockFetch(
      ...reads,
      on("POST", "/v1/segments", () => ({
        status: 400,
        body: {
          code: 3,
          message: "rule.all[0].not.event: set count_operator or seen, not both",
          details: [
            {
              "@type": "type.googleapis.com/google.rpc.BadRequest",
              field_violations: [{ field: "rule.all[0].not.event", description: "set count_operator or seen, not both" }],
            },
          ],
        },
      })),
    );
    renderAs("ROLE_MEMBER", <SegmentForm onCreated={() => {}} />);
    await startComputed();
    const first = screen.getByRole("group", { name: "Event condition 1" });
    await userEvent.type(within(first).getByLabelText("Event"), "Flow Completed");
    await userEvent.click(within(first).getByRole("checkbox", { name: /NOT/ }));
    await userEvent.click(screen.getByRole("button", { name: "Create segment" }));
    expect(await within(first).findByText("set count_operator or seen, not both")).toBeTruthy();
    expect(within(first).getAllByText("set count_operator or seen, not both")).toHaveLength(1);
  });

  it("shows the server's InvalidArgument on the field it names", async () => {
    mockFetch(
      ...reads,
      on("POST", "/v1/segments", () => ({
        status: 400,
        body: {
          code: 3,
          message: "rule.all[0].event.within_days: set within_days or start_date and end_date, not both",
          details: [
            {
              "@type": "type.googleapis.com/google.rpc.BadRequest",
              field_violations: [{ field: "rule.all[0].event.within_days", description: "set within_days or start_date and end_date, not both" }],
            },
          ],
        },
      })),
    );
    renderAs("ROLE_MEMBER", <SegmentForm onCreated={() => {}} />);
    await startComputed();
    await userEvent.type(screen.getByLabelText("Event"), "Flow Completed");
    await userEvent.click(screen.getByRole("button", { name: "Create segment" }));
    await vi.waitFor(() => expect(errorsOn(screen.getByLabelText("Days"))).toEqual(["set within_days or start_date and end_date, not both"]));
    expect(screen.getByText(/rule\.all\[0\]\.event\.within_days: set within_days/)).toBeTruthy();
  });

  it("previews the member count and a sample without saving, and says when the rule changed since", async () => {
    const fetch = mockFetch(
      ...reads,
      on("POST", "/v1/segments:previewRule", () => ({ body: { member_count: "42", sample_user_ids: ["user-001", "user-007"] } })),
    );
    renderAs("ROLE_MEMBER", <SegmentForm onCreated={() => {}} />);
    await startComputed();
    // An invalid rule is not sent.
    await userEvent.click(screen.getByRole("button", { name: "Preview" }));
    expect(errorsOn(screen.getByLabelText("Event"))).toEqual(["enter the event's name, e.g. Flow Completed"]);
    expect(bodyOf(fetch, "/v1/segments:previewRule")).toEqual([]);
    await userEvent.type(screen.getByLabelText("Event"), "Flow Completed");
    await userEvent.click(screen.getByRole("button", { name: "Preview" }));
    const result = await screen.findByRole("status", { name: "Preview" });
    expect(result.textContent).toContain("42 users match this rule now.");
    expect(within(result).getAllByRole("listitem").map((li) => li.textContent)).toEqual(["user-001", "user-007"]);
    expect(result.textContent).toContain("The first 2:");
    expect(bodyOf(fetch, "/v1/segments:previewRule")).toEqual([
      {
        rule: { all: [{ event: { source: "appcues", name: "Flow Completed", count_operator: "COUNT_OPERATOR_AT_LEAST", times: 1, within_days: 7 } }] },
        sample_size: 10,
      },
    ]);
    expect(bodyOf(fetch, "/v1/segments")).toEqual([]);
    await userEvent.type(screen.getByLabelText("Days"), "0");
    expect(result.textContent).toContain("The rule changed since: preview again.");
  });
});
