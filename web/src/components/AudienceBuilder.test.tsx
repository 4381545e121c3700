import { afterEach, describe, expect, it, vi } from "vitest";
import { screen, within } from "@testing-library/react";
import userEvent from "@testing-library/user-event";
import { useState } from "react";
import { mockFetch, on } from "../test/fetchMock";
import { renderAs } from "../test/render";
import { AudienceBuilder, isoToLocal } from "./AudienceBuilder";
import { fromAudience, toAudience, type AudienceDraft } from "./audienceDraft";

afterEach(() => vi.unstubAllGlobals());

const segments = [{ segment_id: "seg_trial", name: "Trial users", member_count: "12" }];

function Harness({ onAudience }: { onAudience: (a: unknown) => void }) {
  const [d, setD] = useState<AudienceDraft>(() => fromAudience({ everyone: true }));
  return (
    <AudienceBuilder
      draft={d}
      segments={segments}
      onChange={(n) => {
        setD(n);
        onAudience(toAudience(n));
      }}
    />
  );
}

describe("AudienceBuilder", () => {
  it("nests an OR group under the AND conditions, and removes it again, from the keyboard-usable controls", async () => {
    mockFetch(on("GET", "/v1/user-properties", () => ({ body: {} })));
    const onAudience = vi.fn();
    renderAs("ROLE_MEMBER", <Harness onAudience={onAudience} />);
    await userEvent.selectOptions(screen.getByLabelText("Audience"), "custom");
    await userEvent.click(screen.getByRole("button", { name: "Add condition" }));
    await userEvent.selectOptions(screen.getByLabelText("Segment"), "seg_trial");
    await userEvent.click(screen.getByRole("button", { name: "Add group" }));
    const group = screen.getByRole("group", { name: "Group of conditions (level 2)" });
    await userEvent.selectOptions(within(group).getByLabelText("Condition"), "not_in_segment");
    await userEvent.selectOptions(within(group).getByLabelText("Segment"), "seg_trial");
    expect(onAudience).toHaveBeenLastCalledWith({
      match: {
        combinator: "COMBINATOR_AND",
        conditions: [{ operator: "OPERATOR_IN_SEGMENT", segment_id: "seg_trial" }],
        groups: [{ combinator: "COMBINATOR_OR", conditions: [{ operator: "OPERATOR_NOT_IN_SEGMENT", segment_id: "seg_trial" }] }],
      },
    });
    await userEvent.click(within(group).getByRole("button", { name: "Remove this group" }));
    expect(screen.queryByRole("group", { name: "Group of conditions (level 2)" })).toBeNull();
    await userEvent.click(screen.getByRole("button", { name: "Remove condition 1" }));
    expect(onAudience).toHaveBeenLastCalledWith({ match: { combinator: "COMBINATOR_AND" } });
    await userEvent.selectOptions(screen.getByLabelText("Audience"), "everyone");
    expect(onAudience).toHaveBeenLastCalledWith({ everyone: true });
  });

  it("shows times in local time and keeps them in UTC", () => {
    const iso = "2026-01-31T10:00:00.000Z";
    const local = isoToLocal(iso);
    expect(new Date(local).toISOString()).toBe(iso);
    expect(isoToLocal("")).toBe("");
    expect(isoToLocal("not a time")).toBe("");
  });
});
