import { describe, expect, it, vi } from "vitest";
import { screen } from "@testing-library/react";
import userEvent from "@testing-library/user-event";
import { renderAs } from "../test/render";
import { GuardedButton } from "./Guarded";

describe("GuardedButton", () => {
  it("is a working button for a role that may call the operation", async () => {
    const onClick = vi.fn();
    renderAs("ROLE_ADMIN", <GuardedButton op="SegmentSyncService_SyncNow" onClick={onClick}>Sync now</GuardedButton>);
    await userEvent.click(screen.getByRole("button", { name: "Sync now" }));
    expect(onClick).toHaveBeenCalledOnce();
  });

  it("is read-only with the reason for a member, never a button that ends in 403", async () => {
    const onClick = vi.fn();
    renderAs("ROLE_MEMBER", <GuardedButton op="SegmentSyncService_SyncNow" onClick={onClick}>Sync now</GuardedButton>);
    const b = screen.getByRole("button", { name: "Sync now" });
    expect(b).toHaveProperty("disabled", true);
    expect(b.getAttribute("aria-describedby")).toBeTruthy();
    expect(document.getElementById(b.getAttribute("aria-describedby")!)?.textContent).toMatch(/Only admins can change this/);
    await userEvent.click(b);
    expect(onClick).not.toHaveBeenCalled();
  });

  it("lets a member use what members may do", () => {
    renderAs("ROLE_MEMBER", <GuardedButton op="SegmentSyncService_DryRun">Dry run</GuardedButton>);
    expect(screen.getByRole("button", { name: "Dry run" })).toHaveProperty("disabled", false);
  });
});
