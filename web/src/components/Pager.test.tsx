import { describe, expect, it } from "vitest";
import { act, render, renderHook, screen } from "@testing-library/react";
import userEvent from "@testing-library/user-event";
import { Pager, usePageTokens } from "./Pager";

describe("usePageTokens", () => {
  it("walks forward by next_page_token and back through the tokens seen", () => {
    const { result } = renderHook(() => usePageTokens());
    expect(result.current).toMatchObject({ token: "", page: 1 });
    act(() => result.current.next("t2"));
    act(() => result.current.next("t3"));
    expect(result.current).toMatchObject({ token: "t3", page: 3 });
    act(() => result.current.prev());
    expect(result.current).toMatchObject({ token: "t2", page: 2 });
    act(() => result.current.next(""));
    expect(result.current.page).toBe(2);
    act(() => result.current.reset());
    expect(result.current).toMatchObject({ token: "", page: 1 });
    act(() => result.current.prev());
    expect(result.current.page).toBe(1);
  });
});

describe("Pager", () => {
  it("is absent when everything fits on one page", () => {
    const { container } = render(<Pager label="p" page={1} nextToken="" onNext={() => {}} onPrev={() => {}} />);
    expect(container.innerHTML).toBe("");
  });

  it("offers Next only with a token and Previous only after page 1", async () => {
    const seen: string[] = [];
    render(<Pager label="Segment pages" page={1} nextToken="abc" onNext={(t) => seen.push(t)} onPrev={() => {}} />);
    expect(screen.getByRole("button", { name: "Previous" })).toHaveProperty("disabled", true);
    await userEvent.click(screen.getByRole("button", { name: "Next" }));
    expect(seen).toEqual(["abc"]);
  });
});
