import { afterEach, describe, expect, it, vi } from "vitest";
import { screen } from "@testing-library/react";
import userEvent from "@testing-library/user-event";
import { mockFetch, on } from "../test/fetchMock";
import { renderAs } from "../test/render";
import { SegmentRename } from "./SegmentRename";

afterEach(() => vi.unstubAllGlobals());

describe("SegmentRename", () => {
  it("puts the server's violation on the name field, in its words", async () => {
    const fetch = mockFetch(
      on("PATCH", "/v1/segments/seg_1", () => ({
        status: 400,
        body: {
          code: 3,
          message: "name: must not be blank",
          details: [{ "@type": "type.googleapis.com/google.rpc.BadRequest", field_violations: [{ field: "name", description: "must not be blank" }] }],
        },
      })),
    );
    renderAs("ROLE_MEMBER", <SegmentRename segment={{ segment_id: "seg_1", name: "Trial users" }} />);
    await userEvent.click(screen.getByRole("button", { name: "Rename…" }));
    const input = screen.getByLabelText("Segment name");
    await userEvent.clear(input);
    await userEvent.type(input, "   ");
    await userEvent.click(screen.getByRole("button", { name: "Save name" }));
    await vi.waitFor(() => expect(input.getAttribute("aria-invalid")).toBe("true"));
    const ids = input.getAttribute("aria-describedby")!.split(" ");
    expect(ids.map((id) => document.getElementById(id)?.textContent)).toContain("must not be blank");
    expect(JSON.parse(String((fetch.mock.calls[0]![1] as RequestInit).body))).toEqual({ name: "   " });
  });
});
