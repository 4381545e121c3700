import { afterEach, describe, expect, it, vi } from "vitest";
import { screen, within } from "@testing-library/react";
import userEvent from "@testing-library/user-event";
import { mockFetch, on } from "../test/fetchMock";
import { renderAs } from "../test/render";
import { RouteForm, Sinks } from "./EventsPage";

afterEach(() => vi.unstubAllGlobals());

describe("Sinks", () => {
  it("updates backlog and delivered counts while on screen", async () => {
    let delivered = 3;
    mockFetch(
      on("GET", "/v1/event-sinks", () => {
        const body = { sinks: [{ connection_id: "conn_amp", type: "analytics", backlog: String(10 - delivered), delivered: String(delivered), retrying_users: 1, last_error: "429: slow down" }] };
        delivered += 2;
        return { body };
      }),
    );
    renderAs("ROLE_MEMBER", <Sinks name={() => "Amplitude"} pollMs={50} />);
    const row = (await screen.findByText("Amplitude")).closest("tr")!;
    expect(within(row).getByText("429: slow down")).toBeTruthy();
    const cells = () => [...row.querySelectorAll("td.num")].map((td) => td.textContent);
    expect(cells().slice(0, 3)).toEqual(["7", "3", "1"]);
    await vi.waitFor(() => expect(Number(cells()[1])).toBeGreaterThanOrEqual(7), { timeout: 2000 });
  });
});

describe("RouteForm", () => {
  const schemas = [
    { source: "appcues", name: "Flow Started" },
    { source: "appcues", name: "Flow Completed" },
    { source: "commandbar", name: "opened" },
  ];
  const sinks = [{ connection_id: "conn_amp", name: "Amplitude", type: "analytics" }];

  it("sends the chosen sink, sources and events", async () => {
    const fetch = mockFetch(on("POST", "/v1/event-routes", () => ({ body: { route: { route_id: "route_1" } } })));
    renderAs("ROLE_ADMIN", <RouteForm sinks={sinks} schemas={schemas} />);
    await userEvent.selectOptions(screen.getByLabelText("Send events to"), "conn_amp");
    await userEvent.click(screen.getByRole("checkbox", { name: "appcues" }));
    // Only the ticked source's events are offered.
    expect(screen.queryByRole("checkbox", { name: /opened/ })).toBeNull();
    await userEvent.click(screen.getByText(/open to route only some/));
    await userEvent.click(screen.getByRole("checkbox", { name: /Flow Started/ }));
    await userEvent.type(screen.getByLabelText(/Deliver as/), "Tour Began");
    await userEvent.click(screen.getByRole("button", { name: "Add route" }));
    expect(await screen.findByText("Route added.")).toBeTruthy();
    expect(JSON.parse(String((fetch.mock.calls[0]![1] as RequestInit).body))).toEqual({
      connection_id: "conn_amp",
      sources: ["appcues"],
      event_names: ["Flow Started"],
      deliver_as: "Tour Began",
    });
  });

  it("shows the server's violation on the sink field", async () => {
    mockFetch(
      on("POST", "/v1/event-routes", () => ({
        status: 400,
        body: {
          code: 3,
          message: "connection_id: is required",
          details: [{ "@type": "type.googleapis.com/google.rpc.BadRequest", field_violations: [{ field: "connection_id", description: "is required" }] }],
        },
      })),
    );
    renderAs("ROLE_ADMIN", <RouteForm sinks={sinks} schemas={schemas} />);
    await userEvent.click(screen.getByRole("button", { name: "Add route" }));
    const sink = screen.getByLabelText("Send events to");
    await vi.waitFor(() => expect(sink.getAttribute("aria-invalid")).toBe("true"));
    const described = sink.getAttribute("aria-describedby")!.split(" ").map((id) => document.getElementById(id)?.textContent);
    expect(described).toContain("is required");
  });
});
