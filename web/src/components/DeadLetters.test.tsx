import { afterEach, describe, expect, it, vi } from "vitest";
import { screen, within } from "@testing-library/react";
import userEvent from "@testing-library/user-event";
import { replayedMessage } from "../api/events";
import { mockFetch, on } from "../test/fetchMock";
import { renderAs } from "../test/render";
import { DeadLetters } from "./DeadLetters";

afterEach(() => vi.unstubAllGlobals());

const conns = [{ connection_id: "conn_amp", name: "Amplitude", type: "amplitude" }];
const letters = [
  { dead_letter_id: "dl_1", connection_id: "conn_amp", reason: "400: invalid api key", attempts: 5, event: { name: "Flow Started", source: "appcues", user_id: "u1" } },
  { dead_letter_id: "dl_2", connection_id: "conn_amp", reason: "400: invalid api key", attempts: 5, event: { name: "Flow Completed", source: "appcues", user_id: "u2" } },
];

describe("replayedMessage", () => {
  it("says how many were replayed, and why none were", () => {
    expect(replayedMessage(1, "one")).toBe("Replayed 1 dead letter; they are back in their sink's queue.");
    expect(replayedMessage(1234, "all")).toBe("Replayed 1,234 dead letters; they are back in their sink's queue.");
    expect(replayedMessage(0, "one")).toMatch(/already replayed/);
    expect(replayedMessage(undefined, "all")).toMatch(/no dead letter is waiting/);
  });
});

describe("DeadLetters", () => {
  it("lists dead letters with their reason and replays one, showing the count replayed", async () => {
    const fetch = mockFetch(
      on("GET", "/v1/dead-letters", () => ({ body: { dead_letters: letters } })),
      on("POST", "/v1/dead-letters:replay", () => ({ body: { replayed: 1 } })),
    );
    renderAs("ROLE_ADMIN", <DeadLetters connections={conns} />);
    expect((await screen.findAllByText("400: invalid api key")).length).toBe(2);
    await userEvent.click(screen.getByRole("button", { name: "Replay Flow Started for u1" }));
    expect(await screen.findByText("Replayed 1 dead letter; they are back in their sink's queue.")).toBeTruthy();
    const body = JSON.parse(String((fetch.mock.calls.find(([u]) => String(u).includes(":replay"))![1] as RequestInit).body));
    expect(body).toEqual({ dead_letter_ids: ["dl_1"] });
  });

  it("replays all of one sink after confirmation, with the count", async () => {
    const fetch = mockFetch(
      on("GET", "/v1/dead-letters", () => ({ body: { dead_letters: letters } })),
      on("POST", "/v1/dead-letters:replay", () => ({ body: { replayed: 2 } })),
    );
    renderAs("ROLE_ADMIN", <DeadLetters connections={conns} />);
    await screen.findAllByText("400: invalid api key");
    await userEvent.selectOptions(screen.getByLabelText("Sink"), "conn_amp");
    await vi.waitFor(() => expect(fetch.mock.calls.some(([u]) => String(u).includes("connection_id=conn_amp"))).toBe(true));
    await userEvent.click(await screen.findByRole("button", { name: "Replay all of Amplitude…" }));
    const dialog = screen.getByRole("dialog", { name: "Replay every dead letter of Amplitude?" });
    await userEvent.click(within(dialog).getByRole("button", { name: "Replay all" }));
    expect(await screen.findByText("Replayed 2 dead letters; they are back in their sink's queue.")).toBeTruthy();
    const body = JSON.parse(String((fetch.mock.calls.find(([u]) => String(u).includes(":replay"))![1] as RequestInit).body));
    expect(body).toEqual({ connection_id: "conn_amp" });
  });

  it("is read-only for a member, with the reason", async () => {
    mockFetch(on("GET", "/v1/dead-letters", () => ({ body: { dead_letters: letters } })));
    renderAs("ROLE_MEMBER", <DeadLetters connections={conns} />);
    await screen.findAllByText("400: invalid api key");
    const buttons = screen.getAllByRole("button", { name: /^Replay/ });
    expect(buttons.length).toBe(3);
    // Beside each button a short "Admins only"; the whole reason is what the button is described by.
    for (const b of buttons) {
      expect(b).toHaveProperty("disabled", true);
      expect(document.getElementById(b.getAttribute("aria-describedby")!)?.textContent).toMatch(/^Admins only: Only admins can change this/);
    }
  });
});
